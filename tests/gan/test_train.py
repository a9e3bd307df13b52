"""The training loop: it learns, it resumes exactly, it writes a complete run folder, it guards.

One tiny conditional demo run (the demo preset: 4 kimg on the shared 32-px archive, about a minute on one
CPU thread) serves the learning, run-folder and generation tests (the session fixture
``demo_run`` in ``tests/conftest.py``, shared with later issues' tests). The resume tests use an even smaller network and a
few dozen steps.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from gan.checkpoint import list_checkpoints, load_checkpoint, load_generator
from gan.cli import main
from gan.config import from_dict, load_config
from gan.networks import NetworkConfig, build_generator
from gan.images import images_to_uint8
from gan.run_config import RunConfig, load_run_config
from gan.train import TrainingDiverged, train
from gan.util import UserError

from tests._settings import DEMO_GAN_CONFIG as DEMO, DEMO_GAN_KIMG as DEMO_KIMG


# ----------------------------------------------------------------------------
# Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al. 2018, sec. 5).


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), k2, groups=x.shape[1])


def _laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = []
    for _ in range(levels - 1):
        low = _blur(x)[:, :, ::2, ::2]  # [N, C, H/2, W/2]
        out.append(x - _blur(F.interpolate(low, scale_factor=2, mode="nearest")))  # band-pass
        x = low
    return out + [x]


def _patches(x: torch.Tensor, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    N, C, H, W = x.shape
    i = torch.randint(0, N, [n], generator=g)
    y0 = torch.randint(0, H - size + 1, [n], generator=g)
    x0 = torch.randint(0, W - size + 1, [n], generator=g)
    r = torch.arange(size)
    p = x[i[:, None, None], :, (y0[:, None] + r)[:, :, None], (x0[:, None] + r)[:, None, :]]  # [n, s, s, C]
    return p.reshape(n, -1)


def sliced_wasserstein(reals: torch.Tensor, fakes: torch.Tensor, levels: int = 3, patches: int = 4096,
                       size: int = 7, directions: int = 512, seed: int = 0) -> float:
    """Mean over pyramid levels of the SWD between 7x7 patches of uint8 image sets.

    Both sets are normalized with the reals' per-dimension statistics (stricter than
    normalizing each set by its own, which would hide a colour shift).
    """
    g = torch.Generator().manual_seed(seed)
    a, b = reals.float() / 127.5 - 1, fakes.float() / 127.5 - 1
    dists = []
    for la, lb in zip(_laplacian_pyramid(a, levels), _laplacian_pyramid(b, levels)):
        s = min(size, la.shape[-1])
        pa, pb = _patches(la, patches, s, g), _patches(lb, patches, s, g)
        mu, sd = pa.mean(0), pa.std(0) + 1e-8
        pa, pb = (pa - mu) / sd, (pb - mu) / sd
        d = torch.randn(pa.shape[1], directions, generator=g)
        d = d / d.norm(dim=0, keepdim=True)
        dists.append(((pa @ d).sort(0)[0] - (pb @ d).sort(0)[0]).abs().mean().item())
    return float(np.mean(dists))


def _samples(G: torch.nn.Module, labels: torch.Tensor, seed: int = 123) -> torch.Tensor:
    z = torch.randn([labels.shape[0], G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return images_to_uint8(G(z, labels, noise_mode="const"))


def test_sliced_wasserstein_is_zero_for_identical_sets_and_grows_with_noise(prepared_archive):
    from gan.dataset import ImageDataset

    ds = ImageDataset(prepared_archive)
    reals = torch.stack([ds[i][0] for i in range(len(ds))])
    noisy = (reals.float() + torch.randn(reals.shape, generator=torch.Generator().manual_seed(0)) * 40)
    noisy = noisy.clamp(0, 255).to(torch.uint8)
    assert sliced_wasserstein(reals, reals) < 0.05
    assert sliced_wasserstein(reals, noisy) > 0.2


def test_demo_run_learns_the_data(demo_run):
    """SWD of EMA fakes falls clearly below its value at initialization and below that of
    dataset-mean images; fakes keep varying pixel by pixel (no mode collapse)."""
    from gan.dataset import ImageDataset

    ds = ImageDataset(demo_run["archive"], use_labels=True)
    reals = torch.stack([ds[i][0] for i in range(len(ds))])  # [96, 3, 32, 32]
    labels = ds.labels
    mean_imgs = reals.float().mean(0, keepdim=True).round().to(torch.uint8).expand_as(reals)

    G = load_generator(demo_run["checkpoint"])
    state = load_checkpoint(demo_run["checkpoint"])
    torch.manual_seed(state["config"]["train"]["seed"])  # the trainer's initialisation
    G_init = build_generator(from_dict(NetworkConfig, state["config"]["network"])).eval()

    fakes = _samples(G, labels)
    swd_trained = sliced_wasserstein(reals, fakes)
    swd_init = sliced_wasserstein(reals, _samples(G_init, labels))
    swd_mean = sliced_wasserstein(reals, mean_imgs)
    assert swd_trained < 0.75 * swd_init, (swd_trained, swd_init)
    assert swd_trained < 0.75 * swd_mean, (swd_trained, swd_mean)

    spread = fakes.float().std(dim=0).mean().item()  # per-pixel std across samples, uint8 units
    real_spread = reals.float().std(dim=0).mean().item()
    assert spread > 0.25 * real_spread, (spread, real_spread)


def test_run_folder_holds_every_file(demo_run):
    run = demo_run["run_dir"]
    for name in ("config.yaml", "log.txt", "stats.jsonl", "reals.png", "fakes_init.png"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    kimgs = [k for k, _ in list_checkpoints(run)]
    assert kimgs == [1.0, 2.0, 3.0, 4.0]
    for k in ("000001", "000002", "000003", "000004"):
        assert (run / f"fakes-{k}.png").is_file()
    with Image.open(run / "fakes-000004.png") as im:
        assert im.size == (8 * 32, 4 * 32)  # the demo's 8 x 4 grid of 32-px images

    # The saved config reads back as the config that ran (with the data's sizes filled in).
    saved = load_config(RunConfig, run / "config.yaml")
    assert saved.train == demo_run["cfg"].train and saved.loss == demo_run["cfg"].loss
    assert saved.network.img_resolution == 32 and saved.network.c_dim == 2

    lines = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert len(lines) == 20  # a tick every 0.2 kimg
    for key in ("Loss/G/main", "Loss/D/main", "Loss/D/r1", "Loss/G/pl_length", "Progress/kimg",
                "Progress/augment_p", "Timing/sec_per_kimg", "Timing/images_per_s", "Resources/peak_rss_mb"):
        assert key in lines[-1], key
    assert lines[-1]["Progress/kimg"]["mean"] == pytest.approx(DEMO_KIMG)
    assert all(np.isfinite(line["Loss/G/main"]["mean"]) for line in lines)

    log = (run / "log.txt").read_text()
    assert "tick 20 kimg 4.000" in log and "checkpoint-000004.pt" in log


def test_tensorboard_events_hold_scalars_and_fakes(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(demo_run["run_dir"]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"Loss/G/main", "Loss/D/r1", "Progress/kimg", "Timing/sec_per_kimg"} <= set(tags["scalars"])
    assert "Fakes" in tags["images"]
    steps = [e.step for e in acc.Images("Fakes")]
    assert steps == [0, 1000, 2000, 3000, 4000]  # init + every snapshot, stepped by cur_nimg


def test_checkpoint_holds_full_training_state(demo_run):
    state = load_checkpoint(demo_run["checkpoint"])
    assert state["cur_nimg"] == 4000 and state["batch_idx"] == 4000 // 8
    assert set(state) >= {"config", "G", "D", "G_ema", "G_opt", "D_opt", "augment_p", "ada_stats", "pl_mean",
                          "stats", "class_names"}
    assert state["class_names"] == ["Female", "Male"]
    assert state["pl_mean"].item() > 0  # path-length mean is tracked
    assert state["G_opt"]["state"]  # Adam moments were saved
    g_betas = state["G_opt"]["param_groups"][0]["betas"]
    assert g_betas[1] == pytest.approx(0.99 ** (4 / 5))  # lazy-regularization correction (Greg every 4)
    assert state["ada_stats"]["steps"] == 4000 // 8
    assert 0 < state["augment_p"] <= 1  # ADA raised p on a 96-image set


# ----------------------------------------------------------------------------
# Resume.


def _tiny_cfg(archive: Path, kimg: float, seed: int = 0, extra: tuple[str, ...] = ()) -> RunConfig:
    """A very small network and frequent regularization, ADA that moves fast: every piece of
    state that resume must restore changes within a few steps."""
    return load_run_config(DEMO, [
        f"data.path={json.dumps(str(archive))}", "data.cond=true", f"train.kimg={kimg}", f"train.seed={seed}",
        "train.batch=8", "train.tick_kimg=0.032", "train.snap_kimg=0.064", "train.grid=[2,2]",
        "network.channel_base=256", "network.channel_max=16", "network.z_dim=16", "network.w_dim=16",
        "loss.pl_interval=2", "loss.r1_interval=3", "augment.kimg=0.5", *extra,
    ])


def _final_state(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[-1][1])


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a["cur_nimg"] == b["cur_nimg"] and a["batch_idx"] == b["batch_idx"]
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"
    for opt in ("G_opt", "D_opt"):
        for i, s in a[opt]["state"].items():
            for k, v in s.items():
                assert torch.equal(v, b[opt]["state"][i][k]), f"{opt} state {i}.{k} differs"
    assert torch.equal(a["pl_mean"], b["pl_mean"])
    assert a["ada_stats"] == b["ada_stats"] or (
        {k: v for k, v in a["ada_stats"].items() if k != "last_rt"}
        == {k: v for k, v in b["ada_stats"].items() if k != "last_rt"})


def test_resume_from_snapshot_is_bit_identical_and_seed_matters(prepared_archive, tmp_path, one_thread):
    full = tmp_path / "full"
    train(_tiny_cfg(prepared_archive, 0.128), full, progress=False, console=False)

    # Stop at the 0.064-kimg snapshot, then resume through the CLI with --resume latest.
    outdir = tmp_path / "runs"
    first = outdir / "00000-first"
    train(_tiny_cfg(prepared_archive, 0.064), first, progress=False, console=False)
    res = CliRunner().invoke(main, ["train", "--outdir", str(outdir), "--resume", "latest", "--kimg", "0.128",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    resumed = outdir / "00001-mtf-32-cond-batch8-gamma0.0256-resume"
    assert resumed.is_dir(), sorted(p.name for p in outdir.iterdir())
    assert "resumed from" in (resumed / "log.txt").read_text()

    a, b = _final_state(full), _final_state(resumed)
    assert a["cur_nimg"] == 128
    assert a["augment_p"] > 0  # ADA state took part
    _assert_states_equal(a, b)

    other = tmp_path / "seed1"
    train(_tiny_cfg(prepared_archive, 0.128, seed=1), other, progress=False, console=False)
    c = _final_state(other)
    assert not torch.equal(a["G_ema"]["synthesis.block32.conv.weight"], c["G_ema"]["synthesis.block32.conv.weight"])


def test_resume_rejects_a_different_network(prepared_archive, tmp_path, one_thread):
    run = tmp_path / "a"
    train(_tiny_cfg(prepared_archive, 0.016, extra=("train.snap_kimg=0.016",)), run, progress=False, console=False)
    ckpt = list_checkpoints(run)[-1][1]
    cfg = _tiny_cfg(prepared_archive, 0.032, extra=("network.channel_max=8",))
    with pytest.raises(UserError, match=r"channel_max 16 \(checkpoint\) vs 8"):
        train(cfg, tmp_path / "b", resume=ckpt, progress=False, console=False)
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------
# Guards.


def _cfg(archive: Path, *extra: str) -> RunConfig:
    return load_run_config(DEMO, [f"data.path={json.dumps(str(archive))}", *extra])


@pytest.fixture(scope="module")
def odd_archive(tmp_path_factory) -> Path:
    """Eight 24x24 images: not a power of two."""
    path = tmp_path_factory.mktemp("odd") / "odd.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(8):
            im = Image.fromarray(np.full([24, 24, 3], i * 20, np.uint8))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            zf.writestr(f"{i:05d}.png", buf.getvalue())
    return path


@pytest.mark.parametrize("extra, message", [
    (("train.batch=6",), "not divisible by the minibatch-std group size 4"),
    (("train.batch=128",), "has 96 images, fewer than --batch 128"),
    (("train.batch=4", "network.mbstd_group_size=1", "loss.pl_batch_shrink=3"), "not divisible by loss.pl_batch_shrink"),
])
def test_bad_batch_stops_before_anything_is_written(prepared_archive, tmp_path, extra, message):
    run = tmp_path / "run"
    with pytest.raises(UserError, match=message):
        train(_cfg(prepared_archive, *extra), run, progress=False, console=False)
    assert not run.exists()


def test_cond_without_labels_is_a_clear_error(tmp_path, odd_archive, prepared_archive):
    # An unlabelled archive: the prepared one, with its labels dropped.
    unlabelled = tmp_path / "unlabelled.zip"
    with zipfile.ZipFile(prepared_archive) as src, zipfile.ZipFile(unlabelled, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "dataset.json":
                meta = json.loads(data)
                meta["labels"] = None
                data = json.dumps(meta).encode()
            dst.writestr(name, data)
    with pytest.raises(UserError, match="--cond: .* has no labels; prepare it with --labels"):
        train(_cfg(unlabelled, "data.cond=true"), tmp_path / "run", progress=False, console=False)
    assert not (tmp_path / "run").exists()


def test_resolution_not_a_power_of_two_is_a_clear_error(tmp_path, odd_archive):
    with pytest.raises(UserError, match="24x24.*power of two"):
        train(_cfg(odd_archive, "train.batch=8"), tmp_path / "run", progress=False, console=False)
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_at_the_tick_and_keeps_the_last_checkpoint(prepared_archive, tmp_path, monkeypatch,
                                                                         one_thread):
    from gan import loss as loss_mod

    real = loss_mod.StyleGAN2Loss.accumulate_gradients

    def poisoned(self, phase, *args, **kwargs):
        out = real(self, phase, *args, **kwargs)
        rnd = args[3]
        if phase == "Dmain" and rnd.cur_nimg >= 72:  # from step 9 on (kimg 0.072)
            out["Loss/D/main"] = out["Loss/D/main"] * float("nan")
        return out

    monkeypatch.setattr(loss_mod.StyleGAN2Loss, "accumulate_gradients", poisoned)
    run = tmp_path / "run"
    cfg = _tiny_cfg(prepared_archive, 0.256)
    with pytest.raises(TrainingDiverged, match=r"phase Dmain at kimg 0\.072 .*checkpoint-000000\.064\.pt"):
        train(cfg, run, progress=False, console=False)
    assert [k for k, _ in list_checkpoints(run)] == [0.064]  # nothing written after the bad step
    load_checkpoint(list_checkpoints(run)[0][1])


# ----------------------------------------------------------------------------
# Stopping on a signal, --resume auto, --keep, a failing checkpoint write.


def _tiny_cli(archive: Path, outdir: Path, kimg: float, *extra: str) -> list[str]:
    """`mtf-gan train` with the network and schedule of :func:`_tiny_cfg`."""
    sets = ["train.tick_kimg=0.032", "train.snap_kimg=0.064", "train.grid=[2,2]", "network.channel_base=256",
            "network.channel_max=16", "network.z_dim=16", "network.w_dim=16", "loss.pl_interval=2",
            "loss.r1_interval=3", "augment.kimg=0.5"]
    return ["train", "--data", str(archive), "--outdir", str(outdir), "--config", str(DEMO), "--cond", "--batch",
            "8", "--kimg", str(kimg), "--no-progress", *[a for s in sets for a in ("--set", s)], *extra]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(x) for x in text.split()]
    return found


def _signal_at(monkeypatch, cur_nimg: int, signum: int, workers_too: bool = False) -> list[int]:
    """Send ``signum`` to this process (and its data-loader workers) during the step that
    starts at ``cur_nimg``; returns the workers that were signalled."""
    import os

    import gan.train as T

    real, hit = T.update_ema, []

    def update_ema(G_ema, G, t, n):
        if n == cur_nimg and not hit:
            if workers_too:
                hit.extend(_children(os.getpid()))
                for child in hit:
                    os.kill(child, signum)
            os.kill(os.getpid(), signum)
            hit.append(-1)
        return real(G_ema, G, t, n)

    monkeypatch.setattr(T, "update_ema", update_ema)
    return hit


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_sigterm_between_snapshots_stops_with_a_checkpoint_and_resume_is_bit_identical(
        prepared_archive, tmp_path, monkeypatch, one_thread):
    import signal

    full = tmp_path / "full"
    train(_tiny_cfg(prepared_archive, 0.128), full, progress=False, console=False)

    out = tmp_path / "runs"
    hit = _signal_at(monkeypatch, 80, signal.SIGTERM, workers_too=True)  # between the 0.064 and 0.128 snapshots
    res = CliRunner().invoke(main, _tiny_cli(prepared_archive, out, 0.128, "--set", "data.workers=2"))
    assert res.exit_code == 3, res.output  # EXIT_STOPPED: neither done (0) nor an error (1)
    assert len(hit) >= 3, hit  # both data-loader workers were signalled too, and ignored it
    stopped = sorted(out.iterdir())[0]
    assert [p.name for _, p in list_checkpoints(stopped)] == ["checkpoint-000000.064.pt", "checkpoint-000000.088.pt"]
    assert "stopped on SIGTERM at kimg 0.088" in (stopped / "log.txt").read_text()
    assert "--resume latest" in res.output

    monkeypatch.undo()
    res = CliRunner().invoke(main, ["train", "--outdir", str(out), "--resume", "latest", "--no-progress"])
    assert res.exit_code == 0, res.output
    _assert_states_equal(_final_state(full), _final_state(sorted(out.iterdir())[-1]))


def test_resume_auto_starts_fresh_then_continues_and_keep_prunes(prepared_archive, tmp_path, monkeypatch,
                                                                 one_thread):
    import signal

    out = tmp_path / "runs"
    _signal_at(monkeypatch, 40, signal.SIGUSR1)
    res = CliRunner().invoke(main, _tiny_cli(prepared_archive, out, 0.128, "--resume", "auto", "--keep", "1",
                                             "--set", "train.snap_kimg=0.016"))
    assert res.exit_code == 3, res.output
    first = sorted(out.iterdir())[0]
    assert not first.name.endswith("-resume")  # nothing to resume: a fresh run
    # --keep 1: only the newest checkpoint stays (the stop at 0.048 replaced 0.016 and 0.032).
    assert [p.name for _, p in list_checkpoints(first)] == ["checkpoint-000000.048.pt"]
    monkeypatch.undo()
    res = CliRunner().invoke(main, _tiny_cli(prepared_archive, out, 0.064, "--resume", "auto"))
    assert res.exit_code == 0, res.output
    second = sorted(out.iterdir())[-1]
    assert second.name.endswith("-resume") and "resumed from" in (second / "log.txt").read_text()
    assert load_checkpoint(list_checkpoints(second)[-1][1])["cur_nimg"] == 64
    # latest stays an error when there is nothing to resume.
    res = CliRunner().invoke(main, _tiny_cli(prepared_archive, tmp_path / "empty", 0.064, "--resume", "latest"))
    assert res.exit_code == 1 and "--resume auto" in res.output


def test_a_failing_checkpoint_write_keeps_the_previous_one_and_names_the_folder(prepared_archive, tmp_path,
                                                                               monkeypatch, one_thread):
    import errno

    real, calls = torch.save, []

    def save(obj, f, *a, **k):  # the second checkpoint runs out of space half-way
        calls.append(f)
        if len(calls) == 2:
            f.write(b"half a checkpoint")  # checkpoints are written through a file object
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"could not write checkpoint-000000\.128\.pt in .*run \(\[Errno 28\]"):
        train(_tiny_cfg(prepared_archive, 0.192), run_dir, progress=False, console=False)
    assert sorted(p.name for p in run_dir.iterdir() if "checkpoint" in p.name) == ["checkpoint-000000.064.pt"]
    assert load_checkpoint(run_dir / "checkpoint-000000.064.pt")["cur_nimg"] == 64  # still loads


def test_a_signal_during_the_last_step_finishes_the_run_normally(prepared_archive, tmp_path, monkeypatch,
                                                                 one_thread):
    import signal

    _signal_at(monkeypatch, 56, signal.SIGTERM)  # the last step of 0.064 kimg starts at image 56
    res = CliRunner().invoke(main, _tiny_cli(prepared_archive, tmp_path / "runs", 0.064))
    assert res.exit_code == 0 and "done: 0.064 kimg" in res.output, res.output


# ---------------------------------------------------------------------------- fused Adam, flat grads, foreach EMA


def _steps(cfg):
    """A built run and ``step(i)``: the loop body's phases (all of them, every step) on random reals."""
    from gan import train as T
    from gan.run_config import batch_plans

    run = T.build(cfg, torch.device("cpu"))
    main_plan, greg_plan = batch_plans(cfg, 1, 0)
    g = torch.Generator().manual_seed(0)
    res, b = cfg.network.img_resolution, cfg.train.batch
    first_bad = {p.name: torch.full([], -1, dtype=torch.int64) for p in run.phases}
    return run, lambda step: [T._run_phase(ph, run.loss, greg_plan if ph.name == "Greg" else main_plan,
                                           torch.rand([b, 3, res, res], generator=g) * 2 - 1, torch.zeros(b, 0),
                                           torch.zeros(10, 0), 0, step * b, torch.device("cpu"), b, run.ada,
                                           first_bad[ph.name]) for ph in run.phases]


def test_freeze_d_layers_stay_bit_identical_through_fused_adam_and_flat_gradients(one_thread, monkeypatch):
    """As on a GPU: fused Adam (it runs on the CPU too) and gradients cleaned over one flat buffer."""
    from gan import loss as L
    from gan import train as T

    flat = []
    monkeypatch.setattr(T, "nan_to_num_grads", lambda params, all_reduce=None: (
        flat.append(1), L.nan_to_num_grads(params, all_reduce=all_reduce or (lambda t: t))))  # the flat path
    fused_calls, fused_adam = [], torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: (fused_calls.append(1), fused_adam(*a, **k))[1])
    cfg = load_run_config(DEMO, ["network.img_resolution=16", "network.c_dim=0", "train.batch=4",
                                 "train.freeze_d=2", "augment.mode=fixed", "augment.p=0.5"])
    run, step = _steps(cfg)
    for opt in (run.G_opt, run.D_opt):
        opt.param_groups[0].update(fused=True, foreach=None)  # what lazy_adam picks on CUDA
    in_opt = {id(p) for group in run.D_opt.param_groups for p in group["params"]}
    frozen = {n for n, p in run.D.named_parameters() if id(p) not in in_opt}
    assert frozen and all(n.startswith(("block16.from_rgb.", "block16.conv.")) for n in frozen), frozen
    before = {n: p.detach().clone() for n, p in run.D.named_parameters()}
    for i in range(3):
        step(i)
    after = dict(run.D.named_parameters())
    assert len(flat) == 3 * len(run.phases)
    assert all(torch.equal(after[n], before[n]) for n in frozen)
    assert all(after[n].grad is None for n in frozen)  # never required a gradient
    assert any(not torch.equal(after[n], before[n]) for n in before if n not in frozen)  # the rest trained
    assert fused_calls and len(fused_calls) == len(flat)  # every phase's step took the fused kernel


def test_ema_update_with_foreach_kernels_equals_the_per_tensor_formula(one_thread):
    from gan import train as T

    cfg = load_run_config(DEMO, ["network.img_resolution=16"])
    run, step = _steps(cfg)
    step(0)
    G_ema, G = run.G_ema, run.G
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    G.mapping.w_avg.add_(1.0)
    want = copy.deepcopy(G_ema)
    ema_nimg = min(cfg.train.ema_kimg * 1000, 800 * cfg.train.ema_rampup)
    beta = 0.5 ** (cfg.train.batch / max(ema_nimg, 1e-8))
    with torch.no_grad():  # the loop this replaced
        for p_ema, p in zip(want.parameters(), G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(want.buffers(), G.buffers()):
            b_ema.copy_(b)
    T.update_ema(G_ema, G, cfg.train, 800)
    for (n, a), b in zip(G_ema.state_dict().items(), want.state_dict().values()):
        assert torch.equal(a, b), n
    assert 0 < beta < 1
