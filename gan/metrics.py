"""FID, KID, IS and precision/recall between a real source and a fake source, on top of torch-fidelity.

Why torch-fidelity: its ``inception-v3-compat`` extractor reproduces the TensorFlow
Inception graph (including TF1's bilinear resize to 299 px), so numbers are comparable
with the literature. We only feed it images and call its ``features -> statistics ->
metric`` functions; no Inception, Frechet or kernel code is written here.

* FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule", eq. 6, on the
  2048-d pool features.
* KID: Binkowski et al. 2018, "Demystifying MMD GANs", unbiased MMD^2 with a cubic
  polynomial kernel, mean and std over subsets (subset size clipped to the sample count).
* IS: Salimans et al. 2016, on the fakes alone (Inception's 1008 logits, 10 splits).
* Precision/recall: Kynkaanniemi et al. 2019, k-NN manifolds (k=3) of **VGG16** fc2
  features (torch-fidelity's ``vgg16`` extractor with torchvision's ImageNet file
  ``vgg16-397923af.pth``: a second weights file, found separately from Inception's).

Protocol (recorded in every result row): G_ema, truncation 1.0 unless told otherwise,
seeds ``0..num-1`` with z drawn exactly as ``mtf-gan generate`` draws them, labels of a
conditional G drawn from the real archive's labels, the full real source as reference
(images as ``prepare`` wrote them; the extractor resizes them itself). ``fid50k_full`` is
50,000 fakes against all reals.

The steps are exposed separately (:func:`extract_features` / :func:`extract_many`,
:func:`fid_statistics`, :func:`fid_from_statistics`, :func:`kid_from_features`,
:func:`is_from_logits`, :func:`pr_from_features`) so extraction can be sharded over ranks
and gathered before the metric. Weights never download: they come from an explicit path
or torch's hub cache, and when absent a :class:`MissingWeightsError` says where to put them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from gan.util import UserError

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "VGG_FILE", "VGG_URL", "METRICS", "MissingWeightsError",
    "resolve_inception_weights", "resolve_vgg_weights", "sha256_file", "load_inception", "load_vgg16",
    "iter_real_images", "iter_fake_images", "extract_many", "extract_features", "fid_statistics",
    "fid_from_statistics", "kid_from_features", "is_from_logits", "pr_from_features", "compute_metrics",
    "evaluate_generator", "source_fingerprint", "real_features", "real_labels", "fake_labels",
    "parse_training_metrics", "PER_CLASS_NOTE", "list_images",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
VGG_FILE = "vgg16-397923af.pth"
VGG_URL = "https://download.pytorch.org/models/" + VGG_FILE
POOL = "2048"              # Inception pool3 features: FID and KID
LOGITS = "logits_unbiased"  # Inception logits: IS
VGG_FEATURE = "fc2_relu"   # VGG16 fc2 after ReLU: precision/recall (torch-fidelity's default layer)
METRICS = ("fid", "kid", "is", "pr")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PER_CLASS_NOTE = ("per-class FID is biased upwards by the small per-class sample count (Binkowski et al. 2018, "
                  "sec. 3): compare classes with equal counts only, and prefer per-class KID, which is unbiased")


class MissingWeightsError(UserError):
    """A weights file is not on this machine (the CLI exits with status 2)."""

    exit_code = 2


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(path: Optional[str | os.PathLike], filename: str, url: str, option: str, what: str) -> Path:
    cache = _hub_checkpoints() / filename
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        where = f"{option} {p} does not exist"
    elif cache.is_file():
        return cache
    else:
        where = f"{filename} is not in torch's cache"
    raise MissingWeightsError(
        f"{what} weights missing: {where}. This needs the file {filename}; download it from {url} on a machine "
        f"with internet and put it at {cache} (torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass "
        f"{option} PATH. Nothing is downloaded at run time."
    )


def resolve_inception_weights(path: Optional[str | os.PathLike] = None) -> Path:
    """The Inception weights file (TensorFlow Inception converted by torch-fidelity):
    ``path`` if given, else torch's hub cache. Never downloads; raises
    :class:`MissingWeightsError` with one paragraph naming the file, the cache path and the URL."""
    return _resolve(path, INCEPTION_FILE, INCEPTION_URL, "--inception-weights", "Inception (FID/KID/IS)")


def resolve_vgg_weights(path: Optional[str | os.PathLike] = None) -> Path:
    """torchvision's ImageNet VGG16 file for precision/recall, as :func:`resolve_inception_weights`."""
    return _resolve(path, VGG_FILE, VGG_URL, "--vgg-weights", "VGG16 (precision/recall)")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception(weights: str | os.PathLike, device: str | torch.device = "cpu",
                   features: Sequence[str] = (POOL,)) -> torch.nn.Module:
    """torch-fidelity's ``inception-v3-compat`` extractor with local weights, on ``device``.

    It takes uint8 ``[N, 3, H, W]`` and resizes to 299 px itself; it returns one tensor
    per name in ``features`` (``"2048"`` pool, ``"logits_unbiased"``). ``cuda=False``
    because torch-fidelity's default ``cuda=True`` fails on machines without a GPU; we
    move it to ``device`` ourselves.
    """
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor("inception-v3-compat", list(features), cuda=False,
                                  feature_extractor_weights_path=str(weights), verbose=False)
    return fe.to(device)


def load_vgg16(weights: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """torch-fidelity's ``vgg16`` extractor (fc2 after ReLU, 4096-d) with local weights."""
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor("vgg16", [VGG_FEATURE], cuda=False, feature_extractor_weights_path=str(weights),
                                  verbose=False)
    return fe.to(device)


# ---------------------------------------------------------------------------- image sources


def _is_archive(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() == ".zip") or (path / "dataset.json").is_file()


def list_images(path: Path) -> list[Path]:
    """Image files under ``path``, recursively, sorted; a clear error when there are none."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UserError(f"{path}: no images ({', '.join(IMAGE_EXTS)}) found in this folder or below it")
    return files


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))  # [H, W, 3] uint8, as torch-fidelity reads folders
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [3, H, W]


def _count(source: Path) -> int:
    if _is_archive(source):
        from gan.dataset import ImageDataset

        return len(ImageDataset(source).names)
    return len(list_images(source))


def _first_size(source: Path) -> tuple[int, int]:
    """(width, height) of the source's first image, from its header (no decoding)."""
    from PIL import Image

    if _is_archive(source):
        from gan.dataset import ImageDataset

        _, h, w = ImageDataset(source).image_shape
        return (w, h)
    with Image.open(list_images(source)[0]) as img:
        return img.size


def iter_real_images(source: str | os.PathLike, num: Optional[int] = None,
                     indices: Optional[Sequence[int]] = None, resolution: Optional[int] = None
                     ) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` images of a prepared archive (zip or unzipped) or an image folder
    (recursive): the first ``num`` (default all), or those at ``indices`` (a rank's shard).

    With ``resolution``, an image of another size is brought to ``[3, R, R]`` as ``prepare``
    would (central square, box filter down, Lanczos up: :func:`gan.dataset.square_resize`),
    so a folder of photos of any size compares with a generator's output at its resolution.
    """
    if resolution is not None:
        from gan.dataset import square_resize

        for img in iter_real_images(source, num, indices):
            if tuple(img.shape[1:]) != (resolution, resolution):
                img = torch.from_numpy(square_resize(img.permute(1, 2, 0).numpy(), resolution)).permute(2, 0, 1)
            yield img
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"--real {path}: no such archive or folder")
    if _is_archive(path):
        from gan.dataset import ImageDataset

        ds = ImageDataset(path)
        n = len(ds) if num is None else min(num, len(ds))
        for i in (range(n) if indices is None else indices):
            img = ds[i][0]
            yield torch.as_tensor(np.asarray(img))
    else:
        files = list_images(path)
        files = files[: num if num is not None else len(files)]
        for i in (range(len(files)) if indices is None else indices):
            yield _load_png(files[i])


def real_labels(source: str | os.PathLike) -> Optional[torch.Tensor]:
    """float32 ``[N, c_dim]`` labels of an archive (None for a folder or an unlabelled archive)."""
    path = Path(source)
    if not _is_archive(path):
        return None
    from gan.dataset import ImageDataset

    labels = ImageDataset(path, use_labels=True).labels  # [N, c_dim]
    return labels if labels.shape[0] and labels.shape[1] else None


def fake_labels(labels: torch.Tensor, num: int, seed: int = 0) -> torch.Tensor:
    """``[num, c_dim]``: labels of real images picked uniformly at random (so the fake
    label distribution is the real one), reproducible from ``seed``."""
    idx = np.random.default_rng(seed).integers(0, labels.shape[0], size=num)
    return labels[torch.as_tensor(idx)]


def iter_fake_images(G: torch.nn.Module, num: int, labels: Optional[torch.Tensor] = None,
                     truncation_psi: float = 1.0, batch: int = 32, seeds: Optional[Sequence[int]] = None
                     ) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` for seeds ``0..num-1`` (or ``seeds``), z drawn as ``mtf-gan generate``
    draws it, constant noise, G run ``batch`` seeds at a time.

    We call G ourselves (not torch-fidelity's conditional wrapper, which uses ``np.int``
    and fails under numpy 2). ``labels`` ``[num, c_dim]`` is required for a conditional G.
    """
    from gan.generate import seed_z
    from gan.train import images_to_uint8

    seeds = list(range(num)) if seeds is None else list(seeds)
    if G.c_dim and (labels is None or labels.shape[0] < len(seeds)):
        raise UserError("this network is conditional: the real source must be a labelled archive "
                        "(its labels give the class distribution of the fakes)")
    device = next(G.parameters()).device
    for i in range(0, len(seeds), batch):
        chunk = seeds[i: i + batch]
        z = torch.cat([seed_z(s, G.z_dim) for s in chunk]).to(device)  # [B, z_dim]
        c = labels[i: i + len(chunk)].to(device) if G.c_dim else torch.zeros([len(chunk), 0], device=device)
        with torch.no_grad():
            img = images_to_uint8(G(z, c, truncation_psi=truncation_psi, noise_mode="const"))  # [B, 3, H, W]
        yield from img.cpu()


# ---------------------------------------------------------------------------- features


def extract_many(images: Iterable[torch.Tensor], extractors: Sequence[torch.nn.Module], batch: int = 64,
                 device: str | torch.device = "cpu", total: Optional[int] = None, progress: bool = False,
                 desc: str = "features") -> list[list[torch.Tensor]]:
    """One pass over uint8 ``[3, H, W]`` images through several extractors (so fakes are
    generated once for Inception and VGG). Returns, per extractor, one float tensor
    ``[N, D]`` per feature it was built with."""
    from tqdm import tqdm

    outs: list[list[list[torch.Tensor]]] = [[] for _ in extractors]
    buf: list[torch.Tensor] = []
    bar = tqdm(total=total, unit="img", desc=desc, disable=not progress, dynamic_ncols=True)

    def flush() -> None:
        x = torch.stack(buf).to(device)  # [B, 3, H, W] uint8
        with torch.no_grad():
            for out, fe in zip(outs, extractors):
                out.append([f.detach().float().cpu() for f in fe(x)])
        bar.update(len(buf))
        buf.clear()

    for img in images:
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected uint8 [3, H, W] images, got {img.dtype} {list(img.shape)}")
        buf.append(img)
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    bar.close()
    if not outs or not outs[0]:
        raise UserError("no images to extract features from")
    return [[torch.cat(parts) for parts in zip(*out)] for out in outs]


def extract_features(images: Iterable[torch.Tensor], extractor: torch.nn.Module, batch: int = 64,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """float ``[N, D]`` features (the extractor's first feature: Inception pool ``[N, 2048]``)."""
    return extract_many(images, [extractor], batch, device)[0][0]


def source_fingerprint(source: str | os.PathLike) -> str:
    """SHA-1 naming a real source's content: an archive's ``dataset.json`` (it lists every
    image's SHA-1 and the resolution), or a folder's file list with sizes and mtimes
    (cheap, no decoding)."""
    import zipfile

    path = Path(source)
    h = hashlib.sha1()
    if path.is_file() and path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            h.update(zf.read("dataset.json"))
    elif (path / "dataset.json").is_file():
        h.update((path / "dataset.json").read_bytes())
    else:
        listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in list_images(path)]
        h.update(json.dumps(listing).encode())
    return h.hexdigest()


def _world(sharded: bool) -> tuple[int, int]:
    """(rank, world size) when ``sharded`` under torchrun, else (0, 1)."""
    if not sharded:
        return 0, 1
    from gan import distributed as dist

    return (dist.rank(), dist.world_size()) if dist.is_distributed() else (0, 1)


def real_features(real: str | os.PathLike, extractor: torch.nn.Module, weights_sha256: str, batch: int = 64,
                  device: str | torch.device = "cpu", cache_dir: Optional[str | os.PathLike] = None,
                  extractor_name: str = f"inception-v3-compat/{POOL}", num: Optional[int] = None,
                  progress: bool = False, sharded: bool = False, resolution: Optional[int] = None
                  ) -> list[torch.Tensor]:
    """Features ``[N, D]`` (one per extractor feature) of the real source (all of it, or the
    first ``num``; images of another size than ``resolution`` resized as ``prepare`` would),
    read from ``cache_dir`` when a file for the same (content fingerprint, count, first
    image's size, target resolution, extractor and feature names, weights SHA-256) exists;
    otherwise extracted and written atomically, so concurrent runs never see half a file.

    ``sharded`` (under torchrun): rank ``r`` extracts images ``r, r + W, ...``, the shards
    are gathered in index order, rank 0 writes the cache; whether the cache is used is rank
    0's decision (broadcast), and ranks other than 0 return ``[]`` when it is (only rank 0
    computes metrics).
    """
    from gan.util import atomic_path

    rank, world = _world(sharded)
    dest = None
    if cache_dir is not None:
        key = hashlib.sha1("|".join([source_fingerprint(real), f"num={num or 'all'}",
                                     f"size={_first_size(Path(real))}", f"res={resolution}", extractor_name,
                                     weights_sha256]).encode())
        dest = Path(cache_dir) / f"real-features-{key.hexdigest()[:20]}.pt"
    have = dest is not None and dest.is_file()
    if world > 1:
        from gan import distributed as dist

        have = bool(dist.broadcast_object(have))
    if have:
        return list(torch.load(dest, weights_only=True)) if rank == 0 else []
    total = _count(Path(real)) if num is None else min(num, _count(Path(real)))
    if total < world:
        raise UserError(f"{real}: {total} real images, fewer than the {world} processes")
    idx = list(range(rank, total, world))
    feats = extract_many(iter_real_images(real, num, idx, resolution), [extractor], batch, device, total=len(idx),
                         progress=progress, desc="real features")[0]
    if world > 1:
        from gan import distributed as dist

        order = torch.as_tensor(idx)
        feats = [dist.gather_features(f, order) for f in feats]
    if dest is not None and rank == 0:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            torch.save(list(feats), tmp)
    return feats


# ---------------------------------------------------------------------------- features -> metric


def fid_statistics(features: torch.Tensor) -> dict:
    """``{"mu", "sigma"}`` of ``[N, D]`` features (torch-fidelity's function)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features)


def fid_from_statistics(stat_real: dict, stat_fake: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(stat_real, stat_fake, verbose=False)[KEY_METRIC_FID])


def kid_from_features(feat_real: torch.Tensor, feat_fake: torch.Tensor, subset_size: int = 1000,
                      subsets: int = 100) -> tuple[float, float]:
    """(KID mean, std) with the subset size clipped to the smaller sample count."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    k = min(subset_size, feat_real.shape[0], feat_fake.shape[0])
    if k < 2:
        raise UserError(f"KID needs at least 2 images a side (got {feat_real.shape[0]} real, {feat_fake.shape[0]} fake)")
    r = kid_features_to_metric(feat_real, feat_fake, kid_subset_size=k, kid_subsets=subsets, verbose=False)
    return float(r[KEY_METRIC_KID_MEAN]), float(r[KEY_METRIC_KID_STD])


def is_from_logits(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(IS mean, std) of ``[N, 1008]`` Inception logits of the fakes (splits clipped to N)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    r = isc_features_to_metric(logits, splits=max(1, min(splits, logits.shape[0])))
    return float(r[KEY_METRIC_ISC_MEAN]), float(r[KEY_METRIC_ISC_STD])


def pr_from_features(feat_real: torch.Tensor, feat_fake: torch.Tensor, neighborhood: int = 3) -> dict:
    """``{"precision", "recall", "f_score"}`` (Kynkaanniemi et al. 2019) of ``[N, D]`` VGG
    features; precision asks how many fakes fall in the real manifold, recall the converse."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    n = min(feat_real.shape[0], feat_fake.shape[0])
    if n <= neighborhood:
        raise UserError(f"precision/recall needs more than {neighborhood} images a side (got {n})")
    r = prc_features_to_metric(feat_fake, feat_real, prc_neighborhood=neighborhood, prc_batch_size=10000,
                               save_cpu_ram=False, verbose=False)
    return {k: float(r[k]) for k in ("precision", "recall", "f_score")}


# ---------------------------------------------------------------------------- the evaluation


@dataclass
class _Extractors:
    """The loaded extractors and what they feed (fakes need Inception logits only for IS)."""

    inception: Optional[torch.nn.Module]
    inception_sha: Optional[str]
    vgg: Optional[torch.nn.Module]
    vgg_sha: Optional[str]
    want_is: bool


def _load_extractors(metrics: Sequence[str], device, inception_weights, vgg_weights) -> _Extractors:
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise UserError(f"--metrics: {', '.join(bad) or '(none)'} unknown; choose from {', '.join(METRICS)}")
    inc = inc_sha = vgg = vgg_sha = None
    # Resolve every file first, so a missing one stops the run before any work.
    inc_path = resolve_inception_weights(inception_weights) if {"fid", "kid", "is"} & set(metrics) else None
    vgg_path = resolve_vgg_weights(vgg_weights) if "pr" in metrics else None
    if inc_path is not None:
        feats = (POOL, LOGITS) if "is" in metrics else (POOL,)
        inc, inc_sha = load_inception(inc_path, device, feats), sha256_file(inc_path)
    if vgg_path is not None:
        vgg, vgg_sha = load_vgg16(vgg_path, device), sha256_file(vgg_path)
    return _Extractors(inc, inc_sha, vgg, vgg_sha, "is" in metrics)


def _class_groups(labels: torch.Tensor, names: Optional[Sequence[str]]) -> list[tuple[str, torch.Tensor]]:
    """``(name, label row [c_dim])`` per distinct label vector of the reals (one per class
    for one-hot labels; one per combination for several CSV columns)."""
    rows = torch.unique(labels, dim=0)  # [G, c_dim]
    out = []
    for row in rows:
        active = row.nonzero().flatten().tolist()
        nm = [str(names[i]) if names and i < len(names) else str(i) for i in active]
        out.append((active, "+".join(nm) or "none", row))
    return [(nm, row) for _, nm, row in sorted(out, key=lambda t: t[0])]  # in class order


def _evaluate(real: Path, fakes: Callable[..., Iterator[torch.Tensor]], n_fake: int,
              metrics: Sequence[str], ex: _Extractors, batch: int, device, cache_dir, progress: bool,
              per_class: Optional[tuple[torch.Tensor, Optional[Sequence[str]]]] = None,
              sharded: bool = False, resolution: Optional[int] = None) -> dict:
    """Metrics of ``fakes(None, n_fake, select)`` against all of ``real``; with ``per_class``
    (the reals' labels ``[N, c_dim]`` and class names) also, per class, ``fakes(row, n_c)``
    against the ``n_c`` reals of that class.

    ``fakes(row, count, select=None)`` yields the fakes ``0..count-1`` (or those at the
    indices ``select``). ``sharded`` under torchrun: every rank generates and extracts the
    fakes ``rank, rank + W, ...`` (and its share of uncached reals), features are gathered
    in index order, and rank 0 alone computes the metrics (other ranks return ``{}``), so
    the values do not depend on the number of processes.
    """
    rank, world = _world(sharded)
    if per_class is not None and world > 1:
        raise UserError("per-class metrics are not sharded; run them in one process")
    names = [n for n, m in (("inception", ex.inception), ("vgg", ex.vgg)) if m is not None]
    real_feats: dict[str, list[torch.Tensor]] = {}
    if ex.inception is not None:
        real_feats["inception"] = real_features(real, ex.inception, ex.inception_sha, batch, device, cache_dir,
                                                extractor_name="inception-v3-compat/" + "+".join(
                                                    ex.inception.features_list), progress=progress,
                                                sharded=sharded, resolution=resolution)
    if ex.vgg is not None:
        real_feats["vgg"] = real_features(real, ex.vgg, ex.vgg_sha, batch, device, cache_dir,
                                          extractor_name=f"vgg16/{VGG_FEATURE}", progress=progress, sharded=sharded,
                                          resolution=resolution)
    mods = [ex.inception if n == "inception" else ex.vgg for n in names]
    first: list[torch.Tensor] = []

    def remember(it: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for img in it:
            if not first:
                first.append(img)
            yield img

    if n_fake < world:
        raise UserError(f"{n_fake} fakes, fewer than the {world} processes")
    select = list(range(rank, n_fake, world)) if world > 1 else None
    out = extract_many(remember(fakes(None, n_fake, select)), mods, batch, device,
                       total=len(select) if select else n_fake, progress=progress, desc="fake features")
    if world > 1:
        from gan import distributed as dist

        order = torch.as_tensor(select)
        out = [[dist.gather_features(f, order) for f in feats] for feats in out]
        if rank != 0:
            return {}
    fake_feats = dict(zip(names, out))
    result = _metrics_of(real_feats, fake_feats, metrics)
    result.update(n_real=int(next(iter(real_feats.values()))[0].shape[0]),
                  n_fake=int(next(iter(fake_feats.values()))[0].shape[0]), resolution=int(first[0].shape[-1]))
    if per_class is not None:
        labels, class_names = per_class
        result["per_class"] = {}
        for name, row in _class_groups(labels, class_names):
            mask = (labels == row).all(1)  # [N] reals of this class
            n_c = int(mask.sum())
            sub_real = {k: [f[mask] for f in v] for k, v in real_feats.items()}
            out_c = extract_many(fakes(row, n_c), mods, batch, device, total=n_c, progress=progress,
                                 desc=f"fakes {name}")
            m = _metrics_of(sub_real, dict(zip(names, out_c)), [x for x in metrics if x in ("fid", "kid")])
            result["per_class"][name] = {**m, "n_real": n_c, "n_fake": n_c}
        result["per_class_note"] = PER_CLASS_NOTE
    return result


def _metrics_of(real: dict, fake: dict, metrics: Sequence[str]) -> dict:
    r: dict = {}
    if "fid" in metrics:
        r["fid"] = fid_from_statistics(fid_statistics(real["inception"][0]), fid_statistics(fake["inception"][0]))
    if "kid" in metrics:
        r["kid"], r["kid_std"] = kid_from_features(real["inception"][0], fake["inception"][0])
    if "is" in metrics:
        r["is"], r["is_std"] = is_from_logits(fake["inception"][1])
    if "pr" in metrics:
        r.update(pr_from_features(real["vgg"][0], fake["vgg"][0]))
    return r


def _row_info(result: dict, ex: _Extractors, real, truncation_psi: float, kimg, t0: float) -> dict:
    result.update(resize="reals of another size: central square + box filter to the fakes' resolution (as "
                  "prepare); then torch-fidelity TF1 bilinear to 299 (Inception) / 224 (VGG16)",
                  weights_sha256=ex.inception_sha, vgg_weights_sha256=ex.vgg_sha, real=str(real), kimg=kimg,
                  truncation_psi=truncation_psi, seconds=round(time.time() - t0, 3))
    return result


def evaluate_generator(G: torch.nn.Module, real: str | os.PathLike, metrics: Sequence[str] = ("fid", "kid"),
                       num: Optional[int] = None, batch: int = 64, device: str | torch.device = "cpu",
                       inception_weights: Optional[str | os.PathLike] = None,
                       vgg_weights: Optional[str | os.PathLike] = None, truncation_psi: float = 1.0,
                       cache_dir: Optional[str | os.PathLike] = None, per_class: bool = False,
                       progress: bool = False, extractors: Optional[_Extractors] = None,
                       sharded: bool = False) -> dict:
    """Metrics of a generator (already on ``device``, in eval mode) against ``real``.

    ``num`` fakes (default: as many as the reals); a conditional G draws its labels from
    the real archive's label distribution. ``per_class`` adds, for each class, FID/KID of
    ``n_c`` fakes conditioned on it against the ``n_c`` reals of that class (equal counts).
    ``extractors`` lets a training loop load the networks once; ``sharded`` splits the
    work over torchrun's ranks (see :func:`_evaluate`; rank 0 gets the result, others ``{}``).
    """
    t0 = time.time()
    real = Path(real)
    ex = extractors or _load_extractors(metrics, device, inception_weights, vgg_weights)
    n = num if num is not None else _count(real)
    labels = real_labels(real) if G.c_dim else None
    if G.c_dim and labels is None:
        raise UserError(f"{real}: this network is conditional, so the real source must be the labelled archive "
                        "it was trained on (its labels give the fakes' class distribution)")
    if per_class and not G.c_dim:
        raise UserError("--per-class needs a conditional network (this one has no labels)")

    def fakes(row: Optional[torch.Tensor], count: int, select: Optional[Sequence[int]] = None
              ) -> Iterator[torch.Tensor]:
        if row is None:
            c = fake_labels(labels, count) if labels is not None else None
        else:
            c = row.unsqueeze(0).expand(count, -1)
        seeds = list(range(count)) if select is None else list(select)
        if c is not None and select is not None:
            c = c[torch.as_tensor(seeds)]  # the labels of these seeds, as in the unsharded draw
        return iter_fake_images(G, len(seeds), c, truncation_psi, batch=min(batch, 32), seeds=seeds)

    pc = (labels, getattr(G, "class_names", None)) if per_class else None
    result = _evaluate(real, fakes, n, metrics, ex, batch, device, cache_dir, progress, pc, sharded,
                       resolution=int(G.img_resolution))
    if not result:  # a rank other than 0 of a sharded evaluation
        return result
    return _row_info(result, ex, real, truncation_psi, getattr(G, "cur_nimg", 0) / 1000, t0)


def compute_metrics(real: str | os.PathLike, fake: str | os.PathLike, metrics: Sequence[str] = ("fid", "kid"),
                    num: Optional[int] = None, batch: int = 64, device: str | torch.device = "cpu",
                    inception_weights: Optional[str | os.PathLike] = None, truncation_psi: float = 1.0,
                    cache_dir: Optional[str | os.PathLike] = None, vgg_weights: Optional[str | os.PathLike] = None,
                    per_class: bool = False, progress: bool = False) -> dict:
    """Metrics between ``real`` (archive or folder, all of it) and ``fake`` (a checkpoint
    file, generated on the fly from its G_ema, or an image folder read recursively).

    Returns ``{"fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "f_score"}``
    (those asked for) plus ``n_real``, ``n_fake``, ``resolution``, ``weights_sha256``,
    ``kimg``, ``seconds`` and, with ``per_class``, ``per_class: {class: {...}}``. ``num``
    is the fake count (default: as many as the reals, or all images of a fake folder).
    With ``cache_dir`` the real features are cached there (see :func:`real_features`).
    """
    t0 = time.time()
    fake_path = Path(fake)
    if fake_path.is_file():
        from gan.checkpoint import load_generator

        ex = _load_extractors(metrics, device, inception_weights, vgg_weights)
        G = load_generator(fake_path, device)
        return evaluate_generator(G, real, metrics, num, batch, device, truncation_psi=truncation_psi,
                                  cache_dir=cache_dir, per_class=per_class, progress=progress, extractors=ex)
    if not fake_path.is_dir():
        raise UserError(f"--fake/--network {fake_path}: no such checkpoint file or image folder")
    if per_class:
        raise UserError("--per-class needs --network (a conditional generator), not a fake image folder")
    ex = _load_extractors(metrics, device, inception_weights, vgg_weights)
    from PIL import Image

    files = list_images(fake_path)[: num if num is not None else None]

    def fakes(_row, count: int, select: Optional[Sequence[int]] = None) -> Iterator[torch.Tensor]:
        from gan.dataset import square_resize

        for i in (range(count) if select is None else select):
            img = _load_png(files[i])  # [3, H, W]
            if fake_res is not None and tuple(img.shape[1:]) != (fake_res, fake_res):
                img = torch.from_numpy(square_resize(img.permute(1, 2, 0).numpy(), fake_res)).permute(2, 0, 1)
            yield img

    with Image.open(files[0]) as first:
        fake_res = first.size[0] if first.size[0] == first.size[1] else None
    result = _evaluate(Path(real), fakes, len(files), metrics, ex, batch, device, cache_dir, progress,
                       resolution=fake_res)
    return _row_info(result, ex, real, truncation_psi, None, t0)


def result_rows(res: dict) -> list[dict]:
    """One flat row per metric value (the ``metrics.jsonl`` format): ``metric``, ``value``
    (plus ``std`` where there is one) and the protocol fields shared by every row."""
    keys = ("fid", "kid", "is", "precision", "recall", "f_score")
    common = {k: v for k, v in res.items() if k not in keys + ("kid_std", "is_std", "per_class")}
    rows = []
    for m in keys:
        if m in res:
            row = dict(metric=m, value=res[m], **common)
            if f"{m}_std" in res:
                row["std"] = res[f"{m}_std"]
            rows.append(row)
    for cls, r in (res.get("per_class") or {}).items():
        for m in ("fid", "kid"):
            if m in r:
                row = dict(metric=f"{m}/{cls}", value=r[m], **{**common, "n_real": r["n_real"], "n_fake": r["n_fake"]})
                if f"{m}_std" in r:
                    row["std"] = r[f"{m}_std"]
                rows.append(row)
    return rows


_TRAINING_METRIC = re.compile(r"^(fid|kid)(\d+)(k?)(_full)?$")


def parse_training_metrics(names: Sequence[str]) -> list[tuple[str, str, int]]:
    """``["fid10k", "kid5k"]`` -> ``[("fid10k", "fid", 10000), ...]``: the in-training metric
    names. ``fid<N>k``/``kid<N>k`` are N thousand fakes against the full real archive (the
    published ``fid50k_full``); ``fid<N>`` without ``k`` is N fakes, for quick checks."""
    out = []
    for raw in names:
        m = _TRAINING_METRIC.match(raw.strip().lower())
        if not m or int(m.group(2)) < 2:
            raise UserError(f"train.metrics: {raw!r} is not a metric; use fid<N>k or kid<N>k (N thousand fakes, "
                            "e.g. fid10k, kid5k) or fid<N> (N fakes, N >= 2)")
        out.append((raw.strip().lower(), m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1)))
    return out
