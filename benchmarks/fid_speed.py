"""Speed of FID: Inception feature extraction (images/s) and a second evaluation with the
real side cached vs the first.

Cases, on ``--device`` (cpu, or cuda when there is one):

* ``extract``: :func:`gan.extractors.extract_features` over ``--n-real`` uint8 images of the
  prepared archive at ``--res`` px (torch-fidelity resizes them to 299 px itself, so the
  source resolution barely matters), batch ``--batch``, after one untimed warm-up batch;
* ``first`` / ``cached``: wall time of ``compute_metrics(real, fake folder, fid+kid)`` with a
  fresh real-feature cache, then the same call again, which extracts only the fakes.

The real Inception file is used when it is in torch's cache (or ``--inception-weights``);
otherwise a random-weight file with the same layers is written
(:func:`gan.extractors.make_random_inception`), so the speed is the same and the metric
values mean nothing (said in the output). The data are synthetic faces.
The last lines are ``fid_speed git=<sha> device=<d> case=<c> ...`` for RESULTS.md. Small
check run:

    .venv/bin/python benchmarks/fid_speed.py --n-real 64 --n-fake 32
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
from _common import REPO, git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

sys.path.insert(0, str(REPO))


@click.command()
@click.option("--n-real", type=int, default=400, show_default=True, help="Real images (prepared synthetic archive).")
@click.option("--n-fake", type=int, default=200, show_default=True, help="Fake images (a folder).")
@click.option("--res", type=int, default=64, show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None)
def main(n_real: int, n_fake: int, res: int, batch: int, device: str, threads: int | None,
         inception_weights: str | None) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from gan import extractors as E
    from gan import metrics as M
    from gan.prepare import prepare
    from gan.util import MissingWeights
    from gan.synthetic import write_synthetic

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            weights = E.resolve_inception_weights(inception_weights)
            note = "real weights"
        except MissingWeights:
            make_random_inception = E.make_random_inception

            weights = make_random_inception(tmp / E.INCEPTION_FILE)
            note = "random weights (speed only; values meaningless)"
        people = max(1, n_real // 20)
        write_synthetic(tmp / "src", layout="noncurated", people=people, per_person=-(-n_real // people),
                        resolution=res, seed=0, progress=False)
        prepare(tmp / "src", tmp / "real.zip", resolution=res, max_images=n_real, progress=False)
        fake = tmp / "fake"
        fake.mkdir()
        rng = np.random.default_rng(1)
        for i in range(n_fake):
            Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(fake / f"{i:05d}.png")

        fe = E.load_inception(weights, device)
        imgs = list(M.iter_real_images(tmp / "real.zip"))
        E.extract_features(imgs[:batch], fe, batch, device)  # warm-up (cuDNN autotune, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        E.extract_features(imgs, fe, batch, device)
        if device == "cuda":
            torch.cuda.synchronize()
        extract_s = time.perf_counter() - t0

        kw = dict(metrics=("fid", "kid"), batch=batch, device=device, inception_weights=weights,
                  cache_dir=tmp / "cache")
        t0 = time.perf_counter()
        first = M.compute_metrics(tmp / "real.zip", fake, **kw)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = M.compute_metrics(tmp / "real.zip", fake, **kw)
        cached_s = time.perf_counter() - t0
        assert abs(first["fid"] - second["fid"]) <= 1e-6 * max(1.0, abs(first["fid"]))

    sha = git_sha()
    print(f"{note}; torch {torch.__version__}, {torch.get_num_threads()} threads, {len(imgs)} real / {n_fake} fake "
          f"at {res} px")
    print(f"fid_speed git={sha} device={device} case=extract images={len(imgs)} batch={batch} "
          f"images_per_s={len(imgs) / extract_s:.2f}")
    print(f"fid_speed git={sha} device={device} case=first n_real={first['n_real']} n_fake={first['n_fake']} "
          f"seconds={first_s:.1f}")
    print(f"fid_speed git={sha} device={device} case=cached n_real={second['n_real']} n_fake={second['n_fake']} "
          f"seconds={cached_s:.1f} speedup={first_s / cached_s:.2f}")


if __name__ == "__main__":
    main()
