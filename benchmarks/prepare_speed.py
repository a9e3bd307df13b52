"""Throughput of ``mtf-gan prepare``: synthetic JPEGs -> training archive, 1 and 2 workers.

Makes ``--num`` synthetic non-curated faces at ``--src-res`` px (JPEG, as non-curated MTF
is) with :func:`gan.synthetic.write_synthetic`, prepares them at ``--res`` px once per
worker count, and checks that every run wrote the same archive. The last lines are one
``prepare_speed git=<sha> workers=<n> images_per_s=<float>`` per run, for RESULTS.md.

    .venv/bin/python benchmarks/prepare_speed.py --num 2000 --src-res 256 --res 128
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from pathlib import Path

import click
from _common import git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


@click.command()
@click.option("--num", type=click.IntRange(min=1), default=2000, show_default=True, help="Synthetic images.")
@click.option("--src-res", type=click.IntRange(16, 256), default=256, show_default=True, help="Source side (px).")
@click.option("--res", type=int, default=128, show_default=True, help="Prepared side (px, a power of two).")
@click.option("--workers", "worker_counts", type=click.IntRange(min=1), multiple=True, default=(1, 2),
              show_default=True, help="Worker counts to time (repeatable).")
def bench(num: int, src_res: int, res: int, worker_counts: tuple[int, ...]) -> None:
    import torch

    from gan.prepare import prepare
    from gan.synthetic import write_synthetic

    torch.set_num_threads(1)
    sha = git_sha()
    people = max(1, math.ceil(num / 20))
    per_person = math.ceil(num / people)
    with tempfile.TemporaryDirectory(prefix="prepare-speed-") as tmp:
        src = Path(tmp) / "src"
        t0 = time.perf_counter()
        info = write_synthetic(src, "noncurated", people, per_person, src_res, seed=0, progress=False)
        click.echo(f"wrote {info['images']} synthetic {src_res}-px JPEGs in {time.perf_counter() - t0:.1f} s")
        lines, digests = [], set()
        for w in worker_counts:
            dest = Path(tmp) / f"out-w{w}.zip"
            t0 = time.perf_counter()
            s = prepare(src, dest, resolution=res, workers=w, max_images=num, progress=False)
            dt = time.perf_counter() - t0
            rate = s.count / dt
            digests.add(hashlib.sha1(dest.read_bytes()).hexdigest())
            click.echo(f"workers={w}: {s.count} images {src_res}->{res} px in {dt:.2f} s = {rate:.1f} images/s")
            lines.append(f"prepare_speed git={sha} workers={w} images_per_s={rate:.2f}")
        if len(digests) != 1:
            raise click.ClickException("the archives differ between worker counts; prepare is not deterministic")
        click.echo("archives identical across worker counts")
        for line in lines:
            click.echo(line)


if __name__ == "__main__":
    bench()
