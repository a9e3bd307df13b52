"""Shared helpers and the session fixtures every later issue builds on."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.dataset import ImageDataset
from gan.util import atomic_path, atomic_write_text, derive_seed, ensure_venv_bin_on_path
from tests._settings import (
    CURATED_PEOPLE,
    NONCURATED_PEOPLE,
    NONCURATED_PER_PERSON,
    SYNTH_RES,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-way")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.txt"], "temporary file left behind"


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_console_scripts_find_the_venv_ninja_without_activation(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    ensure_venv_bin_on_path()
    first = os.environ["PATH"].split(os.pathsep)[0]
    assert first == str(Path(sys.prefix) / "bin")
    ensure_venv_bin_on_path()  # idempotent
    assert os.environ["PATH"].split(os.pathsep).count(first) == 1


def test_mtf_gan_entry_point_runs_with_a_bare_path(tmp_path):
    exe = Path(sys.prefix) / "bin" / "mtf-gan"
    if not exe.exists():
        pytest.skip("package not installed as console scripts in this interpreter's prefix")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("synth", "prepare", "doctor"):
        assert command in out.stdout


def test_session_fixtures_hold_both_layouts_and_a_labelled_archive(
        synthetic_noncurated, synthetic_curated, prepared_archive):
    people = [p for p in synthetic_noncurated.iterdir() if p.is_dir()]
    assert len(people) == NONCURATED_PEOPLE
    assert all(len(list(p.glob("*.jpg"))) == NONCURATED_PER_PERSON for p in people)
    for task in ("face_recognition", "race", "gender", "age"):
        for split in ("train", "val", "test"):
            assert any((synthetic_curated / task / split).iterdir())
    assert len(list((synthetic_curated / "face_recognition" / "test").iterdir())) == CURATED_PEOPLE
    ds = ImageDataset(prepared_archive, use_labels=True)
    assert len(ds) == NONCURATED_PEOPLE * NONCURATED_PER_PERSON
    assert ds.resolution == SYNTH_RES and ds.class_names == ["Female", "Male"]
    img, label = ds[0]
    assert tuple(img.shape) == (3, SYNTH_RES, SYNTH_RES) and label.sum() == 1


# --------------------------------------------------------------------- derive_seed
# The formulas each stream used before there was one seed mixer, written out as they were.

M32, M48, M63, M64 = (1 << 32) - 1, (1 << 48) - 1, (1 << 63) - 1, (1 << 64) - 1
SEEDS = [0, 1, 2, 3, 7, 1234, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 5, 2**48 - 1, 2**48 + 3,
         2**63 - 1, 2**64 - 1, 2**64 + 11, 12345678901234567890123]


def _old_stable_seed(*parts):  # synthetic identities
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _old_stream_seed(seed, cur_nimg, phase, stream, rank=None):  # gan.loss.StepRandom
    key = f"{seed}/{cur_nimg}/{phase}/{stream}" + ("" if rank is None else f"/{rank}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _same_generator(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state and a.integers(2**63, size=4).tolist() == \
        b.integers(2**63, size=4).tolist()


@pytest.mark.parametrize("seed", SEEDS)
def test_derive_seed_reproduces_the_synthetic_people_and_photo_streams(seed):
    people = np.random.default_rng(np.random.SeedSequence([seed & M64, 0x9E0F1E]))
    assert _same_generator(people, np.random.default_rng(derive_seed(seed & M64, 0x9E0F1E)))
    photo = np.random.default_rng(np.random.SeedSequence([seed & M48, 0x5EED]))
    assert _same_generator(photo, np.random.default_rng(derive_seed(seed & M48, 0x5EED)))
    for identity in (0, 1, 977, 2**31 - 2):
        for index in (0, 1, 3, 999, 2**32 + 1):
            old = int(np.random.SeedSequence([seed & M32, identity, index]).generate_state(1)[0])
            assert derive_seed(seed & M32, identity, index, bits=32) == old


@pytest.mark.parametrize("fields", [
    ("Mei Chen", "Asian_Chinese_Korean", "Female", "Young", 0),
    ("Shaquille O_Neal", "Black", "Male", "Old", 2**31 - 2),
    ("Ann", "White", "Female", "Old", 17),
    ("Zoë Ñandú", "Asian_Indian", "Male", "Young", 5),
])
def test_derive_seed_reproduces_the_hashed_identity_seed(fields):
    joined = "|".join(str(f) for f in fields)
    assert derive_seed(joined) == _old_stable_seed(*fields)
    old = np.random.default_rng(_old_stable_seed(*fields))
    assert _same_generator(old, np.random.default_rng(derive_seed(joined)))


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31, 2**40 + 1])
def test_derive_seed_reproduces_the_training_step_streams(seed):
    for cur_nimg in (0, 32, 12_345_678):
        for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
            for stream in ("z", "c", "aug_real", "noise.b8.conv0", "mix"):
                for rank in (None, 0, 3):
                    key = f"{seed}/{cur_nimg}/{phase}/{stream}" + ("" if rank is None else f"/{rank}")
                    new = derive_seed(key) & ((1 << 63) - 1)
                    assert new == _old_stream_seed(seed, cur_nimg, phase, stream, rank)
    g_old = torch.Generator().manual_seed(_old_stream_seed(seed, 64, "Dmain", "z"))
    g_new = torch.Generator().manual_seed(derive_seed(f"{seed}/64/Dmain/z") & ((1 << 63) - 1))
    assert torch.equal(torch.randn(8, generator=g_old), torch.randn(8, generator=g_new))


@pytest.mark.parametrize("seed", [s for s in SEEDS if s < 2**64])
def test_derive_seed_reproduces_the_validation_carve(seed):
    for y in range(12):
        old = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA4E, y]))
        assert _same_generator(old, np.random.default_rng(derive_seed(int(seed), 0xCA4E, y)))


def test_derive_seed_matches_seed_sequence_exactly_where_its_docstring_says():
    """At most four words, or a non-zero last word: the same generator. Five words or more
    ending in a zero word: SeedSequence mixes that word in, and no int carries it."""
    for keys in ([2**64, 0xCA4E, 0], [2**64 + 5, 0xCA4E, 0], [1, 2, 3, 4, 0]):
        assert not _same_generator(np.random.default_rng(np.random.SeedSequence(keys)),
                                   np.random.default_rng(derive_seed(*keys)))
        # ... while the hashed form keeps every word and still matches.
        assert derive_seed(*keys, bits=64) == int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0])
    for keys in ([2**64, 0xCA4E, 1], [1, 2, 3, 4, 5], [0, 0, 0, 0], [3, 0, 0], [0], [2**96 + 1, 7]):
        assert _same_generator(np.random.default_rng(np.random.SeedSequence(keys)),
                               np.random.default_rng(derive_seed(*keys)))


# O'Neill's seed_seq mixing as NumPy's SeedSequence documents it (numpy/random/bit_generator.pyx),
# written out so the golden values below do not come from the code under test.
def _seed_seq_words(entropy: list[int], n_words: int) -> list[int]:
    m = M32
    hash_const = [0x43B0D7E5]

    def hashmix(value):
        value = (value ^ hash_const[0]) & m
        hash_const[0] = (hash_const[0] * 0x931E8875) & m
        value = (value * hash_const[0]) & m
        return value ^ (value >> 16)

    def mix(x, y):
        result = (0xCA01F9DD * x - 0x4973F715 * y) & m
        return result ^ (result >> 16)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(4)]
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
    for i_src in range(4, len(entropy)):
        for i_dst in range(4):
            pool[i_dst] = mix(pool[i_dst], hashmix(entropy[i_src]))
    out, hash_const_b = [], 0x8B51F9DD
    for i in range(n_words):
        value = (pool[i % 4] ^ hash_const_b) & m
        hash_const_b = (hash_const_b * 0x58F38DED) & m
        value = (value * hash_const_b) & m
        out.append(value ^ (value >> 16))
    return out


def test_derive_seed_golden_values_follow_its_documented_rule():
    # Int keys: base-2**32 digits, least significant first.
    assert derive_seed(0) == 0 and derive_seed(5) == 5 and derive_seed(2**70 + 3) == 2**70 + 3
    assert derive_seed(1, 2, 3) == 1 + (2 << 32) + (3 << 64) == 0x3_00000002_00000001
    assert derive_seed(2**40, 7) == 2**40 + (7 << 64)  # 2**40 takes two words
    assert derive_seed(0x1234, 0x5EED) == 0x5EED_00001234
    # A str key: the first 8 bytes, little-endian, of its SHA-256. SHA-256("abc") is the
    # FIPS 180-2 test vector ba7816bf 8f01cfea 414140de ...
    assert derive_seed("abc") == 0xEACF018F_BF1678BA
    assert derive_seed("abc", 1) == 0xEACF018F_BF1678BA + (1 << 64)
    assert derive_seed("") == int.from_bytes(bytes.fromhex("e3b0c44298fc1c14"), "little")
    # bits=n: the first words SeedSequence draws from those words, cut to n bits.
    for keys, words in ([(0,), [0]], [(1, 2, 3), [1, 2, 3]], [(2**40, 7), [0, 2**8, 7]],
                        [(5, 0x9E0F1E, 0, 0, 9), [5, 0x9E0F1E, 0, 0, 9]], [("abc",), [0xBF1678BA, 0xEACF018F]]):
        lo, hi = _seed_seq_words(words, 2)
        assert derive_seed(*keys, bits=64) == lo + (hi << 32)
        assert derive_seed(*keys, bits=32) == lo
        assert derive_seed(*keys, bits=63) == (lo + (hi << 32)) & M63
        assert derive_seed(*keys, bits=7) == lo & 0x7F
        assert int(np.random.SeedSequence([w for w in words]).generate_state(1)[0]) == lo


def test_derive_seed_differs_across_keys_and_is_a_pure_function():
    seeds = {derive_seed(a, b) for a in range(40) for b in range(1, 40)}
    assert len(seeds) == 40 * 39
    assert derive_seed(1, 2) != derive_seed(2, 1)
    assert derive_seed(2**32) == derive_seed(0, 1)  # words are not marked per key (documented)
    assert len({derive_seed(f"0/{n}/Gmain/z") for n in range(0, 64_000, 32)}) == 2000
    # Hashed seeds of (seed, epoch) differ in their low 32 bits, which is all torch's CPU
    # generator keeps; the unhashed int would repeat the seed's own low word.
    low = {derive_seed(3, epoch, bits=64) & M32 for epoch in range(2000)}
    assert len(low) == 2000 and {derive_seed(3, epoch) & M32 for epoch in range(2000)} == {3}
    assert derive_seed(3, 0x5EED) == derive_seed(3, 0x5EED) == derive_seed(np.int64(3), np.uint32(0x5EED))


@pytest.mark.parametrize("bad, error", [
    ((), TypeError), ((-1,), ValueError), ((1, -2**40), ValueError), ((1.0,), TypeError),
    ((True,), TypeError), ((None,), TypeError), ((b"abc",), TypeError),
])
def test_derive_seed_refuses_keys_it_cannot_mix(bad, error):
    with pytest.raises(error):
        derive_seed(*bad)


@pytest.mark.parametrize("bits", [0, 65, -1, 2.0, True])
def test_derive_seed_refuses_bits_out_of_range(bits):
    with pytest.raises(ValueError):
        derive_seed(1, bits=bits)
