"""FID, KID, IS and precision/recall between a real source and a fake source, on top of torch-fidelity.

Why torch-fidelity: its ``inception-v3-compat`` extractor reproduces the TensorFlow
Inception graph (including TF1's bilinear resize to 299 px), so numbers are comparable
with the literature. We only feed it images and call its ``features -> statistics ->
metric`` functions; no Inception, Frechet or kernel code is written here. The extractors,
their weights files and the block-wise feature loop are in :mod:`gan.extractors`.

* FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule", eq. 6, on the
  2048-d pool features.
* KID: Binkowski et al. 2018, "Demystifying MMD GANs", unbiased MMD^2 with a cubic
  polynomial kernel, mean and std over subsets (subset size clipped to the sample count).
* IS: Salimans et al. 2016, on the fakes alone (Inception's 1008 logits, 10 splits).
* Precision/recall: Kynkaanniemi et al. 2019, k-NN manifolds (k=3) of **VGG16** fc2
  features (torch-fidelity's ``vgg16`` extractor with torchvision's ImageNet file
  ``vgg16-397923af.pth``: a second weights file, found separately from Inception's).

Protocol (recorded in every result row): G_ema, truncation 1.0 unless told otherwise
(towards ``w_avg``, or with ``trunc_center='class'`` towards each fake's class centre,
:func:`gan.generate.class_centers`, whose sample count the rows record), seeds
``0..num-1`` with z drawn exactly as ``mtf-gan generate`` draws them, labels of a
conditional G drawn with the real archive's label mix (:func:`gan.generate.fake_labels`),
the full real source as reference (images as ``prepare`` wrote them; the extractor resizes
them itself). ``fid50k_full`` is 50,000 fakes against all reals.

The steps are exposed separately (:func:`gan.extractors.extract_many`, :func:`fid_statistics`,
:func:`fid_from_statistics`, :func:`kid_from_features`, :func:`is_from_logits`,
:func:`pr_from_features`) so extraction can be sharded over ranks and gathered before the
metric. :func:`compute_metrics` is what ``mtf-gan metrics`` runs; :class:`TrainingMetrics`
is what the training loop runs at every snapshot.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from gan import distributed as dist
from gan.dataset import open_images
from gan.extractors import POOL, VGG_FEATURE, Extractors, extract_many, load_extractors, parse_training_metrics
from gan.generate import (ClassCenters, describe_center, device_of, fake_labels, real_labels, seed_z, synthesize,
                          truncation_centers)
from gan.images import images_to_uint8, list_images, read_rgb, square_resize_chw
from gan.monitor import LOGGER_NAME
from gan.util import UserError, atomic_torch_save, cache_root

__all__ = [
    "iter_real_images", "iter_fake_images", "fid_statistics", "fid_from_statistics", "kid_from_features",
    "is_from_logits", "pr_from_features", "MetricsOptions", "compute_metrics", "evaluate_generator",
    "source_fingerprint", "default_stats_cache", "real_features", "result_rows", "TrainingMetrics", "PER_CLASS_NOTE",
]

log = logging.getLogger(LOGGER_NAME)

PER_CLASS_NOTE = ("per-class FID is biased upwards by the small per-class sample count (Binkowski et al. 2018, "
                  "sec. 3): compare classes with equal counts only, and prefer per-class KID, which is unbiased")


def default_stats_cache() -> Path:
    """``$MTF_CACHE_DIR/stats`` (:func:`gan.util.cache_root`, ``~/.cache/mtf-faces`` unless set):
    where the real side's features are kept unless a caller picks another folder or none."""
    return cache_root() / "stats"


@dataclass(frozen=True)
class MetricsOptions:
    """How a metric set is computed (the options of ``mtf-gan metrics``)."""

    metrics: tuple[str, ...] = ("fid", "kid")  # any of fid, kid, is, pr
    num: Optional[int] = None           # fakes (default: as many as the reals, or all of a fake folder)
    batch: int = 64                     # images per extractor call
    device: str | torch.device = "cpu"
    inception_weights: Optional[str | os.PathLike] = None  # default: torch's hub cache
    vgg_weights: Optional[str | os.PathLike] = None        # for pr; default: torch's hub cache
    truncation_psi: float = 1.0
    trunc_center: str = "global"        # or "class": towards each fake's class mean w (a conditional G)
    # real-feature cache (see real_features): default $MTF_CACHE_DIR/stats, None = off (--no-stats-cache)
    cache_dir: Optional[str | os.PathLike] = field(default_factory=default_stats_cache)
    echo: Optional[Callable[[str], None]] = None  # the cache line (where, how big); None: the "gan" logger
    per_class: bool = False             # also FID/KID per class of a conditional G (equal counts)
    progress: bool = False
    sharded: bool = False               # split the work over torchrun's ranks (rank 0 gets the result)


def _options(options: Optional[MetricsOptions], overrides: dict) -> MetricsOptions:
    """``options`` (or the defaults) with keyword overrides; an unknown keyword is a TypeError."""
    opts = dataclasses.replace(options or MetricsOptions(), **overrides)
    return dataclasses.replace(opts, metrics=tuple(opts.metrics))


# ---------------------------------------------------------------------------- image sources


def _resized(img: torch.Tensor, resolution: Optional[int]) -> torch.Tensor:
    """``[3, H, W]`` brought to ``[3, R, R]`` as ``prepare`` would (untouched when already R)."""
    if resolution is None or tuple(img.shape[1:]) == (resolution, resolution):
        return img
    return square_resize_chw(img, resolution)


def iter_real_images(source: str | os.PathLike, num: Optional[int] = None,
                     indices: Optional[Sequence[int]] = None, resolution: Optional[int] = None
                     ) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` images of a prepared archive (zip or unzipped) or an image folder
    (recursive, :func:`gan.dataset.open_images`): the first ``num`` (default all), or those at
    ``indices`` (a rank's shard).

    With ``resolution``, an image of another size is brought to ``[3, R, R]`` as ``prepare``
    would (central square, box filter down, Lanczos up: :func:`gan.images.square_resize`),
    so a folder of photos of any size compares with a generator's output at its resolution.
    """
    src = open_images(source, "--real")
    n = len(src.names) if num is None else min(num, len(src.names))
    for i in (range(n) if indices is None else indices):
        yield _resized(src.image(i), resolution)


def iter_fake_images(G: torch.nn.Module, num: int, labels: Optional[torch.Tensor] = None,
                     truncation_psi: float = 1.0, batch: int = 32, seeds: Optional[Sequence[int]] = None,
                     centers: Optional[ClassCenters] = None) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` for seeds ``0..num-1`` (or ``seeds``), z drawn as ``mtf-gan generate``
    draws it, constant noise, G run ``batch`` seeds at a time; truncated towards ``w_avg``, or
    towards the class centres ``centers`` (:func:`gan.generate.class_centers` of the labels).

    We call G ourselves (not torch-fidelity's conditional wrapper, which uses ``np.int``
    and fails under numpy 2). ``labels`` ``[num, c_dim]`` is required for a conditional G.
    """
    seeds = list(range(num)) if seeds is None else list(seeds)
    if G.c_dim and (labels is None or labels.shape[0] < len(seeds)):
        raise UserError("this network is conditional: the real source must be a labelled archive "
                        "(its labels give the class distribution of the fakes)")
    device = device_of(G)
    for i in range(0, len(seeds), batch):
        chunk = seeds[i: i + batch]
        z = torch.cat([seed_z(s, G.z_dim) for s in chunk]).to(device)  # [B, z_dim]
        c = labels[i: i + len(chunk)].to(device) if G.c_dim else torch.zeros([len(chunk), 0], device=device)
        with torch.no_grad():
            img = images_to_uint8(synthesize(G, z, c, truncation_psi, "const", centers))  # [B, 3, H, W]
        yield from img.cpu()


# ---------------------------------------------------------------------------- real features (cached)


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
    return (dist.rank(), dist.world_size()) if dist.is_distributed() else (0, 1)


def _cache_size(folder: Path) -> str:
    """``"3 files, 12.4 MB"``: the real-feature files in ``folder`` (the full non-curated set's are ~1 GB)."""
    sizes = [f.stat().st_size for f in folder.glob("real-features-*.pt")]
    total = sum(sizes)
    shown = f"{total / 1e9:.2f} GB" if total >= 1e9 else f"{total / 1e6:.1f} MB"
    return f"{len(sizes)} file{'' if len(sizes) == 1 else 's'}, {shown}"


def _write_cache(dest: Path, feats: Sequence[torch.Tensor], say: Callable[[str], None], what: str) -> None:
    """Write ``feats`` atomically to ``dest``; a full or unwritable disk costs the cache, not the result."""
    try:
        atomic_torch_save(list(feats), dest)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "error")
        say(f"real features ({what}): not cached, writing in {dest.parent} failed ({code}: {exc.strerror or exc}); "
            "pass --stats-cache DIR (train.metrics_cache) or set MTF_CACHE_DIR to a folder with room, or "
            "--no-stats-cache")
        return
    say(f"real features ({what}): cached in {dest.parent} ({_cache_size(dest.parent)})")


def real_features(real: str | os.PathLike, extractor: torch.nn.Module, weights_sha256: str, batch: int = 64,
                  device: str | torch.device = "cpu", cache_dir: Optional[str | os.PathLike] = None,
                  extractor_name: str = f"inception-v3-compat/{POOL}", num: Optional[int] = None,
                  progress: bool = False, sharded: bool = False, resolution: Optional[int] = None,
                  echo: Optional[Callable[[str], None]] = None) -> list[torch.Tensor]:
    """Features ``[N, D]`` (one per extractor feature) of the real source (all of it, or the
    first ``num``; images of another size than ``resolution`` resized as ``prepare`` would),
    read from ``cache_dir`` when a file for the same (content fingerprint, count, first
    image's size, target resolution, extractor and feature names, weights SHA-256) exists;
    otherwise extracted and written atomically, so concurrent runs never see half a file
    (``cache_dir=None``: neither read nor written). Rank 0 says where the cache is and its size
    through ``echo`` (default: the ``gan`` logger), on a hit and on a write.

    ``sharded`` (under torchrun): rank ``r`` extracts images ``r, r + W, ...``, the shards
    are gathered in index order, rank 0 writes the cache; whether the cache is used is rank
    0's decision (broadcast), and ranks other than 0 return ``[]`` when it is (only rank 0
    computes metrics).
    """
    rank, world = _world(sharded)
    say = echo or log.info
    src = open_images(real, "--real")
    dest = None
    if cache_dir is not None:
        key = hashlib.sha1("|".join([source_fingerprint(real), f"num={num or 'all'}", f"size={src.first_size}",
                                     f"res={resolution}", extractor_name, weights_sha256]).encode())
        dest = Path(cache_dir).expanduser() / f"real-features-{key.hexdigest()[:20]}.pt"
    have = dest is not None and dest.is_file()
    if world > 1:
        have = bool(dist.broadcast_object(have))
    if have:
        if rank != 0:
            return []
        say(f"real features ({extractor_name}): read from the cache in {dest.parent} ({_cache_size(dest.parent)})")
        return list(torch.load(dest, weights_only=True))
    total = len(src.names) if num is None else min(num, len(src.names))
    if total < world:
        raise UserError(f"{real}: {total} real images, fewer than the {world} processes")
    idx = list(range(rank, total, world))
    feats = extract_many(iter_real_images(real, num, idx, resolution), [extractor], batch, device, total=len(idx),
                         progress=progress, desc="real features")[0]
    if world > 1:
        order = torch.as_tensor(idx)
        feats = [dist.gather_features(f, order) for f in feats]
    if dest is not None and rank == 0:
        _write_cache(dest, feats, say, extractor_name)
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


# ---------------------------------------------------------------------------- the evaluation

#: ``fakes(row, count, select=None)``: the fakes ``0..count-1`` (or those at the indices
#: ``select``), of class ``row`` ``[c_dim]``, or drawn with the reals' label mix when None.
FakeSource = Callable[..., Iterator[torch.Tensor]]


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


def _real_side(real: Path, ex: Extractors, opts: MetricsOptions, resolution: Optional[int]
               ) -> dict[str, list[torch.Tensor]]:
    """The real features per extractor name (``inception``, ``vgg``), cached as ``opts`` says."""
    kw = dict(batch=opts.batch, device=opts.device, cache_dir=opts.cache_dir, progress=opts.progress,
              sharded=opts.sharded, resolution=resolution, echo=opts.echo)
    feats: dict[str, list[torch.Tensor]] = {}
    if ex.inception is not None:
        feats["inception"] = real_features(real, ex.inception, ex.inception_sha, extractor_name="inception-v3-compat/"
                                           + "+".join(ex.inception.features_list), **kw)
    if ex.vgg is not None:
        feats["vgg"] = real_features(real, ex.vgg, ex.vgg_sha, extractor_name=f"vgg16/{VGG_FEATURE}", **kw)
    return feats


def _per_class(result: dict, real_feats: dict, fakes: FakeSource, mods: dict, opts: MetricsOptions,
               labels: torch.Tensor, class_names: Optional[Sequence[str]]) -> None:
    """Add ``per_class``: per class, FID/KID of ``n_c`` fakes of that class against its ``n_c`` reals."""
    result["per_class"] = {}
    for name, row in _class_groups(labels, class_names):
        mask = (labels == row).all(1)  # [N] reals of this class
        n_c = int(mask.sum())
        sub_real = {k: [f[mask] for f in v] for k, v in real_feats.items()}
        out_c = extract_many(fakes(row, n_c), list(mods.values()), opts.batch, opts.device, total=n_c,
                             progress=opts.progress, desc=f"fakes {name}")
        m = _metrics_of(sub_real, dict(zip(mods, out_c)), [x for x in opts.metrics if x in ("fid", "kid")])
        result["per_class"][name] = {**m, "n_real": n_c, "n_fake": n_c}
    result["per_class_note"] = PER_CLASS_NOTE


def _evaluate(real: Path, fakes: FakeSource, n_fake: int, opts: MetricsOptions, ex: Extractors,
              per_class: Optional[tuple[torch.Tensor, Optional[Sequence[str]]]] = None,
              resolution: Optional[int] = None) -> dict:
    """Metrics of ``fakes(None, n_fake, select)`` against all of ``real``; with ``per_class``
    (the reals' labels ``[N, c_dim]`` and class names) also, per class, ``fakes(row, n_c)``
    against the ``n_c`` reals of that class.

    ``opts.sharded`` under torchrun: every rank generates and extracts the fakes ``rank,
    rank + W, ...`` (and its share of uncached reals), features are gathered in index order,
    and rank 0 alone computes the metrics (other ranks return ``{}``), so the values do not
    depend on the number of processes.
    """
    rank, world = _world(opts.sharded)
    if per_class is not None and world > 1:
        raise UserError("per-class metrics are not sharded; run them in one process")
    real_feats = _real_side(real, ex, opts, resolution)
    mods = {n: m for n, m in (("inception", ex.inception), ("vgg", ex.vgg)) if m is not None}
    first: list[torch.Tensor] = []

    def remember(it: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for img in it:
            if not first:
                first.append(img)
            yield img

    if n_fake < world:
        raise UserError(f"{n_fake} fakes, fewer than the {world} processes")
    select = list(range(rank, n_fake, world)) if world > 1 else None
    out = extract_many(remember(fakes(None, n_fake, select)), list(mods.values()), opts.batch, opts.device,
                       total=len(select) if select else n_fake, progress=opts.progress, desc="fake features")
    if world > 1:
        order = torch.as_tensor(select)
        out = [[dist.gather_features(f, order) for f in feats] for feats in out]
        if rank != 0:
            return {}
    fake_feats = dict(zip(mods, out))
    result = _metrics_of(real_feats, fake_feats, opts.metrics)
    result.update(n_real=int(next(iter(real_feats.values()))[0].shape[0]),
                  n_fake=int(next(iter(fake_feats.values()))[0].shape[0]), resolution=int(first[0].shape[-1]))
    if per_class is not None:
        _per_class(result, real_feats, fakes, mods, opts, *per_class)
    return result


def _row_info(result: dict, ex: Extractors, real, truncation_psi: float, kimg, t0: float,
              centers: Optional[ClassCenters] = None) -> dict:
    result.update(**describe_center(centers))
    result.update(resize="reals of another size: central square + box filter to the fakes' resolution (as "
                  "prepare); then torch-fidelity TF1 bilinear to 299 (Inception) / 224 (VGG16)",
                  weights_sha256=ex.inception_sha, vgg_weights_sha256=ex.vgg_sha, real=str(real), kimg=kimg,
                  truncation_psi=truncation_psi, seconds=round(time.time() - t0, 3))
    return result


def evaluate_generator(G: torch.nn.Module, real: str | os.PathLike, options: Optional[MetricsOptions] = None,
                       extractors: Optional[Extractors] = None, **overrides) -> dict:
    """Metrics of a generator (already on ``device``, in eval mode) against ``real``.

    ``options`` (keyword ``overrides`` replace its fields): ``num`` fakes (default: as many
    as the reals); a conditional G draws its labels with the real archive's label mix.
    ``per_class`` adds, for each class, FID/KID of ``n_c`` fakes conditioned on it against the
    ``n_c`` reals of that class (equal counts). ``extractors`` lets a caller load the networks
    once; ``sharded`` splits the work over torchrun's ranks (see :func:`_evaluate`; rank 0
    gets the result, others ``{}``).
    """
    t0 = time.time()
    opts = _options(options, overrides)
    real = Path(real)
    n = opts.num if opts.num is not None else len(open_images(real, "--real").names)
    labels = real_labels(real) if G.c_dim else None
    if G.c_dim and labels is None:
        raise UserError(f"{real}: this network is conditional, so the real source must be the labelled archive "
                        "it was trained on (its labels give the fakes' class distribution)")
    if opts.per_class and not G.c_dim:
        raise UserError("--per-class needs a conditional network (this one has no labels)")
    # class centres of every label vector of the reals (the fakes' labels are drawn from them)
    centers = truncation_centers(G, opts.trunc_center, labels)
    ex = extractors or load_extractors(opts.metrics, opts.device, opts.inception_weights, opts.vgg_weights)

    def fakes(row: Optional[torch.Tensor], count: int, select: Optional[Sequence[int]] = None
              ) -> Iterator[torch.Tensor]:
        if row is None:
            c = fake_labels(labels, count) if labels is not None else None
        else:
            c = row.unsqueeze(0).expand(count, -1)
        seeds = list(range(count)) if select is None else list(select)
        if c is not None and select is not None:
            c = c[torch.as_tensor(seeds)]  # the labels of these seeds, as in the unsharded draw
        return iter_fake_images(G, len(seeds), c, opts.truncation_psi, batch=min(opts.batch, 32), seeds=seeds,
                                centers=centers)

    pc = (labels, getattr(G, "class_names", None)) if opts.per_class else None
    result = _evaluate(real, fakes, n, opts, ex, pc, resolution=int(G.img_resolution))
    if not result:  # a rank other than 0 of a sharded evaluation
        return result
    return _row_info(result, ex, real, opts.truncation_psi, getattr(G, "cur_nimg", 0) / 1000, t0, centers)


def compute_metrics(real: str | os.PathLike, fake: str | os.PathLike, options: Optional[MetricsOptions] = None,
                    **overrides) -> dict:
    """Metrics between ``real`` (archive or folder, all of it) and ``fake`` (a checkpoint
    file, generated on the fly from its G_ema, or an image folder read recursively), as
    ``options`` says (keyword ``overrides`` replace its fields, e.g. ``metrics=("fid",)``).

    Returns ``{"fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "f_score"}``
    (those asked for) plus ``n_real``, ``n_fake``, ``resolution``, ``weights_sha256``,
    ``kimg``, ``seconds`` and, with ``per_class``, ``per_class: {class: {...}}``. ``num``
    is the fake count (default: as many as the reals, or all images of a fake folder).
    The real features are cached in ``cache_dir`` (default ``$MTF_CACHE_DIR/stats``; None: not
    cached; see :func:`real_features`).
    """
    t0 = time.time()
    opts = _options(options, overrides)
    fake_path = Path(fake)
    if fake_path.is_file() or fake_path.suffix.lower() == ".pkl":  # a missing .pkl: where to get it (exit 2)
        from gan.checkpoint import load_generator

        G = load_generator(fake_path, opts.device)
        return evaluate_generator(G, real, opts)  # checks the options before loading the extractors
    if not fake_path.is_dir():
        raise UserError(f"--fake/--network {fake_path}: no such checkpoint file or image folder")
    if opts.per_class:
        raise UserError("--per-class needs --network (a conditional generator), not a fake image folder")
    if opts.trunc_center != "global":
        raise UserError(f"--trunc-center {opts.trunc_center} needs --network (fakes drawn here), not a fake image "
                        "folder; drop it")
    ex = load_extractors(opts.metrics, opts.device, opts.inception_weights, opts.vgg_weights)
    files = list_images(fake_path, "--fake")[: opts.num if opts.num is not None else None]
    first = read_rgb(files[0])  # [3, H, W]
    fake_res = first.shape[2] if first.shape[1] == first.shape[2] else None

    def fakes(_row, count: int, select: Optional[Sequence[int]] = None) -> Iterator[torch.Tensor]:
        for i in (range(count) if select is None else select):
            yield _resized(read_rgb(files[i]), fake_res)  # [3, H, W]

    result = _evaluate(Path(real), fakes, len(files), opts, ex, resolution=fake_res)
    return _row_info(result, ex, real, opts.truncation_psi, None, t0)


# ---------------------------------------------------------------------------- result rows


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


class TrainingMetrics:
    """The metrics of a training run (``train.metrics``), computed at every snapshot.

    Each ``fid<N>k`` / ``kid<N>k`` is G_ema against the full training archive, by the
    protocol of :func:`evaluate_generator` (N fakes; one set of fakes per count, shared by
    fid and kid). The extractors are loaded once (:meth:`from_config`), the real features
    extracted once and cached in ``train.metrics_cache`` (default ``$MTF_CACHE_DIR/stats``,
    :func:`default_stats_cache`, shared with ``mtf-gan metrics`` and every other run on the same
    archive). Under torchrun every rank generates and extracts its share; rank
    0 appends one row per metric to ``<run_dir>/metrics.jsonl``, logs it and sends the value
    to TensorBoard as ``Metrics/<name>`` at step ``cur_nimg``.
    """

    def __init__(self, wanted: Sequence[tuple[str, str, int]], real: str | os.PathLike, run_dir: str | os.PathLike,
                 device: str | torch.device, extractors: Extractors, cache_dir: str | os.PathLike,
                 monitor=None) -> None:
        self.wanted = list(wanted)   # (name, kind, fake count), from parse_training_metrics
        self.real = real
        self.run_dir = Path(run_dir)
        self.device = device
        self.extractors = extractors
        self.cache_dir = Path(cache_dir)
        self.monitor = monitor       # a gan.monitor.Monitor (rank 0), or None for no TensorBoard

    @classmethod
    def from_config(cls, train_cfg, dataset_path: str | os.PathLike, run_dir: str | os.PathLike,
                    device: str | torch.device, monitor=None) -> "TrainingMetrics":
        """From the run config's ``train`` section (``metrics``, ``inception_weights``,
        ``metrics_cache``); a missing weights file stops here, before any training."""
        wanted = parse_training_metrics(train_cfg.metrics)
        ex = load_extractors(tuple(sorted({kind for _, kind, _ in wanted})), device, train_cfg.inception_weights)
        cache = Path(train_cfg.metrics_cache).expanduser() if train_cfg.metrics_cache else default_stats_cache()
        return cls(wanted, dataset_path, run_dir, device, ex, cache, monitor)

    def evaluate(self, G_ema: torch.nn.Module, cur_nimg: int, checkpoint: str | os.PathLike) -> list[dict]:
        """Every metric of G_ema at ``cur_nimg`` (the snapshot ``checkpoint``): the rows written
        (on rank 0; ``[]`` on the other ranks, whose share is done)."""
        rows: list[dict] = []
        for num in sorted({n for _, _, n in self.wanted}):  # one set of fakes per count, shared by fid and kid
            same = [(name, kind) for name, kind, n in self.wanted if n == num]
            opts = MetricsOptions(metrics=tuple(kind for _, kind in same), num=num, batch=64, device=self.device,
                                  cache_dir=self.cache_dir, sharded=True)
            res = evaluate_generator(G_ema, self.real, opts, extractors=self.extractors)
            if not res:  # not rank 0: its share is done, rank 0 writes
                continue
            info = {k: v for k, v in res.items() if k not in ("fid", "kid", "kid_std")}
            for name, kind in same:
                row = {"metric": name, "value": res[kind], **({"std": res["kid_std"]} if kind == "kid" else {}),
                       **info, "kimg": cur_nimg / 1000, "checkpoint": Path(checkpoint).name}
                self._write(row, cur_nimg)
                rows.append(row)
        return rows

    def _write(self, row: dict, cur_nimg: int) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.monitor is not None:
            self.monitor.scalar(f"Metrics/{row['metric']}", row["value"], cur_nimg)
        log.info("metric %s %.4g at kimg %.3f (%d fakes vs %d reals, %.1f s)", row["metric"], row["value"],
                 cur_nimg / 1000, row["n_fake"], row["n_real"], row["seconds"])
