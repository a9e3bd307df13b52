"""Seconds per training step of the full-size StyleGAN2-ADA networks, per phase and amortized.

    python benchmarks/train_speed.py --res 64 --batch 8 --device cpu

Builds the parameter-parity networks (z = w = 512, 2 mapping layers, channel_base 16384,
channel_max 512, unconditional RGB; fp32 on CPU), runs each phase of
:meth:`gan.loss.StyleGAN2Loss.accumulate_gradients` plus its Adam step on random
"reals" (no data loading, no augmentation), and reports the median of ``--repeats``
timings after ``--warmup`` untimed rounds. Lazy regularization amortizes as
``Gmain + Dmain + Greg / 4 + Dreg / 16`` (the published intervals). The last line is
exactly::

    train_speed git=<sha> res=<res> batch=<batch> amortized_step_s=<float> images_per_s=<float> peak_rss_mb=<int>

Reference: the published implementation's reference path on a 2-core machine
takes Gmain 4.8 s, Greg 4.4 s, Dmain 4.2 s, Dreg 5.5 s, amortized ~10.5 s at res 64,
batch 8; the goal is at most 7 s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.loss import LossConfig, StepRandom, StyleGAN2Loss, lazy_adam, nan_to_num_grads  # noqa: E402
from gan.networks import NetworkConfig, build_discriminator, build_generator  # noqa: E402
from _common import git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    net = NetworkConfig(img_resolution=args.res)  # the full-size parity configuration
    G = build_generator(net).train().requires_grad_(False).to(device)
    D = build_discriminator(net).train().requires_grad_(False).to(device)
    lc = LossConfig(r1_gamma=0.0002 * args.res ** 2 / args.batch)
    loss = StyleGAN2Loss(G, D, lc, augment_pipe=None, device=device)
    G_opt = lazy_adam(G.parameters(), 0.0025, (0.0, 0.99), 1e-8, lc.pl_interval)
    D_opt = lazy_adam(D.parameters(), 0.0025, (0.0, 0.99), 1e-8, lc.r1_interval)
    phases = [("Gmain", G, G_opt, 1), ("Greg", G, G_opt, lc.pl_interval), ("Dmain", D, D_opt, 1),
              ("Dreg", D, D_opt, lc.r1_interval)]
    real = torch.rand([args.batch, 3, args.res, args.res], generator=torch.Generator().manual_seed(1)) * 2 - 1
    real = real.to(device)
    real_c = torch.zeros([args.batch, 0], device=device)
    label_table = torch.zeros([1, 0], device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name, *_ in phases}
    for it in range(args.warmup + args.repeats):
        for name, module, opt, gain in phases:
            sync()
            t0 = time.perf_counter()
            module.requires_grad_(True)
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(name, real, real_c, label_table, StepRandom(0, it * args.batch, name, device),
                                      args.batch, gain=gain)
            module.requires_grad_(False)
            nan_to_num_grads(module)
            opt.step()
            sync()
            if it >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    med = {name: statistics.median(v) for name, v in times.items()}
    amortized = med["Gmain"] + med["Dmain"] + med["Greg"] / lc.pl_interval + med["Dreg"] / lc.r1_interval
    peak_rss_mb = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"# torch {torch.__version__}, {dev}; G {sum(p.numel() for p in G.parameters()):,} / "
          f"D {sum(p.numel() for p in D.parameters()):,} parameters; median of {args.repeats} after {args.warmup} warm-up")
    for name in med:
        print(f"# {name:6s} {med[name]:.3f} s  (all: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"train_speed git={git_sha()} res={args.res} batch={args.batch} amortized_step_s={amortized:.4f} "
          f"images_per_s={args.batch / amortized:.3f} peak_rss_mb={peak_rss_mb}")


if __name__ == "__main__":
    main()
