"""Seconds per training step of the full-size StyleGAN2-ADA networks, per phase and amortized,
and what a step costs in operators, kernel launches and host-device syncs.

    python benchmarks/train_speed.py --res 64 --batch 8 --device cpu            # timing
    python benchmarks/train_speed.py --res 64 --batch 8 --device cpu --counts   # operators per phase
    python benchmarks/train_speed.py --res 256 --batch 16 --device cuda --augment-p 0.3 --counts --syncs

Builds the trainer's run (:func:`gan.train.build`: the parameter-parity networks, z = w = 512,
2 mapping layers, channel_base 16384, channel_max 512, unconditional RGB; fp32 on CPU, fp16 in
the top 4 resolutions on CUDA; the lazy Adam optimizers) and runs each phase the way the
training loop does (:func:`gan.train._run_phase`: loss, gradient clean-up, Adam step) on
random "reals" (no data loading; augmentation only with ``--augment-p``). Reports the median of
``--repeats`` timings after ``--warmup`` untimed rounds. Lazy regularization amortizes as
``Gmain + Dmain + Greg / 4 + Dreg / 16`` (the published intervals). The last line is exactly::

    train_speed git=<sha> res=<res> batch=<batch> amortized_step_s=<float> images_per_s=<float> peak_rss_mb=<int>

``--counts``: the number of *top-level* operators of each phase under the torch profiler
(events with no parent: the operators Python calls plus one per autograd node the backward
runs), and on CUDA the kernel launches (``cudaLaunchKernel`` and friends) and the phase's
total kernel time against its wall time. Operators and launches are what costs CPU time once
the kernels are fast (issue 15); ``tests/gan/test_speed_counts.py`` holds
them for a tiny network so they cannot silently regrow.

``--syncs`` (CUDA): whole training steps (the phases due at that step, the EMA update, ADA's
counter, the loss reporting to an open :class:`gan.monitor.Monitor`) under
``torch.cuda.set_sync_debug_mode('warn')``: 16 of them (one full lazy-R1 cycle, no tick, one
fold of the monitor's reports) after 56 warm-up steps; every synchronizing call is counted
with where it came from. A steady-state step should make none.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan import monitor  # noqa: E402
from gan.monitor import peak_rss_mb  # noqa: E402
from gan.ops.upfirdn2d import tiled_enabled  # noqa: E402
from gan.run_config import batch_plans, load_run_config  # noqa: E402
from gan.train import _run_phase, build, update_ema  # noqa: E402

PHASE_INTERVAL_KEYS = {"Greg": "pl_interval", "Dreg": "r1_interval"}


class Bench:
    """A trainer's run on random reals, stepped phase by phase as the training loop does."""

    def __init__(self, res: int, batch: int, device: torch.device, augment_p: float = 0.0,
                 overrides: tuple[str, ...] = ()):
        aug = ["augment.mode=fixed", f"augment.p={augment_p}"] if augment_p > 0 else ["augment.mode=none"]
        self.cfg = load_run_config(None, [f"network.img_resolution={res}", f"train.batch={batch}",
                                          f"loss.r1_gamma={0.0002 * res ** 2 / batch}", f"train.device={device.type}",
                                          *aug, *overrides])
        self.device, self.batch = device, batch
        self.run = build(self.cfg, device)
        self.main_plan, self.greg_plan = batch_plans(self.cfg, 1, 0)
        g = torch.Generator().manual_seed(1)
        reals = torch.randint(0, 256, [batch, self.cfg.network.img_channels, res, res], generator=g, dtype=torch.uint8)
        self.reals_u8 = reals.pin_memory() if device.type == "cuda" else reals  # as the DataLoader hands them over
        self.real_c = torch.zeros([batch, 0], device=device)
        self.label_table = torch.zeros([1, 0], device=device)
        self.first_bad = torch.full([], -1, dtype=torch.int64, device=device)
        self.phases = {ph.name: ph for ph in self.run.phases}

    def reals(self) -> torch.Tensor:
        return self.reals_u8.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1  # [b, C, R, R]

    def phase(self, name: str, real: torch.Tensor) -> None:
        ph, run = self.phases[name], self.run
        plan = self.greg_plan if name == "Greg" else self.main_plan
        _run_phase(ph, run.loss, plan, real, self.real_c, self.label_table, self.cfg.train.seed, run.cur_nimg,
                   self.device, self.batch, run.ada, self.first_bad)

    def step(self) -> None:
        """One training step as :func:`gan.train._loop` takes it, without data loading and ticks."""
        run, real = self.run, self.reals()
        for ph in run.phases:
            if run.batch_idx % ph.interval == 0:
                self.phase(ph.name, real)
        update_ema(run.G_ema, run.G, self.cfg.train, run.cur_nimg)
        run.cur_nimg += self.batch
        run.batch_idx += 1
        run.ada.step(self.batch)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def count_phase_ops(bench: Bench, rounds: int = 1) -> dict[str, dict[str, float]]:
    """Per phase, for its last of ``rounds`` calls (the first call of a phase fills caches, later
    ones are steady): ``ops`` (top-level profiler events), ``launches`` (CUDA kernel launches),
    ``wall_ms`` (under the profiler) and ``kernel_ms`` (the GPU time of its kernels; 0 on CPU):
    a phase whose kernel time is far below its wall time is bound by the CPU launching them."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    counts = {}
    for name in bench.phases:
        real = bench.reals()
        for _ in range(rounds - 1):
            bench.phase(name, real)
        bench.sync()
        with torch.profiler.profile(activities=acts) as prof:
            t0 = time.perf_counter()
            bench.phase(name, real)
            bench.sync()
            wall = time.perf_counter() - t0
        events = prof.events()
        top = [e for e in events if e.cpu_parent is None and e.device_type == torch.autograd.DeviceType.CPU
               and not e.is_async and not e.name.startswith(("[memory]", "ProfilerStep"))]
        launches = sum(1 for e in events if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                        "cuLaunchKernelEx"))
        kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
        counts[name] = {"ops": len(top), "launches": launches, "wall_ms": wall * 1e3, "kernel_ms": kernel_us / 1e3}
    return counts


def count_syncs(bench: Bench, steps: int = 16) -> collections.Counter:
    """Synchronizing CUDA calls in ``steps`` whole steps: ``Counter(where -> count)``."""
    seen: collections.Counter = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                bench.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message).lower():
            seen[f"{Path(w.filename).relative_to(REPO) if w.filename.startswith(str(REPO)) else w.filename}"
                 f":{w.lineno}"] += 1
    return seen


def time_phases(bench: Bench, repeats: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in bench.phases}
    for it in range(warmup + repeats):
        real = bench.reals()
        for name in bench.phases:
            bench.sync()
            t0 = time.perf_counter()
            bench.phase(name, real)
            bench.sync()
            if it >= warmup:
                times[name].append(time.perf_counter() - t0)
        bench.run.cur_nimg += bench.batch
    return times


def main() -> None:
    from _common import git_sha  # benchmarks/ is on sys.path when run as a script

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--augment-p", type=float, default=0.0, help="fixed ADA probability (0: no augmentation)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    ap.add_argument("--counts", action="store_true", help="operators (and CUDA launches) per phase")
    ap.add_argument("--syncs", action="store_true", help="CUDA: count syncs over 16 steady-state steps")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a run-config override, e.g. network.num_fp16_res=0")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    bench = Bench(args.res, args.batch, device, args.augment_p, tuple(args.overrides))
    G, D = bench.run.G, bench.run.D
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    kernel = "tiled" if tiled_enabled() else "per-pixel"
    print(f"# torch {torch.__version__}, {dev}; G {sum(p.numel() for p in G.parameters()):,} / "
          f"D {sum(p.numel() for p in D.parameters()):,} parameters; augment p {args.augment_p}; "
          f"upfirdn2d CUDA kernel {kernel if device.type == 'cuda' else 'n/a'}")
    if args.counts:
        for name, c in count_phase_ops(bench, rounds=2).items():
            print(f"train_speed_counts phase={name} top_level_ops={c['ops']} cuda_launches={c['launches']} "
                  f"wall_ms={c['wall_ms']:.1f} kernel_ms={c['kernel_ms']:.1f}")
    if args.syncs:
        if device.type != "cuda":
            sys.exit("--syncs needs --device cuda (CPU tensors never synchronize)")
        with monitor.Monitor(None):  # the loss reports as in training; 56 + 16 steps: one fold inside the 16
            for _ in range(56):
                bench.step()
            seen = count_syncs(bench)
        for where, n in seen.most_common():
            print(f"# sync x{n}: {where}")
        print(f"train_speed_syncs steps=16 syncs={sum(seen.values())}")
    if args.counts or args.syncs:
        return
    times = time_phases(bench, args.repeats, args.warmup)
    med = {name: statistics.median(v) for name, v in times.items()}
    lc = bench.cfg.loss
    amortized = sum(med[n] / (getattr(lc, PHASE_INTERVAL_KEYS[n]) if n in PHASE_INTERVAL_KEYS else 1) for n in med)
    print(f"# median of {args.repeats} after {args.warmup} warm-up")
    for name in med:
        print(f"# {name:6s} {med[name]:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"train_speed git={git_sha()} res={args.res} batch={args.batch} amortized_step_s={amortized:.4f} "
          f"images_per_s={args.batch / amortized:.3f} peak_rss_mb={int(peak_rss_mb())}")


if __name__ == "__main__":
    main()
