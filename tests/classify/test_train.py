"""classify.train and mtf-classify train/evaluate end to end on the synthetic curated tree (32 px, tiny_cnn)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from classify import train as T
from classify.checkpoint import load_checkpoint
from classify.cli import main
from classify.evaluate import evaluate
from classify.recipe import RunConfig
from gan.config import load_config

#: The shared synthetic tree is 32 px: train the demo recipe at its native size.
SMALL = ["--set", "data.input_size=32", "--set", "data.cache_size=32"]
SMALL_OV = ["data.input_size=32", "data.cache_size=32"]
RUN_FILES = {"config.yaml", "log.txt", "stats.jsonl", "best.pt", "last.pt", "metrics.json", "per_class.csv",
             "confusion.png"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Decoded-image cache shared by this module's runs (should move to conftest if others need it)."""
    return tmp_path_factory.mktemp("classify-cache")


# Small convolutions gain little from a second thread, and on a busy CI box OpenMP spins.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("task", ["gender", "race"])
def test_demo_recipe_beats_majority_class_and_writes_every_output(tmp_path, synthetic_curated, cache_dir, task):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--data", str(synthetic_curated), "--task", task, "--model", "tiny_cnn", "--recipe", "demo",
        "--outdir", str(out), "--cache-dir", str(cache_dir), "--no-progress", *SMALL,
    ])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    names = {p.name for p in out.iterdir()}
    assert RUN_FILES <= names and any(n.startswith("events.out.tfevents.") for n in names)
    m = json.loads((out / "metrics.json").read_text())
    # "Clearly": 20 points over always answering the largest class, and the 95% interval above it.
    assert m["accuracy"] >= m["majority_rate"] + 0.2, m
    assert m["accuracy_ci95"][0] > m["majority_rate"]
    cfg = load_config(RunConfig, out / "config.yaml")
    assert (cfg.task, cfg.model, cfg.recipe.name, cfg.recipe.data.input_size) == (task, "tiny_cnn", "demo", 32)
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["Progress/epoch"]["mean"] for s in stats] == list(range(1, cfg.recipe.train.epochs + 1))
    assert {"Loss/train", "Accuracy/val", "Progress/lr"} <= set(stats[0])
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["classes"] == (["Female", "Male"] if task == "gender"
                               else ["Asian_Chinese_Korean", "Asian_Indian", "Black", "White"])
    assert ckpt["input_size"] == 32 and ckpt["normalization"] is None and "optimizer" not in ckpt
    assert "optimizer" in load_checkpoint(out / "last.pt")

    # evaluate re-tests the checkpoint to the same numbers.
    ev = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(out / "best.pt"), "--data",
                                       str(synthetic_curated), "--outdir", str(ev), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    again = json.loads((ev / "metrics.json").read_text())
    assert again["confusion"] == m["confusion"]

    if task == "gender":  # a tree spelled the authors' other way evaluates to the same numbers
        respelled = tmp_path / "Gender_Classification"
        for split in ("train", "val", "test"):
            for cls, alias in (("Female", "Females"), ("Male", "males")):
                shutil.copytree(synthetic_curated / "gender" / split / cls, respelled / split / alias)
        m2 = evaluate(out / "best.pt", tmp_path, outdir=tmp_path / "eval2", cache_dir=cache_dir, log=lambda s: None)
        assert m2["confusion"] == m["confusion"] and m2["classes"] == ["Female", "Male"]


def test_resume_repeats_the_epochs_of_an_uninterrupted_run(tmp_path, synthetic_curated, cache_dir,
                                                           interrupt_at_epoch):
    ov = SMALL_OV + ["train.epochs=3", "train.batch_size=32"]
    full = T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "full", overrides=ov,
                   cache_dir=cache_dir, progress=False, echo=False)

    interrupt_at_epoch(3)  # the epoch's stats row comes before its checkpoints
    with pytest.raises(KeyboardInterrupt):
        T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov,
                cache_dir=cache_dir, progress=False, echo=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1  # epochs 1 and 2 done
    interrupt_at_epoch(None)
    with pytest.raises(Exception, match="not empty"):
        T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov, cache_dir=cache_dir,
                progress=False, echo=False)
    resumed = T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov, resume=True,
                      cache_dir=cache_dir, progress=False, echo=False)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert resumed["confusion"] == full["confusion"]
    assert "resumed from" in (tmp_path / "cut" / "log.txt").read_text()
    # A resume with another recipe is refused.
    with pytest.raises(Exception, match="another task, model or recipe"):
        T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov + ["optim.lr=0.1"],
                resume=True, cache_dir=cache_dir, progress=False, echo=False)


def test_early_stopping_on_training_loss_stops_after_patience_epochs(tmp_path, synthetic_curated, cache_dir):
    # A learning rate of ~0 freezes the weights, so the training loss only wanders with the
    # batch order: the run must stop once it has not beaten its best for `patience` epochs.
    ov = SMALL_OV + ["train.early_stop=train_loss", "train.patience=2", "train.epochs=60",
                     "optim.schedule=constant", "optim.warmup_epochs=0", "optim.lr=1.0e-12"]
    m = T.train(synthetic_curated, "gender", "tiny_cnn", "demo", tmp_path / "run", overrides=ov,
                cache_dir=cache_dir, progress=False, echo=False)
    losses = [json.loads(line)["Loss/train"]["mean"] for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert m["epochs_trained"] == len(losses) < 60
    best_i = min(range(len(losses)), key=lambda i: (losses[i], i))
    assert len(losses) - 1 - best_i == 2  # exactly `patience` epochs without a new best
    assert m["epoch"] == best_i + 1  # the test used best.pt, the epoch of the lowest training loss
    assert "early stop after epoch" in (tmp_path / "run" / "log.txt").read_text()
