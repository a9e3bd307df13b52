"""classify.recipe: the presets, unknown keys, the learning-rate schedule and the optimizer."""

from __future__ import annotations

import pytest
import torch

from classify import recipe as R
from classify.models import PAPER_MODELS
from gan.config import ConfigError


def test_recipes_load_and_reject_unknown_keys():
    nb = R.load_recipe("notebook")
    assert (nb.optim.optimizer, nb.optim.lr, nb.optim.step_size, nb.optim.gamma) == ("adam", 1e-5, 20, 0.001)
    assert (nb.train.batch_size, nb.train.epochs, nb.train.early_stop, nb.train.patience) == (16, 1000, "train_loss", 5)
    assert nb.data.normalize == "none" and not nb.data.hflip and not nb.data.random_resized_crop
    assert nb.uses_pretrained("convnext_base") and not nb.uses_pretrained("resnet50")
    imp = R.load_recipe("improved")
    assert all(imp.uses_pretrained(m) for m in PAPER_MODELS) and imp.train.early_stop == "val_acc"
    assert not R.load_recipe("demo").uses_pretrained("tiny_cnn")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        R.load_recipe("demo", ["train.epoch=3"])
    with pytest.raises(Exception, match="no classify preset 'fast'.*demo, improved, notebook"):
        R.load_recipe("fast")


def test_step_schedule_is_steplr_per_epoch_and_cosine_warms_up():
    nb = R.load_recipe("notebook").optim
    assert [R.lr_factor(nb, e * 10, 10, 1000) for e in (0, 19, 20, 39, 40)] == pytest.approx(
        [1, 1, 1e-3, 1e-3, 1e-6])
    cos = R.load_recipe("improved").optim  # 2 warm-up epochs, then cosine to 1%
    f = [R.lr_factor(cos, s, 10, 40) for s in range(400)]
    assert f[0] == pytest.approx(1 / 20) and f[19] == pytest.approx(1.0)
    assert max(f) == pytest.approx(1.0) and f[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(f[20:], f[21:]))


def test_optimizer_follows_the_recipe_and_skips_frozen_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    sgd = R.make_optimizer(R.OptimConfig(optimizer="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4), net)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    assert sum(len(g["params"]) for g in sgd.param_groups) == 3  # the frozen weight is left out
    assert isinstance(R.make_optimizer(R.OptimConfig(optimizer="adamw", weight_decay=0.05), net), torch.optim.AdamW)
    assert type(R.make_optimizer(R.OptimConfig(), net)) is torch.optim.Adam


def test_recipe_round_trips_through_a_checkpoint_dict():
    from gan.config import to_dict

    imp = R.load_recipe("improved")
    assert R.recipe_from_dict(to_dict(imp)) == imp
