"""Training throughput (images/s) of ``mtf-gan train`` under torchrun with 1, 2, ... processes.

    python benchmarks/scaling.py --procs 1 2                    # CPU, demo network, 32 px
    python benchmarks/scaling.py --procs 1 --device cuda --res 64 --batch 32 --config configs/gan/mtf64.yaml

Each setting runs the real trainer (``python -m torch.distributed.run --standalone
--nproc_per_node=N -m gan.cli train``) on a synthetic archive (or ``--data``) with the
same *global* batch, so a process computes ``batch / N`` images per step. Throughput is
taken from ``stats.jsonl`` between the end of the first tick and the end of the run
(start-up, the op build and the first steps are excluded). Each setting prints::

    scaling git=<sha> procs=<n> images_per_s=<float>

Expectations from the design: per step, every process runs the four phases on its
share and joins one flattened all-reduce per phase (G or D gradients, fp32), plus a
few small all-reduces for statistics at tick boundaries. On N GPUs with NVLink the
all-reduce of the 256-px networks (G 23.2 M, D 24.0 M parameters, ~95 MB of fp32 gradients per phase) takes a few
ms against ~100 ms of compute per step, so scaling is close to linear while the
per-GPU batch stays >= 4 (the minibatch-std group). On one CPU with C cores, N
processes share the same cores: no gain is expected beyond what one process with C
threads already gets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def _archive(tmp: Path, res: int) -> Path:
    from gan.prepare import prepare
    from gan.synthetic import write_synthetic

    src = tmp / "synth"
    write_synthetic(src, layout="noncurated", people=16, per_person=8, resolution=res, seed=0, progress=False)
    dest = tmp / f"synth-{res}.zip"
    prepare(src, dest, resolution=res, progress=False)
    return dest


def _images_per_s(run_dir: Path) -> float:
    lines = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    if len(lines) < 2:
        raise SystemExit(f"scaling: {run_dir}/stats.jsonl has {len(lines)} tick(s); raise --kimg")
    first, last = lines[0], lines[-1]
    kimg = last["Progress/kimg"]["mean"] - first["Progress/kimg"]["mean"]
    return kimg * 1000 / (last["timestamp"] - first["timestamp"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    ap.add_argument("--config", default=str(REPO / "configs" / "gan" / "demo.yaml"))
    ap.add_argument("--data", default=None, help="prepared archive (default: a synthetic one at --res)")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--kimg", type=float, default=0.8)
    ap.add_argument("--tick", type=float, default=0.16, help="tick length in kimg (the first is not timed)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mtf-scaling-") as tmp_:
        tmp = Path(tmp_)
        data = Path(args.data) if args.data else _archive(tmp, args.res)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        results = {}
        for n in args.procs:
            out = tmp / f"procs{n}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "gan.cli", "train", "--data", str(data), "--outdir", str(out), "--config", args.config,
                   "--batch", str(args.batch), "--kimg", str(args.kimg), "--device", args.device, "--no-progress",
                   "--set", f"train.tick_kimg={args.tick}", "--set", f"train.snap_kimg={args.kimg}",
                   "--set", f"train.threads={args.threads}", "--set", "augment.mode=none"]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
                raise SystemExit(f"scaling: the {n}-process run failed (exit {res.returncode})")
            run_dir = next(p for p in out.iterdir() if p.is_dir())
            results[n] = _images_per_s(run_dir)
            if n == args.procs[-1] and len(results) > 1:
                base = results[args.procs[0]]
                print(f"# {n} vs {args.procs[0]} process(es): x{results[n] / base:.2f}")
            print(f"scaling git={git_sha()} procs={n} images_per_s={results[n]:.3f}", flush=True)


if __name__ == "__main__":
    main()
