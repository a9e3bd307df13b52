"""The run config: presets, the published auto rule, dry runs and the guards of ``check_config``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan.cli import main
from gan.dataset import ImageDataset
from gan.run_config import RunConfig, check_config, load_run_config, prepare_run, resolve_config, with_auto
from gan.util import UserError

from tests._settings import DEMO_GAN_CONFIG as DEMO, REPO


def test_dry_run_prints_config_and_parameter_counts_and_writes_nothing(prepared_archive, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(out),
                                    "--config", str(DEMO), "--cond", "--batch", "16", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "batch: 16" in res.output and "c_dim: 2" in res.output and "img_resolution: 32" in res.output
    g = int(res.output.split("# G parameters: ")[1].split("\n")[0].replace(",", ""))
    assert g == 80_499  # the demo generator at 32 px, conditional on 2 classes
    assert not out.exists()


def test_dry_run_without_config_uses_the_published_auto_rule(prepared_archive, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path),
                                    "--dry-run"])
    assert res.exit_code == 0, res.output
    # res 32: batch = min(4096 / 32, 32) = 32, gamma = 0.0002 * 32^2 / 32, EMA = 32 * 10 / 32 kimg
    assert "batch: 32" in res.output and "r1_gamma: 0.0064" in res.output and "ema_kimg: 10.0" in res.output


def test_cli_errors_are_one_line_without_traceback(prepared_archive, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path),
                                    "--config", str(DEMO), "--batch", "6"])
    assert res.exit_code == 1
    assert "Error: --batch 6 is not divisible" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["train", "--outdir", str(tmp_path / "none"), "--resume", "latest"])
    assert res.exit_code == 1 and "has no run folders" in res.output


@pytest.mark.parametrize("preset, res, batch, gamma, ema", [
    ("mtf64", 64, 32, 0.0256, 10.0), ("mtf128", 128, 32, 0.1024, 10.0), ("mtf256", 256, 16, 0.8192, 5.0),
])
def test_presets_follow_the_published_auto_rule(preset, res, batch, gamma, ema):
    cfg = load_run_config(REPO / "configs" / "gan" / f"{preset}.yaml", [])
    assert cfg.train.batch == min(4096 // res, 32) == batch
    assert cfg.loss.r1_gamma == pytest.approx(0.0002 * res ** 2 / batch) and cfg.loss.r1_gamma == gamma
    assert cfg.train.ema_kimg == batch * 10 / 32 == ema
    assert cfg.optim.betas == (0.0, 0.99) and isinstance(cfg.optim.betas, tuple)
