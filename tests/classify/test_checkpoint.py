"""classify.checkpoint: plain-data best.pt/last.pt with an int ``format``, and files of the
format written before it (``"mtf-classify/1"``) still load and resume."""

from __future__ import annotations

import pytest
import torch

from classify import train as T
from classify.checkpoint import FORMAT, load_checkpoint, load_for_inference, save_checkpoint
from gan.util import UserError

SMALL_OV = ["data.input_size=32", "data.cache_size=32"]
#: The keys of a last.pt as mtf-classify wrote them before ``format`` became an int.
LEGACY_LAST_KEYS = {"format", "model_name", "task", "classes", "recipe", "input_size", "normalization", "data",
                    "epoch", "model", "early_stop", "train_seconds", "val_accuracy", "train_loss", "optimizer"}
LEGACY_FORMAT = "mtf-classify/1"

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(**extra):
    return {"model_name": "tiny_cnn", "task": "gender", "classes": ["Female", "Male"], "recipe": {}, "epoch": 0,
            "model": {"w": torch.zeros(2)}, **extra}


def test_save_writes_an_int_format_atomically_and_load_reads_it(tmp_path):
    path = save_checkpoint(tmp_path / "best.pt", _state())
    raw = torch.load(path, weights_only=True)
    assert next(iter(raw)) == "format" and raw["format"] == FORMAT and isinstance(FORMAT, int)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary left beside it
    assert load_checkpoint(path)["classes"] == ["Female", "Male"]


def test_newer_foreign_and_pickled_files_are_refused_with_the_fix(tmp_path):
    torch.save({**_state(), "format": FORMAT + 1}, tmp_path / "new.pt")
    with pytest.raises(UserError, match="newer than this package reads.*upgrade"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": 1, "G_ema": {}, "config": {}}, tmp_path / "gan.pt")  # a GAN checkpoint
    with pytest.raises(UserError, match="not written by mtf-classify train"):
        load_checkpoint(tmp_path / "gan.pt")
    torch.save({**_state(), "format": FORMAT, "code": UserError("x")}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="could not be read"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_a_checkpoint_of_the_legacy_format_loads_and_resumes(tmp_path, synthetic_curated, interrupt_at_epoch):
    ov = SMALL_OV + ["train.epochs=2", "train.batch_size=32"]
    cache = tmp_path / "cache"
    full = T.train(synthetic_curated, "gender", "tiny_cnn", "demo", tmp_path / "full", overrides=ov,
                   cache_dir=cache, progress=False, echo=False)
    interrupt_at_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        T.train(synthetic_curated, "gender", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov,
                cache_dir=cache, progress=False, echo=False)
    interrupt_at_epoch(None)
    for name in ("last.pt", "best.pt"):  # rewrite both as the previous version wrote them
        path = tmp_path / "cut" / name
        state = torch.load(path, weights_only=True)
        torch.save({**state, "format": LEGACY_FORMAT}, path)
    legacy = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert set(legacy) == LEGACY_LAST_KEYS and legacy["format"] == LEGACY_FORMAT and legacy["epoch"] == 0

    ckpt, model, recipe = load_for_inference(tmp_path / "cut" / "best.pt", torch.device("cpu"))
    assert ckpt["format"] == 1 and not model.training and recipe.data.input_size == 32
    resumed = T.train(synthetic_curated, "gender", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov, resume=True,
                      cache_dir=cache, progress=False, echo=False)
    assert resumed["epochs_trained"] == 2 and resumed["confusion"] == full["confusion"]
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["format"] == FORMAT  # rewritten as format 1
    for k in a:
        torch.testing.assert_close(a[k], b["model"][k], msg=k)
