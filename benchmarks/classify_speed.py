"""Training images/s of the classifiers: our decoded-tensor cache vs ImageFolder decoding JPEGs.

For each model (default ``mobilenet_v3_large`` and ``resnet50``) and loader, trains ``--steps``
batches at ``--size`` px (after ``--warmup`` untimed batches) with the same batch, threads,
workers and optimizer (Adam, the notebook's), counting data loading and the training step:

* ``cache``: :func:`classify.loaders.make_loader` over the ``uint8`` cache (built beforehand
  and timed separately: it is paid once per data set, not per epoch) for the notebook
  recipe: whole batches read from the memory map in the main process (it needs no
  workers, so ``--workers`` does not apply) and resized 256 -> size on the device;
* ``imagefolder``: ``torchvision.datasets.ImageFolder`` with ``Resize(size)`` and
  ``ToTensor()`` (the MTF notebook's pipeline) in a ``DataLoader`` with ``--workers``
  processes, decoding every JPEG every epoch.

On a CPU the model's step dominates, so the gain there comes mostly from the cores the
decoding workers no longer take from the model's threads.

Without ``--data`` it writes a synthetic curated tree of ``--src-res`` px JPEGs (curated MTF
is JPEG). The last lines are one ``classify_speed git=<sha> model=<m> loader=<l>
images_per_s=<f>`` per case, for RESULTS.md, then the cache speed-ups. Small check run:

    .venv/bin/python benchmarks/classify_speed.py --steps 3 --warmup 1 --people 8 --per-person 6
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
from _common import git_sha  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def _time_training(model, loader, prep, device, steps: int, warmup: int) -> tuple[float, int]:
    """Seconds and images for ``steps`` timed batches after ``warmup`` (loader restarted as needed)."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def batches():
        while True:
            yield from loader

    it = batches()
    done, images, t0 = 0, 0, 0.0
    while done < warmup + steps:
        if done == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = next(it)
        x, y = prep(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if done >= warmup:
            images += len(y)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, images


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Curated MTF root [default: a synthetic curated tree of JPEGs].")
@click.option("--task", default="gender", show_default=True)
@click.option("--models", default="mobilenet_v3_large,resnet50", show_default=True)
@click.option("--loaders", default="cache,imagefolder", show_default=True)
@click.option("--size", type=int, default=224, show_default=True, help="Input side (px).")
@click.option("--batch", type=int, default=16, show_default=True, help="Batch size (the notebook's 16).")
@click.option("--steps", type=int, default=20, show_default=True, help="Timed batches per case.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed batches first.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads [default: torch's choice].")
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader workers (both loaders).")
@click.option("--device", default="auto", show_default=True)
@click.option("--people", type=int, default=24, show_default=True, help="Synthetic people.")
@click.option("--per-person", type=int, default=12, show_default=True, help="Synthetic images per person.")
@click.option("--src-res", type=int, default=256, show_default=True, help="Synthetic image side (px).")
def bench(data, task, models, loaders, size, batch, steps, warmup, threads, workers, device, people, per_person,
          src_res) -> None:
    import torch
    import torchvision
    from torchvision import transforms

    from classify import dataset as D
    from classify.loaders import batch_prep, make_loader, scan_for
    from classify.models import create_model
    from classify.recipe import load_recipe
    from gan.distributed import pick_device

    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    sha = git_sha()
    with tempfile.TemporaryDirectory(prefix="classify-speed-") as tmp:
        if data is None:
            from gan.synthetic import write_synthetic

            data = Path(tmp) / "curated"
            t0 = time.perf_counter()
            write_synthetic(data, "curated", people, per_person, src_res, seed=0, image_format="jpg", progress=False)
            click.echo(f"wrote a synthetic curated tree ({people} x {per_person} {src_res}-px JPEGs) in "
                       f"{time.perf_counter() - t0:.1f} s")
        r = load_recipe("notebook", [f"data.input_size={size}", f"data.cache_size={max(256, size)}",
                                     f"data.workers={workers}", f"train.batch_size={batch}"])
        td = scan_for(data, task, r)
        cache_dir = Path(tmp) / "cache"
        t0 = time.perf_counter()
        D.cached_split(td.splits["train"], r.data.cache_size, cache_dir, name=f"{task}-train", progress=False)
        click.echo(f"cache: decoded {len(td.splits['train'])} train images in {time.perf_counter() - t0:.1f} s "
                   f"(once per data set); device {dev}, threads {torch.get_num_threads()}, workers {workers}, "
                   f"batch {batch}, {size} px, {steps} timed steps")
        prep = batch_prep(r, dev)
        results = []
        for m in [s.strip() for s in models.split(",") if s.strip()]:
            for kind in [s.strip() for s in loaders.split(",") if s.strip()]:
                if kind == "cache":
                    loader = make_loader(td, "train", r, cache_dir, train=True)
                    p = prep
                elif kind == "imagefolder":
                    ds = torchvision.datasets.ImageFolder(
                        str(td.root / "train"), transform=transforms.Compose([transforms.Resize(size), transforms.ToTensor()]))
                    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                                         drop_last=True, pin_memory=dev.type == "cuda")

                    def p(x):  # already float in [0, 1]
                        return x
                else:
                    raise click.BadParameter(f"unknown loader {kind!r}; use cache or imagefolder", param_hint="--loaders")
                torch.manual_seed(0)
                model = create_model(m, len(td.classes)).to(dev)
                seconds, images = _time_training(model, loader, p, dev, steps, warmup)
                results.append((m, kind, images / seconds))
                click.echo(f"  {m:<20} {kind:<12} {images / seconds:8.1f} images/s ({images} images, {seconds:.1f} s)")
                del model, loader
        for m, kind, rate in results:
            click.echo(f"classify_speed git={sha} model={m} loader={kind} images_per_s={rate:.2f}")
        rates = {(m, k): v for m, k, v in results}
        for m in dict.fromkeys(m for m, _, _ in results):
            if (m, "cache") in rates and (m, "imagefolder") in rates:
                click.echo(f"speed-up of the cache for {m}: {rates[(m, 'cache')] / rates[(m, 'imagefolder')]:.2f}x")


if __name__ == "__main__":
    bench()
