"""classify.train and mtf-classify end to end on the synthetic curated tree (32 px, tiny_cnn)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from classify import train as T
from classify.cli import main
from classify.evaluate import evaluate
from gan.config import ConfigError, load_config

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
    cfg = load_config(T.RunConfig, out / "config.yaml")
    assert (cfg.task, cfg.model, cfg.recipe.name, cfg.recipe.data.input_size) == (task, "tiny_cnn", "demo", 32)
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in stats] == list(range(1, cfg.recipe.train.epochs + 1))
    assert {"Loss/train", "Accuracy/val", "Progress/lr"} <= set(stats[0])
    ckpt = T.load_checkpoint(out / "best.pt")
    assert ckpt["classes"] == (["Female", "Male"] if task == "gender"
                               else ["Asian_Chinese_Korean", "Asian_Indian", "Black", "White"])
    assert ckpt["input_size"] == 32 and ckpt["normalization"] is None and "optimizer" not in ckpt
    assert "optimizer" in T.load_checkpoint(out / "last.pt")

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


def test_resume_repeats_the_epochs_of_an_uninterrupted_run(tmp_path, synthetic_curated, cache_dir, monkeypatch):
    ov = SMALL_OV + ["train.epochs=3", "train.batch_size=32"]
    full = T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "full", overrides=ov,
                   cache_dir=cache_dir, progress=False, echo=False)

    original = T._Stats.report

    def crash_at_epoch_3(self, epoch, values):
        if epoch == 3:
            raise KeyboardInterrupt
        original(self, epoch, values)

    monkeypatch.setattr(T._Stats, "report", crash_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov,
                cache_dir=cache_dir, progress=False, echo=False)
    assert T.load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1  # epochs 1 and 2 done
    monkeypatch.setattr(T._Stats, "report", original)
    with pytest.raises(Exception, match="not empty"):
        T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov, cache_dir=cache_dir,
                progress=False, echo=False)
    resumed = T.train(synthetic_curated, "age", "tiny_cnn", "demo", tmp_path / "cut", overrides=ov, resume=True,
                      cache_dir=cache_dir, progress=False, echo=False)
    a = T.load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = T.load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
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
    losses = [json.loads(line)["Loss/train"] for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert m["epochs_trained"] == len(losses) < 60
    best_i = min(range(len(losses)), key=lambda i: (losses[i], i))
    assert len(losses) - 1 - best_i == 2  # exactly `patience` epochs without a new best
    assert m["epoch"] == best_i + 1  # the test used best.pt, the epoch of the lowest training loss
    assert "early stop after epoch" in (tmp_path / "run" / "log.txt").read_text()


def test_baselines_grid_writes_results_and_skips_finished_cells(tmp_path, synthetic_curated, cache_dir):
    out = tmp_path / "grid"
    args = ["baselines", "--data", str(synthetic_curated), "--outdir", str(out), "--models",
            "tiny_cnn,mobilenet_v3_large", "--tasks", "gender,Age_Classification", "--recipe", "demo",
            "--cache-dir", str(cache_dir), "--no-progress", *SMALL, "--set", "train.epochs=1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    cells = [out / t / m for t in ("gender", "age") for m in ("tiny_cnn", "mobilenet_v3_large")]
    assert all((c / "metrics.json").is_file() for c in cells)
    md = (out / "results.md").read_text()
    assert "| model | gender | age |" in md
    assert md.count("| tiny_cnn |") == 1 and "| mobilenet_v3_large |" in md and " - " not in md
    assert "| convnext_base (paper, reported) | 98.88% | 97.60% |" in md
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 + 2 and rows[0].startswith("source,task,model,recipe,accuracy,ci95_low")

    stamps = {c: os.stat(c / "metrics.json").st_mtime_ns for c in cells}
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("finished earlier") == 4 and "training in" not in second.output
    assert {c: os.stat(c / "metrics.json").st_mtime_ns for c in cells} == stamps
    assert (out / "results.md").read_text() == md


def test_recipes_load_and_reject_unknown_keys():
    nb = T.load_recipe("notebook")
    assert (nb.optim.optimizer, nb.optim.lr, nb.optim.step_size, nb.optim.gamma) == ("adam", 1e-5, 20, 0.001)
    assert (nb.train.batch_size, nb.train.epochs, nb.train.early_stop, nb.train.patience) == (16, 1000, "train_loss", 5)
    assert nb.data.normalize == "none" and not nb.data.hflip and not nb.data.random_resized_crop
    assert nb.uses_pretrained("convnext_base") and not nb.uses_pretrained("resnet50")
    imp = T.load_recipe("improved")
    assert all(imp.uses_pretrained(m) for m in T.PAPER_MODELS) and imp.train.early_stop == "val_acc"
    assert not T.load_recipe("demo").uses_pretrained("tiny_cnn")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        T.load_recipe("demo", ["train.epoch=3"])
    with pytest.raises(Exception, match="no classify preset 'fast'.*demo, improved, notebook"):
        T.load_recipe("fast")


def test_step_schedule_is_steplr_per_epoch_and_cosine_warms_up():
    nb = T.load_recipe("notebook").optim
    assert [T.lr_factor(nb, e * 10, 10, 1000) for e in (0, 19, 20, 39, 40)] == pytest.approx(
        [1, 1, 1e-3, 1e-3, 1e-6])
    cos = T.load_recipe("improved").optim  # 2 warm-up epochs, then cosine to 1%
    f = [T.lr_factor(cos, s, 10, 40) for s in range(400)]
    assert f[0] == pytest.approx(1 / 20) and f[19] == pytest.approx(1.0)
    assert max(f) == pytest.approx(1.0) and f[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(f[20:], f[21:]))
