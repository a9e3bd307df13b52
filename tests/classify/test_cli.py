"""mtf-classify: the click shell (errors through gan.cli.friendly_errors, exit statuses, dry run)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from classify.cli import main
from classify.models import MODELS


def test_models_lists_the_registry():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == list(MODELS)


def test_dry_run_prints_the_resolved_recipe_and_trains_nothing(tmp_path, synthetic_curated):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(synthetic_curated), "--task", "gender", "--model",
                                       "tiny_cnn", "--recipe", "demo", "--outdir", str(out), "--dry-run",
                                       "--set", "train.epochs=7"])
    assert result.exit_code == 0, result.output
    assert "name: demo" in result.output and "epochs: 7" in result.output and not out.exists()


def test_baselines_missing_weights_exit_2_with_one_paragraph_per_model(tmp_path, monkeypatch, synthetic_curated):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = CliRunner().invoke(main, [
        "baselines", "--data", str(synthetic_curated), "--outdir", str(tmp_path / "grid"), "--models",
        "resnet50,vgg16", "--tasks", "gender", "--recipe", "improved",
    ])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "grid").exists()
    text = " ".join(result.output.split())
    assert "resnet50-11ad3fa6.pth" in text and "vgg16-397923af.pth" in text and text.count("never downloads") == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, synthetic_curated):
    result = CliRunner().invoke(main, ["train", "--data", str(synthetic_curated), "--task", "gender", "--model",
                                       "tiny_cnn", "--recipe", "demo", "--outdir", str(tmp_path / "run"),
                                       "--device", "cuda"])
    assert result.exit_code == 1, result.output
    assert "--device cuda" in result.output and "no CUDA GPU" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
