"""``gan.dataset.ImageDataset``: a prepared archive as ``(uint8 [C, H, W], float32 label)``."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.dataset import ImageDataset, InfiniteSampler, open_images
from gan.prepare import archive_name, prepare
from gan.util import UserError

RES = 16


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Six distinct asymmetric images in two classes, prepared with a two-column CSV."""
    root = tmp_path_factory.mktemp("ds")
    src = root / "src"
    rows = ["file,gender,age"]
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)
        cls = "F" if i < 4 else "M"
        (src / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(src / cls / f"{i}.png")
        rows.append(f"{cls}/{i}.png,{'Female' if cls == 'F' else 'Male'},{'Old' if i % 2 else 'Young'}")
    (root / "a.csv").write_text("\n".join(rows) + "\n")
    return src


@pytest.fixture(scope="module")
def folder_zip(labelled, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("z") / "folder.zip"
    prepare(labelled, dest, resolution=RES, labels="folder", progress=False)
    return dest


@pytest.fixture(scope="module")
def joint_zip(labelled, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("z") / "joint.zip"
    prepare(labelled, dest, resolution=RES, labels=labelled.parent / "a.csv",
            label_columns=["gender", "age"], progress=False)
    return dest


def test_items_are_uint8_chw_with_one_hot_labels(folder_zip):
    ds = ImageDataset(folder_zip, use_labels=True)
    assert len(ds) == 6 and ds.resolution == RES and ds.num_channels == 3
    assert ds.label_dim == 2 and ds.class_names == ["F", "M"]
    img, label = ds[5]
    assert img.dtype == torch.uint8 and img.shape == (3, RES, RES)
    assert label.dtype == torch.float32 and label.tolist() == [0.0, 1.0]
    assert ds[0][1].tolist() == [1.0, 0.0]
    assert ds.label_distribution() == {"F": 4, "M": 2}


def test_items_match_the_pixels_of_the_sources(folder_zip, labelled):
    ds = ImageDataset(folder_zip)
    for i, source in enumerate(ds.sources):
        ref = np.asarray(Image.open(labelled / source)).transpose(2, 0, 1)
        assert np.array_equal(ds[i][0].numpy(), ref)


def test_unlabelled_use_gives_empty_labels(folder_zip):
    ds = ImageDataset(folder_zip, use_labels=False)
    assert ds.label_dim == 0 and ds[0][1].shape == (0,) and ds[0][1].dtype == torch.float32
    assert ds.has_labels  # the archive has labels; they are just not used


def test_joint_labels_are_concatenated_one_hot_groups(joint_zip):
    ds = ImageDataset(joint_zip, use_labels=True)
    assert ds.label_dim == 4
    assert [g["column"] for g in ds.label_groups] == ["gender", "age"]
    assert ds[1][1].tolist() == [1.0, 0.0, 1.0, 0.0]  # Female, Old
    assert ds[4][1].tolist() == [0.0, 1.0, 0.0, 1.0]  # Male, Young
    assert ds.label_distribution() == {"gender": {"Female": 4, "Male": 2}, "age": {"Old": 3, "Young": 3}}
    assert ds.labels.shape == (6, 4)


def test_mirror_doubles_the_set_with_x_flips(folder_zip):
    plain, mirrored = ImageDataset(folder_zip, use_labels=True), ImageDataset(folder_zip, mirror=True, use_labels=True)
    assert len(mirrored) == 2 * len(plain)
    for i in range(len(plain)):
        img, label = plain[i]
        assert torch.equal(mirrored[i][0], img)
        assert torch.equal(mirrored[i + len(plain)][0], img.flip(-1))
        assert not torch.equal(mirrored[i + len(plain)][0], img)  # the images are not symmetric
        assert torch.equal(mirrored[i + len(plain)][1], label)
    with pytest.raises(IndexError):
        mirrored[2 * len(plain)]


def test_dataloader_with_two_workers_reads_every_item_once(joint_zip):
    ds = ImageDataset(joint_zip, mirror=True, use_labels=True)
    ds[0]  # opens the zip in this process; workers must not share that handle
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)  # [2n, C, H, W], [2n, L]
    assert images.shape == (12, 3, RES, RES) and labels.shape == (12, 4)
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.equal(labels, torch.stack([ds[i][1] for i in range(len(ds))]))


def test_pickling_drops_the_open_zip(folder_zip):
    ds = ImageDataset(folder_zip)
    ds[0]
    assert ds._zip is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zip is None and torch.equal(clone[3][0], ds[3][0])


def test_reads_an_unzipped_folder_like_the_zip(folder_zip, tmp_path):
    with zipfile.ZipFile(folder_zip) as zf:
        zf.extractall(tmp_path / "unzipped")
    a, b = ImageDataset(folder_zip, use_labels=True), ImageDataset(tmp_path / "unzipped", use_labels=True)
    assert len(a) == len(b)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_reads_an_archive_in_the_published_format(tmp_path):
    """A ``dataset_tool`` archive: images and ``{"labels": [[name, int]]}`` only."""
    path = tmp_path / "published.zip"
    imgs = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(3)]
    with zipfile.ZipFile(path, "w") as zf:
        for i, img in enumerate(imgs):
            zf.writestr(archive_name(i), _png(img))
        zf.writestr("dataset.json", json.dumps({"labels": [[archive_name(i), [0, 2, 1][i]] for i in range(3)]}))
    ds = ImageDataset(path, use_labels=True)
    assert len(ds) == 3 and ds.resolution == 8 and ds.label_dim == 3
    assert ds[1][1].tolist() == [0.0, 0.0, 1.0] and int(ds[2][0][0, 0, 0]) == 80


def test_unlabelled_archive_has_no_labels(tmp_path):
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(archive_name(0), _png(np.zeros((4, 4), np.uint8)))  # grey: one channel
    ds = ImageDataset(path, use_labels=True)
    assert ds.label_dim == 0 and ds.num_channels == 1 and ds[0][0].shape == (1, 4, 4)
    assert ds.label_distribution() == {}


def test_missing_or_invalid_archive_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist.*mtf-gan prepare"):
        ImageDataset(tmp_path / "nope.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a zip"):
        ImageDataset(tmp_path / "bad.zip")


def test_sampler_order_depends_only_on_position():
    full = InfiniteSampler(10, seed=3, start=0, batch=4)
    it = iter(full)
    first = [next(it) for _ in range(24)]
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))  # epochs
    assert first[:10] != first[10:20]  # reshuffled per epoch
    late = iter(InfiniteSampler(10, seed=3, start=8, batch=4))
    assert [next(late) for _ in range(16)] == first[8:24]
    rank1 = iter(InfiniteSampler(10, seed=3, start=0, batch=4, rank=1, world_size=2))
    assert [next(rank1) for _ in range(4)] == first[2:4] + first[6:8]


def test_open_images_reads_an_archive_or_a_folder_through_one_interface(folder_zip, tmp_path):
    arch = open_images(folder_zip)
    assert isinstance(arch, ImageDataset) and len(arch) == len(arch.names)
    first = arch.image(0)
    assert first.dtype == torch.uint8 and first.shape == (3, RES, RES) and arch.first_size == (RES, RES)
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    Image.fromarray(np.full((6, 10, 3), 7, np.uint8)).save(folder / "b" / "x.png")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(folder / "a.jpg")
    (folder / ".DS_Store").write_bytes(b"\0")
    src = open_images(folder, what="--real")
    assert src.names == ["a.jpg", "b/x.png"] and len(src) == 2 and src.first_size == (4, 4)
    grey, wide = src.image(0), src.image(1)
    assert grey.shape == (3, 4, 4) and wide.shape == (3, 6, 10) and int(wide[0, 0, 0]) == 7
    with pytest.raises(UserError, match="--real .*no such archive or folder"):
        open_images(tmp_path / "absent", what="--real")
