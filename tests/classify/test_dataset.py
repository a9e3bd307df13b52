"""classify.dataset: task/class aliases, val carving, split checks, the decoded cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classify import dataset as D
from gan.util import UserError


def _img(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _tree(root: Path, task_folder: str, splits: dict[str, dict[str, int]]) -> Path:
    """``root/task_folder/<split>/<class>/<i>.png``, each class a distinct colour."""
    for split, classes in splits.items():
        for ci, (cls, n) in enumerate(classes.items()):
            for i in range(n):
                _img(root / task_folder / split / cls / f"{cls}_{i:03d}.png", (40 * ci, 200 - 10 * i, 90))
    return root


ALL = ("train", "val", "test")


@pytest.mark.parametrize("folder,task", [
    ("Race_Classification", "race"), ("race", "race"), ("RACE", "race"),
    ("Gender_Classification", "gender"), ("age_classification", "age"),
    ("Face_Recognition", "face_recognition"), ("face-recognition", "face_recognition"),
])
def test_task_folder_aliases_are_found_case_insensitively(tmp_path, folder, task):
    classes = {"face_recognition": ["Ann Lee", "Bo"], "race": ["White", "Black"],
               "gender": ["Male", "Female"], "age": ["Old", "Young"]}[task]
    _tree(tmp_path, folder, {s: {c: 2 for c in classes} for s in ALL})
    td = D.scan_task(tmp_path, task)
    assert td.root == tmp_path / folder
    assert td.task == task


def test_race_spellings_map_to_canonical_classes_in_fixed_order(tmp_path):
    spellings = {"white": 2, "Asian_indian": 3, "BLACK": 2, "Asian_chinese_korean": 4}
    _tree(tmp_path, "Race_Classification", {s: spellings for s in ALL})
    td = D.scan_task(tmp_path, "race")
    assert td.classes == ("Asian_Chinese_Korean", "Asian_Indian", "Black", "White")
    # Labels follow the canonical order, not the folder spelling or listing order.
    for path, y in td.splits["train"]:
        assert D.canonical_class("race", path.parent.name) == td.classes[y]
    assert td.counts("test").tolist() == [4, 3, 2, 2]
    assert any("Asian_chinese_korean -> Asian_Chinese_Korean" in n for n in td.notes)


@pytest.mark.parametrize("male,female", [("male", "female"), ("Males", "Females"), ("Male", "Female"), ("MALE", "females")])
def test_gender_spellings_give_the_same_labels(tmp_path, male, female):
    _tree(tmp_path, "Gender_Classification", {s: {male: 3, female: 2} for s in ALL})
    td = D.scan_task(tmp_path, "gender")
    assert td.classes == ("Female", "Male")
    assert td.counts("train").tolist() == [2, 3]


def test_age_spellings_and_task_folder_given_directly(tmp_path):
    _tree(tmp_path, "Age_Classification", {s: {"young": 3, "Old": 1} for s in ALL})
    td = D.scan_task(tmp_path / "Age_Classification", "age")  # --data may point at the task folder
    assert td.classes == ("Old", "Young")
    assert td.counts("val").tolist() == [1, 3]


def test_face_recognition_keeps_person_names_sorted(tmp_path):
    names = ["Shaquille O_Neal", "Iu added", "Ann Lee"]
    _tree(tmp_path, "Face_Recognition", {s: {n: 2 for n in names} for s in ALL})
    td = D.scan_task(tmp_path, "face_recognition")
    assert td.classes == ("Ann Lee", "Iu added", "Shaquille O_Neal")
    assert not td.notes


def test_unknown_class_spelling_is_an_error_naming_the_folder(tmp_path):
    _tree(tmp_path, "gender", {s: {"Male": 2, "Femme": 2} for s in ALL})
    with pytest.raises(UserError, match=r"Femme.*not a known gender class.*Female, Male"):
        D.scan_task(tmp_path, "gender")


def test_unknown_task_and_missing_task_folder_are_errors(tmp_path):
    _tree(tmp_path, "gender", {s: {"Male": 2, "Female": 2} for s in ALL})
    with pytest.raises(UserError, match="unknown task 'hair'"):
        D.scan_task(tmp_path, "hair")
    with pytest.raises(UserError, match=r"no folder for task race.*found: gender"):
        D.scan_task(tmp_path, "race")


def test_mismatched_class_sets_between_splits_are_an_error(tmp_path):
    _tree(tmp_path, "race", {"train": {"White": 2, "Black": 2, "Asian_Indian": 2},
                             "val": {"White": 2, "Black": 2, "Asian_Indian": 2},
                             "test": {"White": 2, "Black": 2}})
    with pytest.raises(UserError, match=r"different classes: test lacks Asian_Indian"):
        D.scan_task(tmp_path, "race")


def test_empty_class_folder_is_an_error(tmp_path):
    _tree(tmp_path, "gender", {s: {"Male": 2, "Female": 2} for s in ALL})
    (tmp_path / "gender" / "val" / "Males").mkdir()
    with pytest.raises(UserError, match="two folders for class Male"):
        D.scan_task(tmp_path, "gender")
    (tmp_path / "gender" / "val" / "Males").rmdir()
    for f in (tmp_path / "gender" / "test" / "Female").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"test/Female holds no images"):
        D.scan_task(tmp_path, "gender")


def test_missing_val_is_carved_from_train_stratified_and_deterministic(tmp_path):
    _tree(tmp_path, "race", {"train": {"White": 10, "Black": 5, "Asian_Indian": 20, "Asian_Chinese_Korean": 1},
                             "test": {"White": 1, "Black": 1, "Asian_Indian": 1, "Asian_Chinese_Korean": 1}})
    a = D.scan_task(tmp_path, "race", val_fraction=0.2, seed=3)
    b = D.scan_task(tmp_path, "race", val_fraction=0.2, seed=3)
    c = D.scan_task(tmp_path, "race", val_fraction=0.2, seed=4)
    assert a.val_carved
    assert a.splits == b.splits
    assert {p for p, _ in a.splits["val"]} != {p for p, _ in c.splits["val"]}
    # Per class: 20% (at least one), but a single-image class stays in train.
    assert a.counts("val").tolist() == [0, 4, 1, 2]
    assert a.counts("train").tolist() == [1, 16, 4, 8]
    train_files = {p for p, _ in a.splits["train"]}
    val_files = {p for p, _ in a.splits["val"]}
    assert not train_files & val_files
    assert len(train_files | val_files) == 36
    assert any("no val/ folder" in n and "carved 7 of 36" in n and "stratified, seed 3" in n for n in a.notes)


def test_carving_does_not_depend_on_listing_order():
    items = [(Path(f"/x/{c}/{i}.png"), y) for y, c in enumerate("ab") for i in range(9)]
    _, val1 = D.carve_val(items, 0.3, seed=0)
    _, val2 = D.carve_val(list(reversed(items)), 0.3, seed=0)
    assert val1 == val2 and len(val1) == 6


def test_cache_decodes_once_and_rebuilds_when_a_file_changes(tmp_path):
    items = []
    for i in range(4):
        p = tmp_path / "imgs" / f"{i}.png"
        _img(p, (60 * i, 10, 200), size=(20, 30))  # not square: the central square is kept
        items.append((p, i % 2))
    cache = tmp_path / "cache"
    a = D.cached_split(items, 16, cache, name="t", progress=False)
    assert a.built and a.images.shape == (4, 3, 16, 16) and a.images.dtype == np.uint8
    assert a.images[2, :, 8, 8].tolist() == [120, 10, 200]
    assert a.labels.tolist() == [0, 1, 0, 1]
    b = D.cached_split(items, 16, cache, name="t", progress=False)
    assert not b.built and np.array_equal(np.asarray(a.images), np.asarray(b.images))
    # A changed file (new mtime and content) gives a new cache key.
    _img(items[2][0], (0, 255, 0), size=(20, 30))
    st = items[2][0].stat()
    os.utime(items[2][0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = D.cached_split(items, 16, cache, name="t", progress=False)
    assert c.built and c.images[2, :, 8, 8].tolist() == [0, 255, 0]


def test_unreadable_images_are_skipped_and_listed_or_stop_with_strict(tmp_path):
    items = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        _img(p, (10, 20, 30))
        items.append((p, i % 2))
    items[1][0].write_bytes(b"not an image")
    messages: list[str] = []
    s = D.cached_split(items, 8, tmp_path / "cache", name="t", progress=False, log=messages.append)
    assert len(s.labels) == 2 and s.files == [items[0][0], items[2][0]]
    assert [p for p, _ in s.skipped] == [str(items[1][0])]
    assert "skipped 1 of 3" in messages[0] and "--strict" in messages[0]
    listed = next((tmp_path / "cache").glob("*.skipped.txt")).read_text()
    assert str(items[1][0]) in listed
    with pytest.raises(UserError, match=r"1\.png could not be decoded"):
        D.cached_split(items, 8, tmp_path / "cache2", name="t", strict=True, progress=False)


def test_dataset_yields_uint8_images_and_labels(tmp_path):
    items = [(tmp_path / f"{i}.png", i) for i in range(2)]
    for p, i in items:
        _img(p, (i * 100, 0, 0))
    ds = D.CachedImageDataset(D.cached_split(items, 8, tmp_path / "c", progress=False))
    x, y = ds[1]
    assert x.shape == (3, 8, 8) and str(x.dtype) == "torch.uint8" and y == 1 and int(x[0, 0, 0]) == 100


def test_cached_batches_cover_every_image_once_in_a_seeded_order(tmp_path):
    items = []
    for i in range(9):
        p = tmp_path / f"{i}.png"
        _img(p, (i * 20, 0, 0))
        items.append((p, i % 3))
    split = D.cached_split(items, 8, tmp_path / "c", progress=False)

    def epoch(seed, **kw):
        import torch

        batches = list(D.CachedBatches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(seed), **kw))
        return [(x[:, 0, 0, 0] // 20).tolist() for x, _ in batches], [y.tolist() for _, y in batches]

    reds, labels = epoch(0)
    assert [len(b) for b in reds] == [4, 4, 1]
    assert sorted(sum(reds, [])) == list(range(9))  # each image once
    assert all(y == [r % 3 for r in b] for b, y in zip(reds, labels))  # labels stay with their images
    assert epoch(0) == (reds, labels) and epoch(1)[0] != reds
    reds, _ = epoch(0, drop_last_single=True)
    assert [len(b) for b in reds] == [4, 4]  # a last batch of one would break BatchNorm
    assert len(D.CachedBatches(split, 4, drop_last_single=True)) == 2


def test_decoded_cache_defaults_to_classify_below_the_cache_root(tmp_path, monkeypatch):
    """``$MTF_CACHE_DIR`` is the root of every cache now: the decoded images land in its
    ``classify/`` (beside the metrics' ``stats/``); without it, ``$XDG_CACHE_HOME/mtf-faces/classify``."""
    monkeypatch.setenv("MTF_CACHE_DIR", str(tmp_path / "mtf-cache"))
    assert D.default_cache_dir() == tmp_path / "mtf-cache" / "classify"
    p = tmp_path / "imgs" / "0.png"
    _img(p, (10, 20, 30))
    split = D.cached_split([(p, 0)], 8, D.default_cache_dir(), name="t", progress=False)
    assert split.built and split.path.parent == tmp_path / "mtf-cache" / "classify"
    monkeypatch.delenv("MTF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.default_cache_dir() == tmp_path / "xdg" / "mtf-faces" / "classify"
