"""Shared helpers and the session fixtures every later issue builds on."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gan.dataset import ImageDataset
from gan.util import atomic_path, atomic_write_text, ensure_venv_bin_on_path
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
