"""Ours against the published StyleGAN2-ADA, side by side, on the same machine and configuration.

    python benchmarks/vs_stylegan2ada.py --sg2a .cache/sg2a                  # CPU: one amortized step
    python benchmarks/vs_stylegan2ada.py --sg2a .cache/sg2a --device cuda    # GPU: both training loops

``--sg2a DIR`` holds the ``torch_utils``, ``dnnlib`` and ``training`` folders of
NVlabs/stylegan2-ada-pytorch, which the user provides (its licence is non-commercial: it
is read and run, never copied into this repository)::

    git --git-dir=<bare clone> archive HEAD torch_utils dnnlib training | tar -x -C .cache/sg2a

**CPU** (the published training loop needs CUDA): one amortized step
``Gmain + Dmain + Greg/4 + Dreg/16`` of their networks and loss against our trainer's
phases (:func:`gan.train._run_phase`: loss, gradient clean-up and Adam step), at res 64,
batch 8, no augmentation, fp32, 2 threads, median of 5 after a warm-up, each side in its own
process, on the same reals (same seed). Both use the published 'auto' networks (z = w = 512,
2 mapping layers, channel_base 16384, channel_max 512, conv clamp 256, minibatch-std group
4), fp32 everywhere (their fp16 blocks would run in fp16 on the CPU, 70x slower).

**GPU**: the published ``training_loop`` (unconditional, 'auto' networks at the archive's
resolution, batch 16, ``--aug fixed --p 0.3`` with the ``bgc`` pipe, metrics and snapshots
off, a tick every kimg, TF32 as ``--tf32`` says) against ``mtf-gan train`` with the same
settings, in separate processes, alternating ours -> theirs -> ours; the first two ticks of
every run are dropped and the medians of the rest compared. Each side must prove that it ran
its compiled kernels: the published plugins' ``_init()`` return True (the published code
falls back to its slow reference ops in silence when its build fails) and our ``cuda``
extension is loaded and passed its self-tests. Without ``--data`` a synthetic 256-px
archive is drawn and prepared first.

Run-time patches to the published code, each printed when applied:

* ``distutils`` (imported by ``dnnlib.util`` for ``strtobool``) is gone in Python 3.12:
  a stand-in ``distutils.util`` module with our own ``strtobool``;
* ``psutil`` (memory in the tick line), ``requests`` (``dnnlib.util``'s downloads), ``legacy`` and ``metrics.metric_main`` (resume and
  metrics, both unused here) are stood in for when absent;
* ``conv2d_gradfix`` supports torch 1.7-1.9 only and warns on every call on newer torch
  before falling back to ``F.conv2d``: the warning is silenced (the fall-back is what runs);
* ``grid_sample_gradfix`` (GPU only): its custom op, which gives ``grid_sample`` a double
  backward for R1 through the augmentations, is refused on torch >= 1.10 and its backward
  calls ``aten::grid_sampler_2d_backward`` with the old signature; it is enabled with that
  call updated (``output_mask`` added). Without it R1 with p > 0 fails on torch 2.11's CUDA.

The last line is::

    vs_sg2a device=<name> res=<res> batch=<batch> ours_s_per_kimg=<s> sg2a_s_per_kimg=<s> ratio=<sg2a / ours>

(on the CPU the seconds per kimg are the amortized step times 1000 / batch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
INTERVALS = {"Gmain": 1, "Greg": 4, "Dmain": 1, "Dreg": 16}  # published lazy-regularization intervals


# ---------------------------------------------------------------------------- the published code


def import_published(sg2a: Path, gpu: bool) -> list[str]:
    """Put ``sg2a`` on ``sys.path``, apply the run-time patches it needs and return one line per patch."""
    for sub in ("torch_utils", "dnnlib", "training"):
        if not (sg2a / sub).is_dir():
            sys.exit(f"--sg2a {sg2a}: no {sub}/ folder there; extract the torch_utils, dnnlib and training "
                     "folders of NVlabs/stylegan2-ada-pytorch into it (see this script's docstring)")
    sys.path.insert(0, str(sg2a))
    patches = []
    try:
        import distutils.util  # noqa: F401
    except ImportError:
        mod = types.ModuleType("distutils.util")

        def strtobool(val: str) -> int:
            v = val.lower()
            if v in ("y", "yes", "t", "true", "on", "1"):
                return 1
            if v in ("n", "no", "f", "false", "off", "0"):
                return 0
            raise ValueError(f"invalid truth value {val!r}")

        mod.strtobool = strtobool
        pkg = types.ModuleType("distutils")
        pkg.util = mod
        sys.modules.update({"distutils": pkg, "distutils.util": mod})
        patches.append("distutils.util: stand-in module with strtobool (Python 3.12 has no distutils)")
    patches += _stand_ins()
    import torch
    from torch_utils.ops import conv2d_gradfix

    def no_custom_conv(input):  # what the published function returns on torch >= 1.10, without the warning
        return False

    conv2d_gradfix._should_use_custom_op = no_custom_conv
    patches.append(f"torch_utils.ops.conv2d_gradfix: custom op off without a warning per call (it supports "
                   f"torch 1.7-1.9; torch {torch.__version__} takes F.conv2d, as the published code does)")
    if gpu:
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            sys.exit("the published augment pipe (training/augment.py) imports scipy, which is not installed: "
                     "pip install scipy (it is not a dependency of mtf-faces)")
        patches.append(_patch_grid_sample())
    return patches


def _stand_ins() -> list[str]:
    """Modules the published training loop imports but this benchmark never uses."""
    import importlib.util

    patches = []
    if importlib.util.find_spec("psutil") is None:
        import resource

        class _Mem:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        class _Process:
            def __init__(self, pid=None):
                pass

            def memory_info(self):
                return _Mem()

        sys.modules["psutil"] = types.SimpleNamespace(Process=_Process)
        patches.append("psutil: stand-in (peak RSS from resource) for the tick line's memory field")
    if importlib.util.find_spec("requests") is None:
        sys.modules["requests"] = types.ModuleType("requests")
        patches.append("requests: empty stand-in module (dnnlib.util downloads URLs with it; nothing is downloaded)")
    if "legacy" not in sys.modules and importlib.util.find_spec("legacy") is None:
        sys.modules["legacy"] = types.ModuleType("legacy")
        patches.append("legacy: empty stand-in module (only resume_pkl uses it; no resume here)")
    if importlib.util.find_spec("metrics") is None:
        pkg, mm = types.ModuleType("metrics"), types.ModuleType("metrics.metric_main")
        pkg.metric_main = mm
        sys.modules.update({"metrics": pkg, "metrics.metric_main": mm})
        patches.append("metrics.metric_main: empty stand-in module (metrics are off)")
    return patches


def _patch_grid_sample() -> str:
    import torch
    from torch_utils.ops import grid_sample_gradfix as gsg

    def forward(ctx, grad_output, input, grid):  # aten's backward with today's signature (output_mask added)
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(grad_output, input, grid, 0, 0, False,
                                                                        [True, True])
        ctx.save_for_backward(grid)
        return grad_input, grad_grid

    gsg._GridSample2dBackward.forward = staticmethod(forward)
    gsg._should_use_custom_op = lambda: gsg.enabled
    return ("torch_utils.ops.grid_sample_gradfix: custom op enabled on torch >= 1.10 with "
            "aten::grid_sampler_2d_backward called with output_mask (R1 through the augmentations needs "
            "its double backward)")


def published_kernels_ok() -> dict[str, bool]:
    """Whether the published plugins built and loaded (their ``_init()``; it caches its answer)."""
    from torch_utils.ops import bias_act, upfirdn2d

    return {"bias_act": bool(bias_act._init()), "upfirdn2d": bool(upfirdn2d._init())}


def ours_kernels_ok() -> dict[str, bool]:
    """Whether our ``cuda`` extension is loaded in this process and every op passed its self-test."""
    from gan.ops import _build

    verified = {getattr(k[1], "__module__", str(k[1])).rsplit(".", 1)[-1]: v is None
                for k, v in _build._verified.items() if k[0] == "cuda"}
    return {"cuda_extension": "cuda" in _build._plugins and _build.failure("cuda") is None, **verified}


# ---------------------------------------------------------------------------- CPU: one amortized step


def _reals(res: int, batch: int):
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.rand([batch, 3, res, res], generator=g) * 2 - 1  # [b, 3, R, R] in [-1, 1]


def _time_phases(run_one, repeats: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    for it in range(warmup + repeats):
        for phase in PHASES:
            t0 = time.perf_counter()
            run_one(phase, it)
            if it >= warmup:
                times[phase].append(time.perf_counter() - t0)
    return times


def cpu_ours(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from gan.run_config import RunConfig, batch_plans, load_run_config
    from gan.train import _run_phase, build

    cfg: RunConfig = load_run_config(None, [
        f"network.img_resolution={args.res}", "network.img_channels=3", "network.c_dim=0",
        "network.channel_base=16384", "network.channel_max=512", "network.mapping_layers=2",
        "network.num_fp16_res=0", "network.conv_clamp=256", "network.mbstd_group_size=4",
        f"train.batch={args.batch}", f"loss.r1_gamma={0.0002 * args.res ** 2 / args.batch}",
        "augment.mode=none", "train.device=cpu"])
    run = build(cfg, torch.device("cpu"))
    main_plan, greg_plan = batch_plans(cfg, 1, 0)
    real = _reals(args.res, args.batch)
    real_c = torch.zeros([args.batch, 0])
    label_table = torch.zeros([1, 0])
    phases = {ph.name: ph for ph in run.phases}
    first_bad = torch.full([], -1, dtype=torch.int64)

    def run_one(phase: str, it: int) -> None:
        ph = phases[phase]
        _run_phase(ph, run.loss, greg_plan if phase == "Greg" else main_plan, real, real_c, label_table, 0,
                   it * args.batch, torch.device("cpu"), args.batch, run.ada, first_bad)

    times = _time_phases(run_one, args.repeats, args.warmup)
    return {"times": times, "params": [sum(p.numel() for p in m.parameters()) for m in (run.G, run.D)]}


def cpu_published(args) -> dict:
    import torch

    patches = import_published(Path(args.sg2a), gpu=False)
    from training.loss import StyleGAN2Loss
    from training.networks import Discriminator, Generator

    torch.manual_seed(0)
    common = dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=256)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=args.res, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=common).train().requires_grad_(False)
    D = Discriminator(c_dim=0, img_resolution=args.res, img_channels=3, epilogue_kwargs=dict(mbstd_group_size=4),
                      **common).train().requires_grad_(False)
    device = torch.device("cpu")
    loss = StyleGAN2Loss(device, G.mapping, G.synthesis, D, r1_gamma=0.0002 * args.res ** 2 / args.batch)
    opts = {}
    for name, module, interval in (("G", G, 4), ("D", D, 16)):  # the training loop's lazy-regularization Adam
        r = interval / (interval + 1)
        opts[name] = torch.optim.Adam(module.parameters(), lr=0.0025 * r, betas=(0 ** r, 0.99 ** r), eps=1e-8)
    real = _reals(args.res, args.batch)
    real_c = torch.zeros([args.batch, 0])
    zg = torch.Generator().manual_seed(2)

    def run_one(phase: str, it: int) -> None:  # the published training loop's body for one phase
        module, opt = (G, opts["G"]) if phase[0] == "G" else (D, opts["D"])
        gen_z = torch.randn([args.batch, 512], generator=zg)
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        loss.accumulate_gradients(phase=phase, real_img=real, real_c=real_c, gen_z=gen_z, gen_c=real_c,
                                  sync=True, gain=INTERVALS[phase])
        module.requires_grad_(False)
        for param in module.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        opt.step()

    times = _time_phases(run_one, args.repeats, args.warmup)
    return {"times": times, "params": [sum(p.numel() for p in m.parameters()) for m in (G, D)], "patches": patches}


def amortized(times: dict[str, list[float]]) -> tuple[float, dict[str, float]]:
    med = {p: statistics.median(v) for p, v in times.items()}
    return sum(med[p] / INTERVALS[p] for p in PHASES), med


def run_cpu(args) -> None:
    results: dict[str, dict] = {}
    for _ in range(args.rounds):  # alternate the sides, so a drift of the machine's speed hits both
        for side in ("ours", "sg2a"):
            r = _worker(args, f"cpu-{side}")
            if side in results:
                for p in PHASES:
                    results[side]["times"][p] += r["times"][p]
            else:
                results[side] = r
    for line in results["sg2a"].get("patches", []):
        print(f"# patch: {line}")
    print(f"# CPU, {args.threads} threads, res {args.res}, batch {args.batch}, fp32, no augmentation; "
          f"median of {args.rounds * args.repeats} ({args.rounds} alternating round(s) of {args.repeats}, each "
          f"after {args.warmup} warm-up); G/D parameters: ours {results['ours']['params']}, published "
          f"{results['sg2a']['params']}")
    step = {}
    for side, res in results.items():
        step[side], med = amortized(res["times"])
        print(f"# {side:5s} " + "  ".join(f"{p} {med[p]:.3f} s" for p in PHASES) + f"  amortized {step[side]:.3f} s")
    ours, theirs = (step[s] * 1000 / args.batch for s in ("ours", "sg2a"))
    print(f"vs_sg2a device=cpu-{args.threads}-threads mode=cpu-step res={args.res} batch={args.batch} "
          f"ours_s_per_kimg={ours:.1f} sg2a_s_per_kimg={theirs:.1f} ratio={theirs / ours:.3f}")


# ---------------------------------------------------------------------------- GPU: the training loops


def gpu_published(args) -> dict:
    import torch

    patches = import_published(Path(args.sg2a), gpu=True)
    import dnnlib
    from training.training_loop import training_loop

    res, batch = args.res, args.batch
    common = dict(channel_base=16384 if res < 512 else 32768, channel_max=512, num_fp16_res=4, conv_clamp=256)
    bgc = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
               lumaflip=1, hue=1, saturation=1)
    kw = dict(
        run_dir=args.run_dir,
        training_set_kwargs=dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path=args.data,
                                            use_labels=False, max_size=None, xflip=False, resolution=res),
        data_loader_kwargs=dnnlib.EasyDict(pin_memory=True, num_workers=3, prefetch_factor=2),
        G_kwargs=dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=512, w_dim=512,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=2), synthesis_kwargs=dnnlib.EasyDict(common)),
        D_kwargs=dnnlib.EasyDict(class_name="training.networks.Discriminator", block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(),
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=min(batch, 4)), **common),
        G_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.0025, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dnnlib.EasyDict(class_name="training.loss.StyleGAN2Loss", r1_gamma=0.0002 * res ** 2 / batch),
        augment_kwargs=dnnlib.EasyDict(class_name="training.augment.AugmentPipe", **bgc),
        augment_p=args.p, ada_target=None, metrics=[], random_seed=0, num_gpus=1, rank=0,
        batch_size=batch, batch_gpu=batch, ema_kimg=batch * 10 / 32, ema_rampup=0.05,
        total_kimg=args.warmup_ticks - 1 + args.ticks, kimg_per_tick=1, image_snapshot_ticks=None,
        network_snapshot_ticks=None, cudnn_benchmark=True, allow_tf32=args.tf32)
    training_loop(**kw)
    ticks = _ticks(Path(args.run_dir) / "stats.jsonl")
    return {"ticks": ticks, "kernels": published_kernels_ok(), "patches": patches,
            "device": torch.cuda.get_device_name()}


def gpu_ours(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from gan.cli import main as cli

    out = Path(args.run_dir)
    cli.main(["train", "--data", args.data, "--outdir", str(out), "--config", "mtf256", "--no-cond",
              "--kimg", str(args.warmup_ticks + args.ticks), "--batch", str(args.batch), "--no-progress",
              "--set", "augment.mode=fixed", "--set", f"augment.p={args.p}", "--set", "train.tick_kimg=1",
              "--set", "train.snap_kimg=100000", "--set", f"train.tf32={str(args.tf32).lower()}",
              "--set", "data.workers=3"], standalone_mode=False)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return {"ticks": _ticks(run_dir / "stats.jsonl"), "kernels": ours_kernels_ok(),
            "device": torch.cuda.get_device_name()}


def _ticks(stats: Path) -> list[float]:
    rows = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    return [r["Timing/sec_per_kimg"]["mean"] for r in rows if "Timing/sec_per_kimg" in r]


def _synthetic_archive(tmp: Path, res: int, n: int) -> str:
    src, dest = tmp / "faces", tmp / f"synthetic{res}.zip"
    mtf = [sys.executable, "-m", "gan.cli"]
    subprocess.run(mtf + ["synth", "--out", str(src), "--layout", "noncurated", "--people", str(max(n // 8, 1)),
                          "--per-person", "8", "--resolution", str(res), "--no-progress"], check=True, cwd=REPO)
    subprocess.run(mtf + ["prepare", str(src), str(dest), "-r", str(res), "-j", "4"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    return str(dest)


def run_gpu(args) -> None:
    with tempfile.TemporaryDirectory(prefix="vs_sg2a-") as tmp:
        if args.data is None:
            args.data = _synthetic_archive(Path(tmp), args.res, args.images)
        runs = []
        for i, side in enumerate(("ours", "sg2a", "ours")):
            args.run_dir = str(Path(tmp) / f"{i}-{side}")
            os.makedirs(args.run_dir)
            runs.append((side, _worker(args, f"gpu-{side}")))
    for side, r in runs:
        print(f"# {side}: kernels {r['kernels']}; s/kimg per tick {', '.join(f'{t:.2f}' for t in r['ticks'])}")
        if not all(r["kernels"].values()):
            sys.exit(f"vs_sg2a: {side} did not run its compiled kernels: {r['kernels']}")
    for line in next(r for s, r in runs if s == "sg2a")["patches"]:
        print(f"# patch: {line}")
    med = {}
    for side in ("ours", "sg2a"):
        kept = [t for s, r in runs if s == side for t in r["ticks"][args.warmup_ticks:]]
        if not kept:
            sys.exit(f"vs_sg2a: {side} reported no tick after the {args.warmup_ticks} warm-up ticks")
        med[side] = statistics.median(kept)
    name = runs[0][1]["device"].replace(" ", "_")
    sys.path.insert(0, str(REPO))
    from gan.ops.upfirdn2d import tiled_enabled

    kernel = "tiled" if tiled_enabled() else "per-pixel"
    print(f"vs_sg2a device={name} res={args.res} batch={args.batch} upfirdn2d={kernel} "
          f"ours_s_per_kimg={med['ours']:.3f} "
          f"sg2a_s_per_kimg={med['sg2a']:.3f} ratio={med['sg2a'] / med['ours']:.3f}")


# ---------------------------------------------------------------------------- processes


def _worker(args, side: str) -> dict:
    """Run one side in a fresh process (its own allocator, threads and compiled extensions); its
    output passes through, its result comes back as JSON in a file."""
    with tempfile.TemporaryDirectory(prefix="vs_sg2a-worker-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, *_passed_on(sys.argv[1:]), "--sg2a", args.sg2a, "--worker", side,
               "--result", str(result)]
        if getattr(args, "run_dir", None):
            cmd += ["--run-dir", args.run_dir]
        if args.data is not None:
            cmd += ["--data", args.data]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, env=env, cwd=REPO)
        if proc.returncode != 0 or not result.is_file():
            sys.exit(f"vs_sg2a: the {side} run failed (exit status {proc.returncode}); its output is above")
        return json.loads(result.read_text())


def _passed_on(argv: list[str]) -> list[str]:
    """The command line without ``--sg2a`` and ``--data`` (passed on as absolute paths)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--sg2a", "--data"):
            skip = True
        elif not a.startswith(("--sg2a=", "--data=")):
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sg2a", required=True, help="folder with the published torch_utils, dnnlib and training")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--res", type=int, default=None, help="resolution (default: 64 on CPU, 256 on GPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch (default: 8 on CPU, 16 on GPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU mode)")
    ap.add_argument("--repeats", type=int, default=5, help="CPU: timed rounds of the four phases")
    ap.add_argument("--warmup", type=int, default=1, help="CPU: untimed rounds first")
    ap.add_argument("--rounds", type=int, default=1, help="CPU: alternating ours/theirs processes per side")
    ap.add_argument("--data", default=None, help="GPU: a prepared archive (default: a synthetic one)")
    ap.add_argument("--images", type=int, default=512, help="GPU: size of the synthetic archive")
    ap.add_argument("--p", type=float, default=0.3, help="GPU: fixed augmentation probability")
    ap.add_argument("--ticks", type=int, default=4, help="GPU: measured ticks (1 kimg each) per run")
    ap.add_argument("--warmup-ticks", type=int, default=2, help="GPU: ticks dropped at the start of every run")
    ap.add_argument("--tf32", action="store_true", help="GPU: allow TF32 on both sides (off as published)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpu = args.device == "cuda"
    args.sg2a = str(Path(args.sg2a).resolve())  # the workers run in the repository root
    if args.data is not None:
        args.data = str(Path(args.data).resolve())
    args.res = args.res or (256 if gpu else 64)
    args.batch = args.batch or (16 if gpu else 8)
    if args.worker is None:
        (run_gpu if gpu else run_cpu)(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    fn = {"cpu-ours": cpu_ours, "cpu-sg2a": cpu_published, "gpu-ours": gpu_ours, "gpu-sg2a": gpu_published}
    result = fn[args.worker](args)
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
