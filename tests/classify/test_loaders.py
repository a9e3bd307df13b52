"""classify.loaders: batches over the decoded cache, seeded per epoch; the evaluation transform."""

from __future__ import annotations

import logging

import pytest
import torch

from classify import loaders as L
from classify.recipe import load_recipe

SMALL_OV = ["data.input_size=32", "data.cache_size=32"]


@pytest.fixture(scope="module")
def gender(synthetic_curated, tmp_path_factory):
    recipe = load_recipe("demo", SMALL_OV + ["train.batch_size=8", "train.eval_batch_size=16"])
    return L.scan_for(synthetic_curated, "gender", recipe), recipe, tmp_path_factory.mktemp("cache")


def _batches(loader):
    torch.manual_seed(0)  # the demo recipe's per-image augmentation draws from the global generator
    return [(x.clone(), y.clone()) for x, y in loader]


def test_training_order_is_a_function_of_seed_and_epoch(gender):
    """The shuffle comes from a generator seeded with (seed, epoch): a resumed run sees the same batches."""
    td, recipe, cache = gender
    a = _batches(L.make_loader(td, "train", recipe, cache, train=True, epoch=3))
    b = _batches(L.make_loader(td, "train", recipe, cache, train=True, epoch=3))
    c = _batches(L.make_loader(td, "train", recipe, cache, train=True, epoch=4))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert any(not torch.equal(y1, y2) for (_, y1), (_, y2) in zip(a, c))
    x, y = a[0]
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_evaluation_batches_cover_the_split_once_in_file_order(gender):
    td, recipe, cache = gender
    loader = L.eval_loader(td, "test", recipe, cache, progress=False, log=logging.getLogger("test"))
    ys = torch.cat([y for _, y in loader])
    assert ys.tolist() == [label for _, label in td.splits["test"]]
    assert max(len(y) for _, y in loader) == 16


def test_batch_prep_is_totensor_resize_and_normalization():
    recipe = load_recipe("improved")
    prep = L.batch_prep(recipe, torch.device("cpu"))
    x = torch.full((2, 3, 256, 256), 255, dtype=torch.uint8)
    out = prep(x)
    assert out.shape == (2, 3, 224, 224)
    expected = (1.0 - torch.tensor(L.IMAGENET_MEAN)) / torch.tensor(L.IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 5, 5], expected)
    assert L.normalization(recipe) == {"mean": list(L.IMAGENET_MEAN), "std": list(L.IMAGENET_STD)}
    plain = L.batch_prep(load_recipe("notebook"), torch.device("cpu"))(x)
    assert plain.max() == 1.0 and plain.min() == 1.0 and L.normalization(load_recipe("notebook")) is None


def test_only_augmenting_recipes_have_a_per_image_transform():
    assert L.train_transform(load_recipe("notebook"), train=True) is None
    assert L.train_transform(load_recipe("improved"), train=False) is None
    aug = L.train_transform(load_recipe("improved"), train=True)
    assert aug(torch.zeros(3, 256, 256, dtype=torch.uint8)).shape == (3, 224, 224)
