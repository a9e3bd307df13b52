"""``classify.classifier``: the evaluation resize, image sources, and the one block-and-flush
scoring loop (with a stand-in classifier, so no training is needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from classify.classifier import (BLOCK, THUMB, blocks, iter_image_source, match_class, score_stream, source_items,
                                 to_classifier_size)
from gan.images import square_resize
from gan.util import UserError


class _Bright:
    """A classifier stand-in: class 1 for images brighter than 100, features = mean pixel."""

    task, classes = "gender", ["Female", "Male"]

    def predict(self, images, batch=64):
        m = torch.stack([img.float().mean() for img in images])  # [B]
        bright = (m > 100).float()
        return torch.stack([1 - bright, bright], 1) * 0.6 + 0.2, m[:, None]


def test_to_classifier_size_is_the_central_square_resized_with_lanczos():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 40, 56), dtype=np.uint8)  # [3, H, W], wider than high
    out = to_classifier_size(torch.from_numpy(img), 24)
    assert out.dtype == torch.uint8 and out.shape == (3, 24, 24)
    square = np.ascontiguousarray(img[:, :, 8:48].transpose(1, 2, 0))  # the central 40 x 40
    want = np.asarray(Image.fromarray(square).resize((24, 24), Image.Resampling.LANCZOS))
    assert np.array_equal(out.permute(1, 2, 0).numpy(), want)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), square_resize(img.transpose(1, 2, 0), 24, "lanczos"))


def test_blocks_cut_a_stream_into_lists_lazily():
    assert list(blocks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(blocks([], 3)) == []
    assert next(blocks(itertools.count(), 2)) == [0, 1]  # an endless stream is never read whole


def test_score_stream_keeps_every_image_in_order_across_blocks():
    n = BLOCK + 5
    values = [30 if i % 3 else 200 for i in range(n)]
    items = ((f"img{i:03d}", torch.full((3, 40, 40), v, dtype=torch.uint8)) for i, v in enumerate(values))
    seen = []
    s = score_stream(items, {"gender": _Bright()}, batch=16, on_block=seen.append)
    assert seen == [BLOCK, 5] and len(s) == n and s.names[0] == "img000" and s.names[-1] == f"img{n - 1:03d}"
    assert s.probs["gender"].shape == (n, 2)
    assert np.array_equal(s.probs["gender"].argmax(1), (np.asarray(values) > 100).astype(int))
    assert s.pixels.shape == (n, 3 * 16 * 16) and s.feats is None  # no face-recognition task
    assert s.resolution == 40 and s.thumbs[0].shape == (3, 40, 40)  # thumbnails: at most THUMB px
    grey = score_stream([("g", torch.zeros((1, 80, 80), dtype=torch.uint8))], {"gender": _Bright()},
                        pixels=False, features=False)
    assert grey.thumbs[0].shape == (3, THUMB, THUMB) and grey.pixels is None  # grey is read as RGB
    bare = score_stream([("g", torch.zeros((3, 8, 8), dtype=torch.uint8))], {"gender": _Bright()}, thumbs=False)
    assert bare.thumbs == []
    with pytest.raises(UserError, match="no generated images to score"):
        score_stream(iter(()), {"gender": _Bright()}, what="generated images")


def test_image_sources_are_read_in_order_or_sampled_with_a_seed(tmp_path):
    for i in range(6):
        (tmp_path / f"p{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 10, 3), 40 * i, np.uint8)).save(tmp_path / f"p{i % 2}" / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    names, imgs = zip(*iter_image_source(tmp_path))
    assert list(names) == ["p0/0.png", "p0/2.png", "p0/4.png", "p1/1.png", "p1/3.png", "p1/5.png"]
    assert imgs[0].dtype == torch.uint8 and imgs[0].shape == (3, 8, 10) and int(imgs[1][0, 0, 0]) == 80
    assert [n for n, _ in iter_image_source(tmp_path, 2)] == ["p0/0.png", "p0/2.png"]
    picked, idx, items = source_items(tmp_path, 3, seed=0)
    assert len(picked) == 3 and list(idx) == sorted(idx) and [n for n, _ in items] == picked
    assert source_items(tmp_path, 3, seed=0)[0] == picked  # the same seed, the same subset
    with pytest.raises(UserError, match="--reference .*: no such archive or folder"):
        source_items(tmp_path / "missing", option="--reference")
    with pytest.raises(UserError, match="not a folder or a .zip archive"):
        source_items(tmp_path / "notes.txt", option="--images")


def test_archive_sources_use_the_archive_names(prepared_archive):
    from gan.dataset import ImageDataset

    names = [n for n, _ in iter_image_source(prepared_archive, 3)]
    assert names == list(ImageDataset(prepared_archive).names[:3])


def test_class_names_match_through_the_aliases():
    assert match_class("gender", "males", ["Female", "Male"]) == 1
    assert match_class("gender", "FEMALE", ["Female", "Male"]) == 0
    assert match_class("gender", "cat", ["Female", "Male"]) is None
