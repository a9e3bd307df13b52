"""``gan.prepare.prepare`` and ``mtf-gan prepare``: folder/zip -> training archive.

Test images are made here by hand (smooth random patterns, so that different images have
far-apart perceptual hashes) because the bad inputs need exact control over bytes, modes
and sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gan.prepare as prepare_module
from gan.cli import main
from gan.prepare import SKIP_REASONS, archive_name, prepare
from gan.util import UserError

RES = 32


def smooth(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    """A smooth random ``uint8 [h, w, 3]`` image: a 5x5 random grid upsampled bicubically."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def save(path: Path, img: Image.Image | np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path, format=fmt, **kw)
    return path


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(members["dataset.json"]), members


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# Expected fate of every image file in the salted tree (relative path -> "ok" | "exact" |
# "near" | how the detail of an undecodable file starts).
SALTED = {
    "A/a0.png": "ok",
    "A/a1 wide.JPG": "ok",  # 80x64, center-cropped
    "A/é ü 名前.png": "ok",  # unicode and spaces
    "A/a3-copy.bmp": "exact",  # same pixels as a0, other format
    "A/a4-near.png": "near",  # a0 plus faint noise: kept, reported as near duplicate
    "A/sub/deep.jpeg": "ok",  # recursive
    "B/b0-small.png": "ok",  # 16x16: upscaled
    "B/b1-grey.png": "ok",
    "B/b2-16bit.png": "ok",
    "B/b3-alpha.png": "ok",
    "B/b4-cmyk.jpg": "ok",
    "B/b5-palette.webp": "ok",
    "B/corrupt.jpg": "not an image",  # text with an image extension
    "B/truncated.png": "cannot decode",
    "B/empty.jpg": "empty file",
    "top.png": "ok",  # directly in SRC (no class folder)
}
# The salted tree's other files: never read, listed with their reason.
SALTED_OTHERS = {"B/notes.txt": "not-image", "B/.hidden.jpg": "system-file"}


@pytest.fixture(scope="module")
def salted(tmp_path_factory) -> Path:
    """A tree with good images of every mode and every kind of bad file."""
    root = tmp_path_factory.mktemp("salted") / "src"
    a0 = smooth(0)
    save(root / "A/a0.png", a0)
    save(root / "A/a1 wide.JPG", smooth(1, 64, 80), "JPEG", quality=95)
    save(root / "A/é ü 名前.png", smooth(2))
    save(root / "A/a3-copy.bmp", a0, "BMP")
    noise = np.random.default_rng(9).integers(-2, 3, a0.shape)
    save(root / "A/a4-near.png", np.clip(a0 + noise, 0, 255).astype(np.uint8))
    save(root / "A/sub/deep.jpeg", smooth(3), "JPEG", quality=95)
    save(root / "B/b0-small.png", smooth(4, 16, 16))
    save(root / "B/b1-grey.png", Image.fromarray(smooth(5)).convert("L"))
    save(root / "B/b2-16bit.png", Image.fromarray(smooth(6)[:, :, 0].astype(np.uint16) * 257))
    rgba = np.dstack([smooth(7), np.full((64, 64), 200, np.uint8)])
    save(root / "B/b3-alpha.png", rgba)
    save(root / "B/b4-cmyk.jpg", Image.fromarray(smooth(8)).convert("CMYK"), "JPEG", quality=95)
    save(root / "B/b5-palette.webp", Image.fromarray(smooth(10)).convert("P"), "WEBP", lossless=True)
    (root / "B/corrupt.jpg").write_text("this is not a JPEG\n")
    good = png_bytes(smooth(11))
    (root / "B/truncated.png").write_bytes(good[: len(good) // 2])
    (root / "B/empty.jpg").write_bytes(b"")
    (root / "B/notes.txt").write_text("not an image extension: ignored")
    (root / "B/.hidden.jpg").write_text("hidden files are ignored")
    save(root / "top.png", smooth(12))
    return root


@pytest.fixture(scope="module")
def salted_archive(salted, tmp_path_factory) -> tuple[Path, object]:
    dest = tmp_path_factory.mktemp("out") / "salted.zip"
    summary = prepare(salted, dest, resolution=RES, labels="folder", progress=False)
    return dest, summary


def test_prepare_salted_tree_writes_expected_images_labels_and_reports(salted, salted_archive):
    dest, s = salted_archive
    meta, members = read_archive(dest)
    # With --labels folder, top.png (directly in SRC) has no class and is skipped.
    ok = sorted(k for k, v in SALTED.items() if v in ("ok", "near") and k != "top.png")
    assert s.count == len(ok) == meta["num_images"]
    assert s.found == len(SALTED) and s.files == len(SALTED) + len(SALTED_OTHERS)
    assert [im["source"] for im in meta["images"]] == ok  # sorted source order
    assert [im["name"] for im in meta["images"]] == [archive_name(i) for i in range(len(ok))]
    assert meta["classes"] == ["A", "B"]
    assert meta["labels"] == [[im["name"], 0 if im["source"].startswith("A/") else 1] for im in meta["images"]]
    assert meta["resolution"] == RES

    skipped = {k.source: k for k in s.skipped}
    expect_skipped = {k: ("undecodable", v) for k, v in SALTED.items() if v not in ("ok", "near", "exact")}
    expect_skipped["top.png"] = ("no-label", "not inside a class folder")
    expect_skipped["B/notes.txt"] = ("not-image", "extension .txt is not one of .jpg")
    expect_skipped["B/.hidden.jpg"] = ("system-file", "hidden or system name '.hidden.jpg'")
    assert set(skipped) == set(expect_skipped)
    for name, (reason, detail) in expect_skipped.items():
        assert skipped[name].reason == reason and skipped[name].detail.startswith(detail), skipped[name]
    lines = [line.split("\t", 2) for line in members["skipped.txt"].decode().splitlines()]
    assert sorted((p, r) for r, _, p in lines) == sorted((p, r) for p, (r, _) in expect_skipped.items())

    assert s.exact_duplicates == [("A/a3-copy.bmp", "A/a0.png")]
    assert [(a, b) for a, b, _ in s.near_duplicates] == [("A/a0.png", "A/a4-near.png")]
    dups = json.loads(members["duplicates.json"])
    assert dups["exact"] == [{"dropped": "A/a3-copy.bmp", "kept": "A/a0.png"}]
    assert len(dups["near"]) == 1

    # Every decodable source is in the histogram: 16-px b0 below target, the rest 64.
    sizes = json.loads(members["sizes.json"])
    decodable = sum(v in ("ok", "near", "exact") for k, v in SALTED.items() if k != "top.png")
    assert sizes["buckets"]["<32"] == 1 and sizes["buckets"]["64-127"] == decodable - 1
    assert sizes["below_target"] == 1 and s.upscaled == 1 == sizes["upscaled"]

    for im in meta["images"]:
        px = decode(members[im["name"]])
        assert px.shape == (RES, RES, 3) and px.dtype == np.uint8
        assert hashlib.sha1(np.ascontiguousarray(px).tobytes()).hexdigest() == im["sha1"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zipfile.ZipFile(dest).infolist())
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    text = s.format()
    assert f"{s.files} files read = {s.count} archived + 1 duplicates + {len(expect_skipped)} skipped" in text
    assert "skipped: system-file: 1, not-image: 1, no-label: 1, undecodable: 3 (one line each in skipped.txt" in text
    assert "exact duplicates dropped: 1" in text and "--strict" in text


def test_prepare_output_is_identical_for_one_and_two_workers(salted, salted_archive, tmp_path):
    dest, _ = salted_archive
    dest2 = tmp_path / "w2.zip"
    prepare(salted, dest2, resolution=RES, labels="folder", workers=2, progress=False)
    assert dest2.read_bytes() == dest.read_bytes()


def test_prepare_reads_a_zip_like_the_folder(salted, salted_archive, tmp_path):
    dest, _ = salted_archive
    src_zip = tmp_path / "src.zip"
    with zipfile.ZipFile(src_zip, "w") as zf:  # wrapped in one top folder, as `zip -r` does
        for p in sorted(salted.rglob("*")):
            if p.is_file():
                zf.write(p, "src/" + p.relative_to(salted).as_posix())
    out = tmp_path / "fromzip.zip"
    prepare(src_zip, out, resolution=RES, labels="folder", workers=2, progress=False)
    assert read_archive(out)[0]["images"] == read_archive(dest)[0]["images"]


def test_prepare_unlabelled_keeps_root_files_and_writes_null_labels(salted, tmp_path):
    s = prepare(salted, tmp_path / "u.zip", resolution=RES, progress=False)
    meta, _ = read_archive(tmp_path / "u.zip")
    assert meta["labels"] is None and meta["classes"] is None
    assert "top.png" in [im["source"] for im in meta["images"]]
    assert s.count == sum(v in ("ok", "near") for v in SALTED.values())


@pytest.mark.parametrize("bad", ["B/corrupt.jpg", "B/truncated.png", "B/empty.jpg"])
def test_prepare_strict_stops_at_the_first_broken_file_and_names_it(salted, tmp_path, bad):
    src = tmp_path / "src"
    shutil.copytree(salted / "A", src / "A")
    shutil.copy(salted / bad, src / "A" / Path(bad).name)
    dest = tmp_path / "strict.zip"
    with pytest.raises(UserError, match=Path(bad).name) as exc:
        prepare(src, dest, resolution=RES, strict=True, progress=False)
    assert "--strict" in str(exc.value)
    assert not dest.exists() and list(tmp_path.glob(".strict.zip*")) == []


def test_prepare_strict_also_stops_on_an_image_without_a_label(salted, tmp_path):
    with pytest.raises(UserError, match="top.png.*class folder"):
        prepare(salted, tmp_path / "x.zip", resolution=RES, labels="folder", strict=True, progress=False)


def test_prepare_min_size_refuses_small_images_instead_of_upscaling(salted, tmp_path):
    s = prepare(salted, tmp_path / "m.zip", resolution=RES, min_size=RES, progress=False)
    small = next(k for k in s.skipped if k.source == "B/b0-small.png")
    assert small.reason == "too-small" and small.detail.startswith("short side 16 px is below --min-size 32")
    assert s.upscaled == 0 and s.below_target == 1


def test_prepare_crop_none_skips_non_square_images(salted, tmp_path):
    s = prepare(salted, tmp_path / "c.zip", resolution=RES, crop="none", progress=False)
    wide = next(k for k in s.skipped if k.source == "A/a1 wide.JPG")
    assert wide.reason == "not-square" and wide.detail.startswith("not square (80x64)")


def test_prepare_center_crop_takes_the_middle_square(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, 16:48] = 255  # white middle square, black side bands
    save(tmp_path / "src/wide.png", img)
    prepare(tmp_path / "src", tmp_path / "o.zip", resolution=RES, progress=False)
    _, members = read_archive(tmp_path / "o.zip")
    assert (decode(members[archive_name(0)]) == 255).all()


def test_prepare_box_and_lanczos_filters_differ_and_box_averages(tmp_path):
    checker = np.indices((64, 64)).sum(0) % 2 * 255  # 1-px checkerboard
    save(tmp_path / "src/c.png", np.repeat(checker[:, :, None], 3, 2).astype(np.uint8))
    prepare(tmp_path / "src", tmp_path / "box.zip", resolution=RES, progress=False)
    prepare(tmp_path / "src", tmp_path / "lz.zip", resolution=RES, filter="lanczos", progress=False)
    box = decode(read_archive(tmp_path / "box.zip")[1][archive_name(0)])
    lz = decode(read_archive(tmp_path / "lz.zip")[1][archive_name(0)])
    assert np.abs(box.astype(int) - 128).max() <= 1  # each 2x2 block averages to grey
    assert not np.array_equal(box, lz)  # --filter reaches the resize


def test_prepare_applies_exif_orientation(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32, :, 0] = 255  # red top half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer must rotate 90 degrees clockwise
    save(tmp_path / "src/r.jpg", img, "JPEG", quality=98, exif=exif.tobytes())
    prepare(tmp_path / "src", tmp_path / "o.zip", resolution=RES, progress=False)
    out = decode(read_archive(tmp_path / "o.zip")[1][archive_name(0)]).astype(int)
    # Rotated clockwise, the red half is on the right.
    assert out[:, -8:, 0].mean() > 200 and out[:, :8, 0].mean() < 50


def test_prepare_converts_sixteen_bit_png_without_clipping(salted, salted_archive):
    dest, _ = salted_archive
    meta, members = read_archive(dest)
    name = next(im["name"] for im in meta["images"] if im["source"] == "B/b2-16bit.png")
    out = decode(members[name]).astype(int)
    ref = np.asarray(Image.fromarray(smooth(6)[:, :, 0]).resize((RES, RES), Image.Resampling.BOX)).astype(int)
    assert np.abs(out[:, :, 0] - ref).max() <= 1 and (out[:, :, 0] == out[:, :, 2]).all()


def test_prepare_refuses_missing_source_empty_source_and_existing_dest(tmp_path, salted):
    with pytest.raises(UserError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "a.zip", resolution=RES)
    (tmp_path / "notes.txt").write_text("a file that is neither a folder nor a zip")
    with pytest.raises(UserError, match="not a folder or a readable zip"):
        prepare(tmp_path / "notes.txt", tmp_path / "a.zip", resolution=RES)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("no images")
    with pytest.raises(UserError, match="no images"):
        prepare(tmp_path / "empty", tmp_path / "a.zip", resolution=RES)
    dest = tmp_path / "exists.zip"
    dest.write_bytes(b"precious")
    with pytest.raises(UserError, match="never overwritten; pass another destination"):
        prepare(salted, dest, resolution=RES)
    assert dest.read_bytes() == b"precious"


@pytest.mark.parametrize("res", [0, 3, 48, 100])
def test_prepare_refuses_a_resolution_that_is_not_a_power_of_two(salted, tmp_path, res):
    with pytest.raises(UserError, match="power of two"):
        prepare(salted, tmp_path / "a.zip", resolution=res)


def test_prepare_all_files_broken_is_an_error_and_writes_nothing(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.png").write_bytes(b"")
    with pytest.raises(UserError, match="none of the 1 image files"):
        prepare(tmp_path / "src", tmp_path / "a.zip", resolution=RES, progress=False)
    assert not (tmp_path / "a.zip").exists()


def _raise_on_third_call(fn):
    calls = []

    def wrapped(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived here
        return fn(*args)

    return wrapped


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_interrupted_mid_way_leaves_no_archive(salted, tmp_path, monkeypatch, workers):
    if workers == 1:  # interrupted while decoding the third image
        monkeypatch.setattr(prepare_module, "_process", _raise_on_third_call(prepare_module._process))
    else:  # the workers are fine; the parent is interrupted while writing the third image
        monkeypatch.setattr(prepare_module, "_write_member", _raise_on_third_call(prepare_module._write_member))
    dest = tmp_path / "half.zip"
    with pytest.raises(KeyboardInterrupt):
        prepare(salted, dest, resolution=RES, workers=workers, progress=False)
    assert sorted(os.listdir(tmp_path)) == []  # neither half.zip nor its temporary


def test_prepare_max_images_stops_after_that_many(salted, tmp_path):
    s = prepare(salted, tmp_path / "m.zip", resolution=RES, max_images=3, workers=2, progress=False)
    meta, _ = read_archive(tmp_path / "m.zip")
    assert s.count == 3 and len(meta["images"]) == 3
    assert [im["source"] for im in meta["images"]] == ["A/a0.png", "A/a1 wide.JPG", "A/a4-near.png"]
    # Every image file after the third kept one (in sorted order) is listed, never read.
    assert sorted(k.source for k in s.skipped if k.reason == "past-max-images") == sorted(SALTED)[4:]
    assert s.reasons["past-max-images"] == len(SALTED) - 4 and s.reasons["undecodable"] == 0


# ---------------------------------------------------------------------------- accounting


# Every kind of file a downloaded tree holds and where prepare must put it, run with
# --labels folder --min-size 12 --crop none --max-images 3 (images are 16 px).
ACCOUNTED = {
    "A/a0.png": "archived",
    "A/a1.png": "archived",
    "A/a2-copy.png": "duplicate",  # a1's pixels
    "A/bad.jpg": "undecodable",
    "A/small.png": "too-small",  # 8x8
    "A/wide.png": "not-square",  # 24x16
    "A/._a0.png": "system-file",  # an AppleDouble fork
    "B/b0.png": "archived",  # the third: --max-images is reached
    "B/notes.txt": "not-image",
    "B/tab\there.txt": "not-image",  # skipped.txt keeps the path last, so a tab in it parses
    "B/Thumbs.db": "system-file",
    "B/desktop.ini": "system-file",
    "C/c0.png": "past-max-images",
    "C/c1.jpg": "past-max-images",
    "root.png": "no-label",  # not in a class folder
    "attributes.csv": "not-image",
    ".DS_Store": "system-file",
    ".cache/x.png": "system-file",  # inside a dot-folder
    "__MACOSX/A/._a0.png": "system-file",  # an unzipped Finder archive
}
ACCOUNT_OPTIONS = dict(resolution=8, labels="folder", min_size=12, crop="none", max_images=3, progress=False)


@pytest.fixture(scope="module")
def account_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("account") / "faces"
    for i, rel in enumerate(["A/a0.png", "A/a1.png", "B/b0.png", "C/c0.png", "C/c1.jpg", "root.png"]):
        save(root / rel, smooth(300 + i, 16, 16))
    shutil.copy(root / "A/a1.png", root / "A/a2-copy.png")
    save(root / "A/small.png", smooth(310, 8, 8))
    save(root / "A/wide.png", smooth(311, 16, 24))
    for rel in ACCOUNTED:
        if not (root / rel).exists():  # the rest hold bytes that are no image
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"\x00\x05\x16\x07 not an image")
    return root


def finder_zip(tree: Path, dest: Path) -> dict[str, str]:
    """Zip ``tree`` as macOS Finder does (everything inside the top folder, directory entries,
    a ``__MACOSX/`` beside it with a ``._`` fork per file); the expected fates of its files."""
    expected = dict(ACCOUNTED)
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr(f"{tree.name}/", b"")
        for p in sorted(tree.rglob("*")):
            rel = p.relative_to(tree).as_posix()
            if p.is_dir():
                zf.writestr(f"{tree.name}/{rel}/", b"")
                continue
            zf.write(p, f"{tree.name}/{rel}")
            if p.suffix in (".png", ".jpg") and ACCOUNTED[rel] != "system-file":
                fork = (Path("__MACOSX") / tree.name / rel).with_name(f"._{p.name}").as_posix()
                zf.writestr(fork, b"\x00\x05\x16\x07 Mac OS X resource fork")
                expected[fork] = "system-file"  # outside the stripped top folder: the full name
    return expected


def fates(dest: Path) -> dict[str, str]:
    """Where each source file went, read back from the archive; no file in two places."""
    meta, members = read_archive(dest)
    placed = [(im["source"], "archived") for im in meta["images"]]
    placed += [(d["dropped"], "duplicate") for d in json.loads(members["duplicates.json"])["exact"]]
    for line in members["skipped.txt"].decode().splitlines():
        reason, detail, path = line.split("\t", 2)
        assert reason in SKIP_REASONS and detail, line
        placed.append((path, reason))
    out = dict(placed)
    assert len(out) == len(placed), sorted(placed)
    return out


def check_accounting(s, dest: Path, expected: dict[str, str]) -> None:
    assert fates(dest) == expected
    assert read_archive(dest)[0]["classes"] == ["A", "B", "C"]
    counts = Counter(expected.values())
    assert s.files == len(expected) and s.count == 3 and s.num_exact_duplicates == 1
    assert s.reasons == {r: counts[r] for r in SKIP_REASONS}
    text = s.format()
    assert f"{len(expected)} files read = 3 archived + 1 duplicates + {len(expected) - 4} skipped" in text
    assert "skipped: " + ", ".join(f"{r}: {counts[r]}" for r in SKIP_REASONS) in text


def test_prepare_accounts_for_every_file_of_a_folder_exactly_once(account_tree, tmp_path):
    s = prepare(account_tree, tmp_path / "a.zip", **ACCOUNT_OPTIONS)
    check_accounting(s, tmp_path / "a.zip", ACCOUNTED)


def test_prepare_accounts_for_a_finder_zip_and_strips_its_top_folder(account_tree, tmp_path):
    # __MACOSX/ beside the top folder is no second folder: the top one is stripped, so
    # --labels folder sees A, B and C, not one class "faces".
    expected = finder_zip(account_tree, tmp_path / "finder.zip")
    assert any(k.startswith("__MACOSX/faces/") for k in expected)
    s = prepare(tmp_path / "finder.zip", tmp_path / "a.zip", workers=2, **ACCOUNT_OPTIONS)
    check_accounting(s, tmp_path / "a.zip", expected)


def test_prepare_stops_before_writing_when_a_file_is_unaccounted_for(account_tree, tmp_path, monkeypatch):
    plan = prepare_module._plan

    def plan_that_forgets_the_unlabelled(*args):
        tasks, skipped = plan(*args)
        return tasks, skipped[1:]

    monkeypatch.setattr(prepare_module, "_plan", plan_that_forgets_the_unlabelled)
    with pytest.raises(AssertionError, match="unaccounted for.*root.png"):
        prepare(account_tree, tmp_path / "a.zip", **ACCOUNT_OPTIONS)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- CSV labels


@pytest.fixture()
def csv_tree(tmp_path) -> Path:
    src = tmp_path / "src"
    rows = ["file,person,gender,age"]
    for i, (person, gender, age) in enumerate(
        [("Ann Lee", "Female", "Young"), ("Ann Lee", "Female", "Young"), ("Bo Li", "Male", "Old"), ("Cy", "Male", "Young")]
    ):
        save(src / person / f"{i}.png", smooth(100 + i))
        rows.append(f"{person}/{i}.png,{person},{gender},{age}")
    rows[4] = "3.png,Cy,Male,Young"  # a bare file name, unique in SRC
    rows.append("Gone/9.png,Gone,Male,Old")  # a row whose file is not there
    save(src / "Extra" / "e.png", smooth(200))  # an image without a row
    (tmp_path / "attrs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return src


def test_prepare_csv_single_column_gives_integer_labels_and_reports_mismatches(csv_tree, tmp_path):
    s = prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "attrs.csv",
                label_columns=["gender"], progress=False)
    meta, _ = read_archive(tmp_path / "o.zip")
    assert meta["classes"] == ["Female", "Male"] and meta["label_groups"] is None
    assert [(im["source"], im["label"]) for im in meta["images"]] == [
        ("Ann Lee/0.png", 0), ("Ann Lee/1.png", 0), ("Bo Li/2.png", 1), ("Cy/3.png", 1)]
    assert s.csv_missing == ["Gone/9.png"]
    assert [tuple(k) for k in s.skipped] == [("Extra/e.png", "no-label", "no row in attrs.csv")]
    assert "1 CSV rows name files that are not in SRC" in s.format()


def test_prepare_csv_several_columns_give_a_joint_one_hot_vector(csv_tree, tmp_path):
    s = prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "attrs.csv",
                label_columns=["gender", "age"], progress=False)
    meta, _ = read_archive(tmp_path / "o.zip")
    assert meta["classes"] == {"gender": ["Female", "Male"], "age": ["Old", "Young"]}
    assert [g["offset"] for g in meta["label_groups"]] == [0, 2] and s.label_dim == 4
    assert meta["images"][2]["label"] == [0.0, 1.0, 1.0, 0.0]  # Male, Old
    assert meta["labels"][2] == [meta["images"][2]["name"], [0.0, 1.0, 1.0, 0.0]]


def test_prepare_csv_errors_name_the_file_and_the_valid_columns(csv_tree, tmp_path):
    with pytest.raises(UserError, match="missing.csv does not exist"):
        prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "missing.csv", label_columns=["age"])
    with pytest.raises(UserError, match="no column 'race'.*one of: person, gender, age"):
        prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "attrs.csv", label_columns=["race"])
    with pytest.raises(UserError, match="needs --label-column"):
        prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "attrs.csv")
    (tmp_path / "latin1.csv").write_bytes("file,gender\nCy/3.png,Männlich\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.csv.*save it as UTF-8"):
        prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "latin1.csv", label_columns=["gender"])
    (tmp_path / "none.csv").write_text("file,gender\nx/1.png,Male\n")
    with pytest.raises(UserError, match="none of the 5 images"):
        prepare(csv_tree, tmp_path / "o.zip", resolution=RES, labels=tmp_path / "none.csv", label_columns=["gender"])
    assert not (tmp_path / "o.zip").exists()


# ---------------------------------------------------------------------------- CLI


def test_cli_prepare_prints_summary_and_refuses_to_overwrite(salted, tmp_path):
    dest = tmp_path / "cli.zip"
    args = ["prepare", str(salted), str(dest), "--resolution", str(RES), "--labels", "folder", "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"wrote {len(SALTED) - 5} images" in r.output and "skipped.txt" in r.output
    assert f"{len(SALTED) + len(SALTED_OTHERS)} files read = {len(SALTED) - 5} archived + 1 duplicates" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "already exists" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["prepare", str(salted), str(tmp_path / "b.zip"), "-r", "32", "--crop", "edge"])
    assert r.exit_code == 2 and "--crop" in r.output


def test_prepare_follows_folder_links_once_and_stops_on_an_unlistable_folder(tmp_path, monkeypatch):
    import os

    from gan.prepare import prepare
    from gan.synthetic import make_people, render_face

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    person = make_people(1, 0)[0]
    for i, folder in enumerate((src / "a", elsewhere)):
        Image.fromarray(render_face(person, 32, i)).save(folder / f"{i}.png")
    os.symlink(elsewhere, src / "linked")  # a folder reached through a link is read
    os.symlink(src, src / "a" / "loop")    # a link back into the tree is not followed twice
    summary = prepare(src, tmp_path / "out.zip", resolution=32, progress=False)
    assert summary.count == 2 and summary.files == 2
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):
        onerror(PermissionError(13, "Permission denied", str(src / "a")))
        yield from real_walk(top, followlinks=followlinks)

    monkeypatch.setattr(os, "walk", walk)
    with pytest.raises(UserError, match=r"cannot list .*a \(Permission denied\)"):
        prepare(src, tmp_path / "out2.zip", resolution=32, progress=False)
    assert not (tmp_path / "out2.zip").exists()
