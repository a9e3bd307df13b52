"""`mtf-gan generate`: per-seed images, grids, interpolations, classes, truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan.cli import main
from gan.generate import fake_labels, parse_seeds, real_labels
from gan.util import UserError


@pytest.fixture(scope="module")
def ckpt(demo_run) -> Path:
    return demo_run["checkpoint"]


def _gen(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["generate", *args])
    return res.exit_code, res.output


def _arr(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError, match="runs backwards"):
        parse_seeds("5-2")
    with pytest.raises(UserError, match="not a seed or range"):
        parse_seeds("a")


def test_seeds_give_reproducible_distinct_images(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-2", "--class", "male", "--outdir", str(tmp_path / "a"))
    assert code == 0, out
    code, out = _gen("--network", str(ckpt), "--seeds", "2", "--class", "1", "--outdir", str(tmp_path / "b"))
    assert code == 0, out
    imgs = [_arr(tmp_path / "a" / f"seed{s:04d}.png") for s in range(3)]
    assert imgs[0].shape == (32, 32, 3)
    assert not np.array_equal(imgs[0], imgs[1])
    assert np.array_equal(imgs[2], _arr(tmp_path / "b" / "seed0002.png"))  # same seed, class by name or index


def test_class_changes_the_image_and_unknown_class_lists_the_choices(ckpt, tmp_path):
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "Female", "--outdir", str(tmp_path / "f"))[0] == 0
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "Male", "--outdir", str(tmp_path / "m"))[0] == 0
    assert not np.array_equal(_arr(tmp_path / "f" / "seed0000.png"), _arr(tmp_path / "m" / "seed0000.png"))
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--class", "Other", "--outdir", str(tmp_path / "x"))
    assert code == 1 and "0=Female, 1=Male" in out
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--outdir", str(tmp_path / "y"))
    assert code == 1 and "conditional: pass --class" in out


def test_truncation_zero_gives_the_average_face_for_every_seed(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--trunc", "0", "--outdir", str(tmp_path))
    assert code == 0, out
    assert np.array_equal(_arr(tmp_path / "seed0000.png"), _arr(tmp_path / "seed0001.png"))


def test_random_noise_is_reproducible_and_differs_from_const(ckpt, tmp_path):
    for name, noise in (("r1", "random"), ("r2", "random"), ("c", "const")):
        code, out = _gen("--network", str(ckpt), "--seeds", "3", "--class", "0", "--noise", noise,
                         "--outdir", str(tmp_path / name))
        assert code == 0, out
    r1, r2, c = (_arr(tmp_path / n / "seed0003.png") for n in ("r1", "r2", "c"))
    assert np.array_equal(r1, r2) and not np.array_equal(r1, c)


def test_grid_and_interpolation_files(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-4", "--class", "0", "--grid", "--interpolate", "5",
                     "--outdir", str(tmp_path))
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png", "interp-0000-0001.png", "interp-0001-0002.png", "interp-0002-0003.png", "interp-0003-0004.png"]
    assert _arr(tmp_path / "grid.png").shape == (2 * 32, 3 * 32, 3)  # 5 seeds in a 3 x 2 grid
    strip = _arr(tmp_path / "interp-0000-0001.png")
    assert strip.shape == (32, 5 * 32, 3)
    # The ends of the strip are the two seeds' images (w interpolation from t = 0 to 1).
    code, _ = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--outdir", str(tmp_path / "s"))
    # (up to rounding: the strip is one batch, the seeds one image each)
    for part, seed in ((strip[:, :32], 0), (strip[:, -32:], 1)):
        diff = np.abs(part.astype(int) - _arr(tmp_path / "s" / f"seed{seed:04d}.png").astype(int))
        assert diff.max() <= 1, diff.max()
    assert not np.array_equal(strip[:, 64:96], strip[:, :32])  # the middle is neither end


def test_existing_files_are_never_overwritten(ckpt, tmp_path):
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "0", "--outdir", str(tmp_path))[0] == 0
    before = (tmp_path / "seed0000.png").read_bytes()
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--class", "1", "--outdir", str(tmp_path))
    assert code == 1 and "seed0000.png exists" in out
    assert (tmp_path / "seed0000.png").read_bytes() == before


def test_fake_labels_follow_the_archive_label_mix_reproducibly(prepared_archive, tmp_path):
    labels = real_labels(prepared_archive)  # [96, 2] one-hot gender
    assert labels.shape == (96, 2) and bool((labels.sum(1) == 1).all())
    drawn = fake_labels(labels, 4000)
    assert torch.equal(drawn, fake_labels(labels, 4000)) and not torch.equal(drawn, fake_labels(labels, 4000, seed=1))
    assert drawn.mean(0).tolist() == pytest.approx(labels.mean(0).tolist(), abs=0.03)
    assert fake_labels(labels, 24).shape == (24, 2)
    (tmp_path / "a.png").write_bytes(b"")  # a plain folder has no labels
    assert real_labels(tmp_path) is None
