"""Transfer learning (``mtf-gan train --init SRC``) and Freeze-D (``--freeze-d N``).

SRC is a two-step run of a very small unconditional network on the shared 32-px archive
(built once per test run), or the published-format fixture ``sg2a-tiny-uncond.pkl``. Most
checks build the networks of a run without training (:func:`gan.train.build`); the runs that
train take two or three steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from gan.checkpoint import list_checkpoints, load_checkpoint
from gan.cli import main
from gan.config import from_dict
from gan.networks import NetworkConfig, build_discriminator, build_generator
from gan.run_config import RunConfig, load_run_config
from gan.train import build, train
from gan.transfer import d_layers, freeze_d, prepare
from gan.util import UserError

from tests._settings import DEMO_GAN_CONFIG as DEMO, shared_fixture

TINY = ("network.channel_base=256", "network.channel_max=16", "network.z_dim=16", "network.w_dim=16")
CPU = torch.device("cpu")


def _cfg(archive: Path, *extra: str) -> RunConfig:
    return load_run_config(DEMO, [f"data.path={json.dumps(str(archive))}", "train.batch=8", "train.grid=[2,2]",
                                  "train.tick_kimg=0.008", "train.snap_kimg=0.016", *extra])


@pytest.fixture(scope="module")
def src_ckpt(built_once, prepared_archive, one_thread) -> Path:
    """Our checkpoint after two steps of a tiny unconditional run at 32 px (seed 7)."""
    cfg = _cfg(prepared_archive, "train.kimg=0.016", "train.seed=7", *TINY)
    folder = built_once("transfer-src", lambda f: train(cfg, f / "src", progress=False, console=False))
    return list_checkpoints(folder / "src")[-1][1]


def _archive(built_once, synthetic_noncurated, res: int) -> Path:
    from gan.prepare import prepare as prepare_archive

    folder = built_once(f"transfer-{res}px", lambda f: prepare_archive(
        synthetic_noncurated, f / f"mtf-{res}.zip", resolution=res, max_images=16, progress=False))
    return folder / f"mtf-{res}.zip"


def _built(cfg: RunConfig, explicit=()):
    """``(cfg, run, SRC)`` of a new run of ``cfg``, its networks built and initialised, no training."""
    cfg, _, src = prepare(cfg, 1, explicit=explicit)
    return cfg, build(cfg, CPU, src=src), src


def _report(run) -> str:
    return "\n".join(run.notes)


def _src_G_ema(src: dict) -> torch.nn.Module:
    G = build_generator(from_dict(NetworkConfig, src["config"]["network"]))
    G.load_state_dict(src["G_ema"])
    return G.eval()


def _images(G: torch.nn.Module, c: torch.Tensor, seed: int = 0) -> torch.Tensor:
    z = torch.randn([c.shape[0], G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.eval()(z, c, noise_mode="const")


# ---------------------------------------------------------------------------- init from our checkpoint


def test_init_from_our_checkpoint_copies_every_tensor_and_starts_at_zero(src_ckpt, prepared_archive, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(out), "--config",
                                    str(DEMO), "--init", str(src_ckpt), "--kimg", "0.008", "--snap", "0.008",
                                    "--batch", "8", "--seed", "7", "--set", "train.grid=[2,2]", "--no-progress"])
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    assert run_dir.name.endswith("-init")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    src = load_checkpoint(src_ckpt)
    assert saved["train"]["init"] == str(src_ckpt) and saved["network"] == src["config"]["network"]
    log = (run_dir / "log.txt").read_text()
    assert f"init from {src_ckpt} (training checkpoint, kimg 0.016; 32 px, c_dim 0) -> 32 px, c_dim 0" in log
    assert "init: same resolution (32 px)" in log and "init G_ema: as G" in log
    assert "grafted 0; new 0; dropped 0" in log  # G and D: every tensor copied
    # The first fakes grid is SRC's last one: same seed, same z, the same weights.
    from PIL import Image
    import numpy as np

    first = np.asarray(Image.open(run_dir / "fakes_init.png"))
    assert np.array_equal(first, np.asarray(Image.open(src_ckpt.parent / "fakes-000000.016.png")))
    # Counters, optimizer state and ADA start at zero: one step of 8 images.
    state = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert state["cur_nimg"] == 8 and state["batch_idx"] == 1 and state["ada_stats"]["steps"] == 1
    for opt in ("G_opt", "D_opt"):  # main + regularization phase at step 0: two Adam steps, not SRC's + 2
        assert {int(s["step"]) for s in state[opt]["state"].values()} == {2}


def test_init_from_a_published_pickle_reproduces_its_outputs(prepared_archive):
    if not hasattr(pytest.importorskip("gan.published"), "import_pickle"):
        pytest.skip("gan.published.import_pickle is not there yet")
    pkl = shared_fixture("sg2a-tiny-uncond.pkl")
    ref = torch.load(shared_fixture("sg2a-tiny-pkl-outputs.pt"), weights_only=True)["uncond"]
    cfg, run, src = _built(_cfg(prepared_archive, f"train.init={json.dumps(str(pkl))}"))
    assert cfg.network.z_dim == 64 and cfg.network.channel_max == 64 and cfg.network.c_dim == 0
    assert "grafted 0; new 0" in _report(run) and "(imported, sha256 " in _report(run)
    img = _images_for(run.G_ema, ref["z"], ref["c"])
    torch.testing.assert_close(img, ref["img"], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(run.D(ref["img"], ref["c"]), ref["d"], rtol=1e-5, atol=1e-5)
    # Conditional from the published unconditional network: SRC's images for every class.
    _, cond, _ = _built(_cfg(prepared_archive, f"train.init={json.dumps(str(pkl))}", "data.cond=true"))
    for k in range(2):
        c = torch.nn.functional.one_hot(torch.full([len(ref["z"])], k), 2).float()
        torch.testing.assert_close(_images_for(cond.G_ema, ref["z"], c), ref["img"], rtol=1e-5, atol=1e-5)


def test_a_conditional_pickle_starts_only_conditional_runs_and_relearns_other_labels(prepared_archive):
    if not hasattr(pytest.importorskip("gan.published"), "import_pickle"):
        pytest.skip("gan.published.import_pickle is not there yet")
    init = f"train.init={json.dumps(str(shared_fixture('sg2a-tiny-cond.pkl')))}"
    with pytest.raises(UserError, match=r"SRC is conditional \(c_dim 3\) and this run is not; pass --cond"):
        prepare(_cfg(prepared_archive, init), 1)
    _, run, _ = _built(_cfg(prepared_archive, init, "data.cond=true"))  # 3 classes -> the archive's 2
    g, d = (next(line for line in run.notes if line.startswith(f"init {n}:")) for n in ("G", "D"))
    # Only the label-sized tensor is new; every tensor of the same name and shape is copied.
    for line in (g, d):
        assert "grafted 0; new 1 (mapping 1: embed.weight); dropped 1 (mapping 1: embed.weight)" in line, line


def _images_for(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return G.eval()(z, c, noise_mode="const")


# ---------------------------------------------------------------------------- Freeze-D


@pytest.mark.parametrize("res, n, layers", [
    (32, 0, []),
    (32, 1, ["block32.from_rgb"]),
    (32, 4, ["block32.from_rgb", "block32.conv", "block32.conv_down", "block32.skip"]),
    (32, 5, ["block32.from_rgb", "block32.conv", "block32.conv_down", "block32.skip", "block16.conv"]),
    (32, 10, [f"block{r}.{n}" for r in (32, 16, 8) for n in ("from_rgb", "conv", "conv_down", "skip")
              if r == 32 or n != "from_rgb"]),
    # The published `--freezed=10` at 256 px: the 256-px block (4 layers), then 128 and 64 (3 each).
    (256, 10, [f"block{r}.{n}" for r in (256, 128, 64) for n in ("from_rgb", "conv", "conv_down", "skip")
               if r == 256 or n != "from_rgb"]),
])
def test_freeze_d_counts_layers_from_the_image_as_published(res, n, layers):
    assert d_layers(res)[:n] == layers and len(d_layers(res)) == 4 + 3 * (int(math.log2(res)) - 3)
    D = build_discriminator(NetworkConfig(img_resolution=res, c_dim=2, channel_base=res, channel_max=4,
                                          d_mapping_layers=1))
    trainable, frozen = freeze_d(D, n)
    expect = [name for name, _ in D.named_parameters() if any(name.startswith(p + ".") for p in layers)]
    assert frozen == expect and len(trainable) + len(frozen) == len(list(D.parameters()))
    assert all(not D.get_parameter(name).requires_grad for name in frozen)
    assert not any(name.startswith(("epilogue.", "mapping.")) for name in frozen)  # never frozen


def test_freeze_d_larger_than_the_discriminator_is_an_error_before_any_folder(src_ckpt, prepared_archive, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(out), "--config",
                                    str(DEMO), "--init", str(src_ckpt), "--freeze-d", "11"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "--freeze-d 11: the discriminator at 32 px has 10 layers" in res.output and "at most 10" in res.output
    assert not out.exists()


def test_init_with_freeze_d_keeps_frozen_tensors_bit_identical_and_resumes(src_ckpt, prepared_archive, tmp_path):
    out = tmp_path / "runs"
    common = ["--outdir", str(out), "--no-progress", "--set", "train.grid=[2,2]", "--set", "loss.r1_interval=2"]
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--config", str(DEMO), "--init",
                                    str(src_ckpt), "--freeze-d", "5", "--kimg", "0.016", "--snap", "0.008",
                                    "--batch", "8", *common])
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    assert run_dir.name.endswith("-init-freezed5")
    assert "freeze-d 5: D's first 5 of 10 layers frozen" in (run_dir / "log.txt").read_text()
    src_D = load_checkpoint(src_ckpt)["D"]
    frozen = [k for k in src_D if k.startswith(("block32.", "block16.conv."))]
    assert len(frozen) == 9  # from_rgb, conv, conv_down (weight, bias), skip (weight); block16.conv
    trained = [k for k in src_D if k not in frozen]

    def check(path: Path) -> dict:
        state = load_checkpoint(path)
        for k in frozen:
            assert torch.equal(state["D"][k], src_D[k]), k
        for k in trained:
            assert not torch.equal(state["D"][k], src_D[k]), k
        assert len(state["D_opt"]["state"]) == len(trained)  # frozen ones are not in D's optimizer
        return state

    for _, path in list_checkpoints(run_dir):
        check(path)
    # --resume rebuilds the same optimizer layout, keeps freeze_d and never re-applies the init.
    res = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--kimg", "0.024", *common])
    assert res.exit_code == 0, res.output
    resumed = sorted(out.iterdir())[-1]
    assert check(list_checkpoints(resumed)[-1][1])["cur_nimg"] == 24
    log = (resumed / "log.txt").read_text()
    assert "freeze-d 5" in log and "init from" not in log and "resumed from" in log
    assert yaml.safe_load((resumed / "config.yaml").read_text())["train"]["freeze_d"] == 5
    # Freeze-D cannot change on resume, and --init never goes with --resume.
    res = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--freeze-d", "3", *common])
    assert res.exit_code == 1 and "freeze_d 5 (checkpoint) vs 3" in res.output
    res = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--init", str(src_ckpt), *common])
    assert res.exit_code == 2 and "--init and --resume are exclusive" in res.output
    with pytest.raises(UserError, match="--init and --resume are exclusive"):
        cfg = load_run_config(None, [f"train.init={json.dumps(str(run_dir))}"],
                              base=load_checkpoint(list_checkpoints(run_dir)[-1][1])["config"])
        train(cfg, tmp_path / "never", resume=list_checkpoints(run_dir)[-1][1], progress=False, console=False)
    assert len(list(out.iterdir())) == 2 and not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------- conditional from unconditional


def test_conditional_graft_draws_src_images_for_every_class_then_learns_classes(src_ckpt, prepared_archive,
                                                                               tmp_path, one_thread):
    cfg = _cfg(prepared_archive, f"train.init={json.dumps(str(src_ckpt))}", "data.cond=true",
               "train.kimg=0.024", "train.snap_kimg=0.024")
    cfg, run, src = _built(cfg)
    notes = _report(run)
    assert "init: conditional from unconditional: G's mapping.fc0 grafted (z-columns x sqrt((16 + 16) / 16)" in notes
    assert "grafted 1 (mapping 1: fc0.weight); new 2 (mapping 2: embed.weight, embed.bias); dropped 0" in notes
    assert "new 8 (mapping 6; epilogue 2: out.weight, out.bias); dropped 2 (epilogue 2: out.weight, out.bias)" in notes
    fc0 = run.G.mapping.fc0.weight
    assert torch.equal(fc0[:, 16:], torch.zeros_like(fc0[:, 16:])) and run.G.mapping.embed.weight.abs().sum() > 0
    torch.testing.assert_close(fc0[:, :16], src["G"]["mapping.fc0.weight"] * 2 ** 0.5)
    ref = _images(_src_G_ema(src), torch.zeros([6, 0]))
    for k in range(2):
        c = torch.nn.functional.one_hot(torch.full([6], k), 2).float()
        torch.testing.assert_close(_images(run.G_ema, c), ref, rtol=1e-5, atol=1e-5)
    # A few steps later the classes differ (the embedding's columns of fc0 got gradients).
    result = train(cfg, tmp_path / "run", progress=False, console=False, init_state=src, explicit=())
    G = result["G"]  # (G_ema has moved by less than 1% of the way)
    a, b = (_images(G, torch.nn.functional.one_hot(torch.full([6], k), 2).float()) for k in range(2))
    assert (a - b).abs().max() > 1e-4


# ---------------------------------------------------------------------------- other resolutions


def test_lower_resolution_start_takes_every_block_up_to_the_target(src_ckpt, built_once, synthetic_noncurated,
                                                                   tmp_path):
    archive = _archive(built_once, synthetic_noncurated, 16)
    res = CliRunner().invoke(main, ["train", "--data", str(archive), "--outdir", str(tmp_path), "--config",
                                    str(DEMO), "--init", str(src_ckpt), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "img_resolution: 16" in res.output and "channel_base: 256" in res.output
    assert "# init: lower resolution (32 -> 16 px)" in res.output
    g = next(line for line in res.output.splitlines() if line.startswith("# init G:"))
    d = next(line for line in res.output.splitlines() if line.startswith("# init D:"))
    assert "new 0; dropped 16 (synthesis.block32 16)" in g  # every block up to 16 px, each with its toRGB
    assert "copied 16 (block16 5; block8 5; epilogue 6)" in d  # all of D's blocks up to 16 px but ...
    assert "new 2 (block16 2: from_rgb.weight, from_rgb.bias); dropped 7 (block32 7)" in d  # ... the new from_rgb
    assert not list(tmp_path.iterdir())


def test_higher_resolution_start_initialises_the_new_top_blocks_fresh(src_ckpt, built_once, synthetic_noncurated):
    archive = _archive(built_once, synthetic_noncurated, 64)
    cfg, run, src = _built(_cfg(archive, f"train.init={json.dumps(str(src_ckpt))}"))
    notes = _report(run)
    assert cfg.network.img_resolution == 64 and "init: higher resolution (32 -> 64 px)" in notes
    assert "grafted 0; new 16 (synthesis.block64 16); dropped 0" in notes  # G
    assert "new 7 (block64 7); dropped 2 (block32 2: from_rgb.weight, from_rgb.bias)" in notes  # D
    for name, t in run.G.state_dict().items():
        if not name.startswith("synthesis.block64."):
            assert torch.equal(t, src["G"][name]), name


# ---------------------------------------------------------------------------- config


def test_transfer_conventions_apply_unless_set_explicitly(src_ckpt, prepared_archive, tmp_path):
    def dry(*extra: str) -> dict:
        res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path),
                                        "--init", str(src_ckpt), "--dry-run", *extra])
        assert res.exit_code == 0, res.output
        return yaml.safe_load(res.output)

    plain = dry()  # no preset: augment.kimg would be 500, train.ema_rampup 0.05
    assert plain["augment"]["kimg"] == 100 and plain["train"]["ema_rampup"] is None
    kept = dry("--set", "augment.kimg=500", "--set", "train.ema_rampup=0.05")
    assert kept["augment"]["kimg"] == 500 and kept["train"]["ema_rampup"] == 0.05
    preset = dry("--config", str(DEMO))  # the demo preset says ema_rampup 0.05: a preset is not explicit
    assert preset["train"]["ema_rampup"] is None and preset["network"]["channel_base"] == 256
    scratch = load_run_config(None, [])
    assert (scratch.augment.kimg, scratch.train.ema_rampup) == (500, 0.05)  # what the conventions replace


def test_a_network_key_that_contradicts_src_names_both_values(src_ckpt, prepared_archive, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(out), "--config",
                                    str(DEMO), "--init", str(src_ckpt), "--set", "network.channel_base=512",
                                    "--set", "network.z_dim=16"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "network.channel_base=512 (given) vs 256 (SRC)" in res.output and "z_dim" not in res.output
    assert not out.exists()
    with pytest.raises(UserError, match=r"network.w_dim=32 \(given\) vs 16 \(SRC\)"):
        prepare(_cfg(prepared_archive, f"train.init={json.dumps(str(src_ckpt))}", "network.w_dim=32"), 1,
                explicit=["network.w_dim"])
    # The same value from a preset is not a contradiction: the network comes from SRC.
    cfg, _, _ = prepare(_cfg(prepared_archive, f"train.init={json.dumps(str(src_ckpt))}", "network.w_dim=32"), 1)
    assert cfg.network.w_dim == 16


def test_a_requeued_init_job_with_a_preset_resumes_with_the_init_network_and_conventions(prepared_archive,
                                                                                         tmp_path):
    """One job script for the first submission and every requeue: `--init SRC --config PRESET
    --resume auto`. The resume takes SRC's network and the transfer settings from the checkpoint,
    not the preset's (z_dim 32, ema_rampup 0.05, augment.kimg 100 in demo.yaml)."""
    src = shared_fixture("sg2a-tiny-uncond.pkl")
    out = tmp_path / "runs"
    args = ["train", "--data", str(prepared_archive), "--outdir", str(out), "--config", str(DEMO), "--init",
            str(src), "--resume", "auto", "--batch", "8", "--no-progress", "--set", "train.grid=[2,2]",
            "--set", "augment.kimg=250"]
    res = CliRunner().invoke(main, args + ["--kimg", "0.008"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, args + ["--kimg", "0.016"])
    assert res.exit_code == 0, res.output
    first, second = sorted(out.iterdir())
    assert second.name.endswith("-resume") and "init from" not in (second / "log.txt").read_text()
    cfg = yaml.safe_load((second / "config.yaml").read_text())
    assert cfg["network"]["z_dim"] == 64 and cfg["train"]["ema_rampup"] is None
    assert cfg["augment"]["kimg"] == 250  # given explicitly both times
