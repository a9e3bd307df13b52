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


def _cfg(archive: Path, *extra: str) -> RunConfig:
    return load_run_config(DEMO, [f"data.path={json.dumps(str(archive))}", *extra])


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


def test_the_minibatch_std_group_binds_the_batch_only_when_that_layer_is_on(prepared_archive):
    ds = ImageDataset(prepared_archive)
    on = resolve_config(_cfg(prepared_archive, "train.batch=6"), ds)
    with pytest.raises(UserError, match="minibatch-std group size 4"):
        check_config(on, ds)
    off = resolve_config(_cfg(prepared_archive, "train.batch=6", "network.mbstd_num_channels=0"), ds)
    check_config(off, ds)  # batch_plans splits it into groups of 1: nothing to refuse


def test_with_auto_equals_loading_with_the_auto_rule_as_base(prepared_archive):
    from gan.run_config import auto_settings, explicit_keys

    values = {"data.path": str(prepared_archive), "train.batch": 8, "train.kimg": None}
    sets = ["loss.r1_gamma=0.5"]
    given = {k: v for k, v in values.items() if v is not None}
    old = load_run_config(None, sets, base=auto_settings(32), values=given)
    new = with_auto(load_run_config(None, sets, values=given), 32, explicit_keys(values, sets))
    assert new == old
    assert new.train.batch == 8 and new.loss.r1_gamma == 0.5 and new.train.ema_kimg == 10.0


def test_prepare_run_resolves_the_network_from_the_archive_once(prepared_archive):
    cfg = load_run_config(DEMO, values={"data.path": str(prepared_archive), "data.cond": True})
    resolved, ds = prepare_run(cfg, world_size=1)
    assert (resolved.network.img_resolution, resolved.network.c_dim) == (32, 2)
    again, same = prepare_run(resolved, world_size=1, dataset=ds)
    assert again == resolved and same is ds


def test_cli_train_reads_config_archive_and_checkpoint_once(prepared_archive, tmp_path, monkeypatch):
    """The CLI path does each thing once: one config load, one archive open, one checkpoint
    read on --resume, and the flags reach the config as typed values (no --set strings)."""
    import gan.checkpoint
    import gan.run_config as RC
    import gan.train

    calls = {"load": [], "open": 0, "ckpt": 0, "train": []}
    real_load, real_open, real_ckpt = RC.load_run_config, RC.open_dataset, gan.checkpoint.load_checkpoint

    def load(*a, **k):
        calls["load"].append((list(a[1]) if len(a) > 1 else list(k.get("overrides", ())), k.get("values")))
        return real_load(*a, **k)

    def open_(*a, **k):
        calls["open"] += 1
        return real_open(*a, **k)

    def ckpt(*a, **k):
        calls["ckpt"] += 1
        return real_ckpt(*a, **k)

    monkeypatch.setattr(RC, "load_run_config", load)
    monkeypatch.setattr(RC, "open_dataset", open_)
    monkeypatch.setattr(gan.checkpoint, "load_checkpoint", ckpt)
    # gan.train and the CLI read checkpoints through gan.checkpoint.load_resume_state, which calls this.
    monkeypatch.setattr(gan.train, "train", lambda cfg, run_dir, **k: calls["train"].append((cfg, k)) or
                        {"cur_nimg": 0, "checkpoint": None})
    args = ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path / "runs"), "--config", str(DEMO),
            "--batch", "16", "--gamma", "0.5", "--set", "train.kimg=0.5"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert len(calls["load"]) == 1 and calls["open"] == 1 and calls["ckpt"] == 0
    sets, values = calls["load"][0]
    assert sets == ["train.kimg=0.5"] and values["train.batch"] == 16 and values["loss.r1_gamma"] == 0.5
    cfg, kwargs = calls["train"][0]
    assert kwargs["dataset"] is not None and cfg.network.img_resolution == 32 and cfg.train.kimg == 0.5
    # Without --config the auto rule comes from the same open archive.
    calls.update(load=[], open=0)
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path / "r2"),
                                    "--dry-run"])
    assert res.exit_code == 0 and len(calls["load"]) == 1 and calls["open"] == 1
    # --resume: the checkpoint is read once, for its config and for the training state.
    from gan.checkpoint import save_checkpoint
    from gan.config import to_dict

    ckpt_path = save_checkpoint(tmp_path / "old" / "checkpoint-000000.064.pt",
                                {"config": to_dict(resolve_config(_cfg(prepared_archive, "train.batch=8"),
                                                                  ImageDataset(prepared_archive))), "G_ema": {}})
    calls.update(load=[], open=0, ckpt=0, train=[])
    res = CliRunner().invoke(main, ["train", "--outdir", str(tmp_path / "r3"), "--resume", str(ckpt_path)])
    assert res.exit_code == 0, res.output
    assert calls["ckpt"] == 1 and len(calls["load"]) == 1 and calls["open"] == 1
    cfg, kwargs = calls["train"][0]
    assert kwargs["state"]["config"]["train"]["batch"] == 8 and cfg.train.batch == 8


def test_cli_resume_into_another_network_fails_before_a_run_folder_is_made(prepared_archive, tmp_path):
    from gan.checkpoint import save_checkpoint
    from gan.config import to_dict

    other = resolve_config(_cfg(prepared_archive, "network.z_dim=16", "network.w_dim=16"), ImageDataset(prepared_archive))
    ckpt = save_checkpoint(tmp_path / "old" / "checkpoint-000000.064.pt", {"config": to_dict(other), "G_ema": {}})
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(out),
                                    "--config", str(DEMO), "--resume", str(ckpt)])
    assert res.exit_code == 1 and "the network differs" in res.output and "z_dim" in res.output
    assert not out.exists() or not any(out.iterdir())  # no empty run folder left behind
