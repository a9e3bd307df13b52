"""FID and KID between a real source and a fake source, on top of torch-fidelity.

Why torch-fidelity: its ``inception-v3-compat`` extractor reproduces the TensorFlow
Inception graph (including TF1's bilinear resize to 299 px), so numbers are comparable
with the literature (FID: Heusel et al. 2017, "GANs trained by a two time-scale update
rule"; KID: Binkowski et al. 2018, "Demystifying MMD GANs"). We only feed it images
and call its ``features -> statistics -> metric`` functions; no Inception or Frechet
code is written here.

Protocol (recorded in every result row): G_ema, truncation 1.0 unless told otherwise,
seeds ``0..num-1`` with z drawn exactly as ``mtf-gan generate`` draws them, labels of a
conditional G drawn from the real archive's labels, the full real source as reference.

The steps are exposed separately (``extract_features``, ``fid_statistics``,
``fid_from_statistics``, ``kid_from_features``) so extraction can be sharded over ranks.
Weights never download: they come from an explicit path or torch's hub cache, and when
absent a :class:`MissingWeightsError` says where to put them.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from gan.util import UserError

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "MissingWeightsError", "resolve_inception_weights", "sha256_file",
    "load_inception", "iter_real_images", "iter_fake_images", "extract_features", "fid_statistics",
    "fid_from_statistics", "kid_from_features", "compute_metrics", "source_fingerprint", "real_features",
    "real_labels", "fake_labels",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
FEATURE = "2048"  # pool3 features: what FID and KID use
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class MissingWeightsError(UserError):
    """The Inception weights file is not on this machine (the CLI exits with status 2)."""


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_inception_weights(path: Optional[str | os.PathLike] = None) -> Path:
    """The Inception weights file: ``path`` if given, else torch's hub cache.

    Never downloads (the machines running this are often offline); raises
    :class:`MissingWeightsError` with one paragraph naming the file, the cache path
    and the public URL.
    """
    cache = _hub_checkpoints() / INCEPTION_FILE
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        where = f"--inception-weights {p} does not exist"
    elif cache.is_file():
        return cache
    else:
        where = f"{INCEPTION_FILE} is not in torch's cache"
    raise MissingWeightsError(
        f"Inception weights missing: {where}. FID/KID need the file {INCEPTION_FILE} (TensorFlow Inception "
        f"converted by torch-fidelity); download it from {INCEPTION_URL} on a machine with internet and put it "
        f"at {cache} (torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass --inception-weights PATH."
    )


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception(weights: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """torch-fidelity's ``inception-v3-compat`` extractor with local weights, on ``device``.

    It takes uint8 ``[N, 3, H, W]`` and resizes to 299 px itself. ``cuda=False`` because
    torch-fidelity's default ``cuda=True`` fails on machines without a GPU; we move it.
    """
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor("inception-v3-compat", [FEATURE], cuda=False,
                                  feature_extractor_weights_path=str(weights), verbose=False)
    return fe.to(device)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip" or (path / "dataset.json").is_file()


def _folder_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UserError(f"{path}: no images ({', '.join(IMAGE_EXTS)}) found in this folder or below it")
    return files


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))  # [H, W, 3] uint8, as torch-fidelity reads folders
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [3, H, W]


def iter_real_images(source: str | os.PathLike, num: Optional[int] = None) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` images of a prepared archive (zip or unzipped) or an image folder (recursive)."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"--real {path}: no such archive or folder")
    if _is_archive(path):
        from gan.dataset import ImageDataset

        ds = ImageDataset(path)
        n = len(ds) if num is None else min(num, len(ds))
        for i in range(n):
            img = ds[i][0]
            yield torch.as_tensor(np.asarray(img))
    else:
        files = _folder_files(path)
        for f in files[: num if num is not None else len(files)]:
            yield _load_png(f)


def real_labels(source: str | os.PathLike) -> Optional[torch.Tensor]:
    """float32 ``[N, c_dim]`` labels of an archive (None for a folder or an unlabelled archive)."""
    path = Path(source)
    if not _is_archive(path):
        return None
    from gan.dataset import ImageDataset

    ds = ImageDataset(path, use_labels=True)
    labels = [torch.as_tensor(np.asarray(ds[i][1]), dtype=torch.float32) for i in range(len(ds))]
    if not labels or labels[0].numel() == 0:
        return None
    return torch.stack(labels)  # [N, c_dim]


def fake_labels(labels: torch.Tensor, num: int, seed: int = 0) -> torch.Tensor:
    """``[num, c_dim]``: labels of real images picked uniformly at random (so the fake
    label distribution is the real one), reproducible from ``seed``."""
    idx = np.random.default_rng(seed).integers(0, labels.shape[0], size=num)
    return labels[torch.as_tensor(idx)]


def iter_fake_images(G: torch.nn.Module, num: int, labels: Optional[torch.Tensor] = None,
                     truncation_psi: float = 1.0) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H, W]`` per seed ``0..num-1``, drawn as ``mtf-gan generate`` draws them.

    We call G ourselves (not torch-fidelity's conditional wrapper, which uses ``np.int``
    and fails under numpy 2). ``labels`` ``[num, c_dim]`` is required for a conditional G.
    """
    from gan.generate import generate_images

    if G.c_dim and (labels is None or labels.shape[0] < num):
        raise UserError("this network is conditional: the real source must be a labelled archive "
                        "(its labels give the class distribution of the fakes)")
    for s in range(num):
        c = labels[s: s + 1] if G.c_dim else torch.zeros([1, 0])
        yield generate_images(G, [s], c, truncation_psi=truncation_psi)[0]


def extract_features(images: Iterable[torch.Tensor], extractor: torch.nn.Module, batch: int = 64,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """float ``[N, 2048]`` Inception pool features of uint8 ``[3, H, W]`` images, in batches."""
    out: list[torch.Tensor] = []
    buf: list[torch.Tensor] = []

    def flush() -> None:
        x = torch.stack(buf).to(device)  # [B, 3, H, W] uint8
        with torch.no_grad():
            out.append(extractor(x)[0].detach().cpu())
        buf.clear()

    for img in images:
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected uint8 [3, H, W] images, got {img.dtype} {list(img.shape)}")
        buf.append(img)
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    if not out:
        raise UserError("no images to extract features from")
    return torch.cat(out)  # [N, 2048]


def source_fingerprint(source: str | os.PathLike) -> str:
    """SHA-1 naming a real source's content: an archive's ``dataset.json`` (it lists every
    image's SHA-1), or a folder's file list with sizes and mtimes (cheap, no decoding)."""
    import json
    import zipfile

    path = Path(source)
    h = hashlib.sha1()
    if path.is_file() and path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            h.update(zf.read("dataset.json"))
    elif (path / "dataset.json").is_file():
        h.update((path / "dataset.json").read_bytes())
    else:
        listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in _folder_files(path)]
        h.update(json.dumps(listing).encode())
    return h.hexdigest()


def real_features(real: str | os.PathLike, extractor: torch.nn.Module, weights_sha256: str, batch: int = 64,
                  device: str | torch.device = "cpu", cache_dir: Optional[str | os.PathLike] = None) -> torch.Tensor:
    """``[N, 2048]`` features of the whole real source, read from ``cache_dir`` when a file
    for the same (content fingerprint, extractor, weights hash) exists; written atomically."""
    from gan.util import atomic_path

    if cache_dir is None:
        return extract_features(iter_real_images(real), extractor, batch, device)
    key = hashlib.sha1(f"{source_fingerprint(real)}|inception-v3-compat/{FEATURE}|{weights_sha256}".encode())
    dest = Path(cache_dir) / f"real-features-{key.hexdigest()[:20]}.pt"
    if dest.is_file():
        return torch.load(dest, weights_only=True)
    feats = extract_features(iter_real_images(real), extractor, batch, device)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        torch.save(feats, tmp)
    return feats


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
    r = kid_features_to_metric(feat_real, feat_fake, kid_subset_size=k, kid_subsets=subsets, verbose=False)
    return float(r[KEY_METRIC_KID_MEAN]), float(r[KEY_METRIC_KID_STD])


def compute_metrics(real: str | os.PathLike, fake: str | os.PathLike, metrics: Sequence[str] = ("fid", "kid"),
                    num: Optional[int] = None, batch: int = 64, device: str | torch.device = "cpu",
                    inception_weights: Optional[str | os.PathLike] = None, truncation_psi: float = 1.0,
                    cache_dir: Optional[str | os.PathLike] = None) -> dict:
    """Metrics between ``real`` (archive or folder, all of it) and ``fake`` (a checkpoint
    ``.pkl``/``.pt`` file, generated on the fly, or an image folder).

    Returns ``{"fid": ..., "kid": ..., "kid_std": ..., "n_real", "n_fake", "resolution",
    "weights_sha256", "kimg", "seconds"}``. ``num`` is the fake count (default: as many as
    the reals, or all images of a fake folder). With ``cache_dir`` the real features are
    cached there (see :func:`real_features`).
    """
    t0 = time.time()
    bad = [m for m in metrics if m not in ("fid", "kid")]
    if bad:
        raise UserError(f"--metrics: {', '.join(bad)} not supported yet; choose from fid, kid")
    weights = resolve_inception_weights(inception_weights)
    fe = load_inception(weights, device)
    weights_sha = sha256_file(weights)
    feat_real = real_features(real, fe, weights_sha, batch, device, cache_dir)
    fake_path = Path(fake)
    kimg = None
    if fake_path.is_file():
        from gan.checkpoint import load_generator

        G = load_generator(fake_path, device)
        kimg = getattr(G, "cur_nimg", 0) / 1000
        n = num if num is not None else feat_real.shape[0]
        labels = real_labels(real) if G.c_dim else None
        if labels is not None:
            labels = fake_labels(labels, n)
        fakes = iter_fake_images(G, n, labels, truncation_psi)
    elif fake_path.is_dir():
        files = _folder_files(fake_path)
        fakes = (_load_png(f) for f in files[: num if num is not None else len(files)])
    else:
        raise UserError(f"--fake/--network {fake_path}: no such checkpoint file or image folder")
    first: list[torch.Tensor] = []

    def remember(it: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for img in it:
            if not first:
                first.append(img)
            yield img

    feat_fake = extract_features(remember(fakes), fe, batch, device)
    result: dict = {}
    if "fid" in metrics:
        result["fid"] = fid_from_statistics(fid_statistics(feat_real), fid_statistics(feat_fake))
    if "kid" in metrics:
        result["kid"], result["kid_std"] = kid_from_features(feat_real, feat_fake)
    result.update(n_real=int(feat_real.shape[0]), n_fake=int(feat_fake.shape[0]),
                  resolution=int(first[0].shape[-1]), resize="torch-fidelity TF1 bilinear to 299",
                  weights_sha256=weights_sha, real=str(real), kimg=kimg, truncation_psi=truncation_psi,
                  seconds=round(time.time() - t0, 3))
    return result
