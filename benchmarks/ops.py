"""Timing of the ops, ref vs compiled, forward + backward, on StyleGAN2 generator shapes.

Shapes follow the published "auto" configuration (channel_base 16384, channel_max
512) at res 64 and 128 at a small per-step batch: the lrelu bias_act after every
synthesis conv, the linear one of ToRGB, the 4x4 FIR filter after the stride-2
transposed conv of an upsampling layer (``upfirdn2d_filter``), the upsample before a
1x1 conv and of the ToRGB skip, the discriminator's downsample, a plain blur, and the
augment pipe's 12-tap sym6 2x upsample / downsample of an RGB image (separable passes).
Each op prints one line::

    ops git=<sha> op=<name> shape=<...> ref_ms=<f> cpp_ms=<f>                 (--device cpu)
    ops git=<sha> op=<name> shape=<...> dtype=<d> ref_ms=<f> cuda_ms=<f>      (--device cuda)

On CUDA the upfirdn2d lines also time the tiled kernel (``MTF_OPS_CUDA_TILED=1``) next to
the per-pixel one (``cuda_ms``) and give each path's throughput in G outputs/s: the
output pixels of the forward pass plus those of the backward pass (``dx``, the input's
size), per second of forward + backward::

    ops git=<sha> op=<name> shape=<...> dtype=<d> ref_ms=<f> cuda_ms=<f> tiled_ms=<f>
        ref_gout_s=<f> cuda_gout_s=<f> tiled_gout_s=<f>                       (one line)

Use the CPU lines to fill ``AUTO_TABLE`` in ``gan/ops/_build.py``: ``auto`` may pick
``cpp`` only where it is not slower than ``ref``. Medians over ``--reps`` runs after
a warm-up (which also builds the extension).

    python benchmarks/ops.py [--res 64 128] [--batch 4] [--reps 5] [--threads N]
                             [--device cpu|cuda] [--all-acts] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from gan.ops import activation_funcs, bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from gan.ops.upfirdn2d import TILED_ENV
from _common import git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def channels(res: int) -> int:
    return min(16384 // res, 512)


def cases(res_list: list[int], batch: int, all_acts: bool, device: str, dtype: torch.dtype):
    """(op name, input shape, callable(x, impl)) for each generator resolution."""
    f = setup_filter([1, 3, 3, 1], device=torch.device(device))
    sym6 = setup_filter(list(range(1, 13)), device=torch.device(device))  # 12 taps: separable, as augment's sym6
    zeros = lambda n: torch.zeros(n, device=device, dtype=dtype)  # noqa: E731
    out = []
    if all_acts:  # every activation once, at the res-64 layer shape, to fill AUTO_TABLE
        shape = [batch, channels(64), 64, 64]
        for act in activation_funcs:
            out.append((f"bias_act_{act}", shape,
                        lambda x, impl, act=act, b=zeros(shape[1]): bias_act(x, b, act=act, impl=impl)))
    for res in res_list:
        c_hi, c_lo = channels(res // 2), channels(res)
        out += [
            ("bias_act_lrelu", [batch, c_lo, res, res],
             lambda x, impl, b=zeros(c_lo): bias_act(x, b, act="lrelu", clamp=256, impl=impl)),
            ("bias_act_linear_torgb", [batch, 3, res, res],
             lambda x, impl, b=zeros(3): bias_act(x, b, act="linear", clamp=256, impl=impl)),
            # upsampling 3x3 conv: transposed conv output [N, C, 2H+1, 2W+1] -> FIR filter -> [N, C, 2H, 2W]
            ("upfirdn2d_filter", [batch, c_lo, res + 1, res + 1],
             lambda x, impl: upfirdn2d(x, f, padding=[1, 1, 1, 1], gain=4, impl=impl)),
            ("upsample2d_1x1", [batch, c_hi, res // 2, res // 2], lambda x, impl: upsample2d(x, f, impl=impl)),
            ("upsample2d_torgb", [batch, 3, res // 2, res // 2], lambda x, impl: upsample2d(x, f, impl=impl)),
            ("downsample2d_disc", [batch, c_hi, res, res], lambda x, impl: downsample2d(x, f, impl=impl)),
            ("filter2d", [batch, c_lo, res, res], lambda x, impl: filter2d(x, f, impl=impl)),
            # augment (gan/augment.py: _geometric): the padded image up 2x, the warped one down 2x
            ("augment_sym6_up", [batch, 3, res + res // 2, res + res // 2],
             lambda x, impl: upsample2d(x, sym6, up=2, impl=impl)),
            ("augment_sym6_down", [batch, 3, 2 * res + 10, 2 * res + 10],
             lambda x, impl: upfirdn2d(x, sym6, down=2, flip_filter=True, impl=impl)),
        ]
    return out


def is_upfirdn2d(name: str) -> bool:
    return not name.startswith("bias_act")


def outputs_per_step(fn, shape, device: str, dtype: torch.dtype) -> int:
    """Output pixels of one forward (y) and backward (dx: the input's size) of ``fn``."""
    x = torch.zeros(shape, device=device, dtype=dtype)
    return fn(x, "ref").numel() + x.numel()


def time_tiled(fn, shape, reps: int, dtype: torch.dtype, tiled: bool) -> float:
    """:func:`time_fwd_bwd` on CUDA with ``$MTF_OPS_CUDA_TILED`` set to ``tiled``."""
    old = os.environ.get(TILED_ENV)
    os.environ[TILED_ENV] = "1" if tiled else "0"
    try:
        return time_fwd_bwd(fn, shape, "cuda", reps, "cuda", dtype)
    finally:
        if old is None:
            os.environ.pop(TILED_ENV, None)
        else:
            os.environ[TILED_ENV] = old


def time_fwd_bwd(fn, shape, impl: str, reps: int, device: str, dtype: torch.dtype) -> float:
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    y = fn(x, impl)
    dy = torch.randn_like(y)
    y.backward(dy)  # warm-up (and the build, for compiled targets)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for _ in range(reps):
        x.grad = None
        sync()
        t0 = time.perf_counter()
        fn(x, impl).backward(dy)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cpu: ref vs cpp (fp32); cuda: ref vs cuda, per-pixel and tiled (fp32 and fp16)")
    ap.add_argument("--all-acts", action="store_true", help="also time every activation (res-64 shape)")
    ap.add_argument("--quick", action="store_true", help="res 64, batch 1, 2 reps: checks the script runs")
    args = ap.parse_args()
    if args.quick:
        args.res, args.batch, args.reps = [64], 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sha = git_sha()
    print(f"# torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch}, median of {args.reps}, forward+backward")
    if args.device == "cpu":
        for name, shape, fn in cases(args.res, args.batch, args.all_acts, "cpu", torch.float32):
            ref_ms = time_fwd_bwd(fn, shape, "ref", args.reps, "cpu", torch.float32)
            cpp_ms = time_fwd_bwd(fn, shape, "cpp", args.reps, "cpu", torch.float32)
            print(f"ops git={sha} op={name} shape={'x'.join(map(str, shape))} ref_ms={ref_ms:.2f} "
                  f"cpp_ms={cpp_ms:.2f}", flush=True)
        return
    for dtype in (torch.float32, torch.float16):
        for name, shape, fn in cases(args.res, args.batch, args.all_acts, "cuda", dtype):
            ref_ms = time_fwd_bwd(fn, shape, "ref", args.reps, "cuda", dtype)
            line = (f"ops git={sha} op={name} shape={'x'.join(map(str, shape))} dtype={str(dtype).split('.')[-1]} "
                    f"ref_ms={ref_ms:.3f}")
            if not is_upfirdn2d(name):
                cuda_ms = time_fwd_bwd(fn, shape, "cuda", args.reps, "cuda", dtype)
                print(f"{line} cuda_ms={cuda_ms:.3f}", flush=True)
                continue
            cuda_ms = time_tiled(fn, shape, args.reps, dtype, tiled=False)
            tiled_ms = time_tiled(fn, shape, args.reps, dtype, tiled=True)
            gout = outputs_per_step(fn, shape, "cuda", dtype) / 1e9  # G outputs per forward + backward
            print(f"{line} cuda_ms={cuda_ms:.3f} tiled_ms={tiled_ms:.3f} ref_gout_s={gout / ref_ms * 1e3:.1f} "
                  f"cuda_gout_s={gout / cuda_ms * 1e3:.1f} tiled_gout_s={gout / tiled_ms * 1e3:.1f}", flush=True)


if __name__ == "__main__":
    main()
