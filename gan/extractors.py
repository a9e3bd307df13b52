"""What the metrics stand on: the metric names, the pretrained files they need (found offline),
torch-fidelity's feature networks built from those files, and images run through them.

* Names: ``fid``, ``kid``, ``is``, ``pr`` (:data:`METRICS`), and the in-training names
  ``fid<N>k`` / ``kid<N>k`` (:func:`parse_training_metrics`). The run config validates them
  and checks the weights file before a run folder exists, so they live below it.
* Files: torch-fidelity's ``inception-v3-compat`` weights (TensorFlow's Inception, with TF1's
  bilinear resize to 299 px, so FID is comparable with the literature) and torchvision's
  ImageNet VGG16 (``fc2_relu`` features for precision/recall, Kynkaanniemi et al. 2019).
  Nothing downloads: a file comes from an explicit path or torch's hub cache, and when it is
  absent :class:`gan.util.MissingWeights` (exit status 2) says where to put it.
* Networks: built by torch-fidelity from the file, **once per process** for a given file
  (path, size, mtime), device and feature list. The file's SHA-256 (recorded in every result
  row and in the real-feature cache key) is remembered on disk per (path, size, mtime), in
  ``weights-sha256.json`` under :func:`gan.util.cache_root`: the 95 MB Inception file is
  hashed once per version of the file, not once per evaluation or process; a file replaced
  or touched (another size or mtime) is hashed again.
* :data:`LOADERS` is the one place an extractor is built from its file; the metrics look it
  up at call time, so a test can put a small stand-in network there and run the whole
  protocol (cache, sharding, per-class, result rows, CLI, in-training metrics) in seconds.
* :func:`extract_many` runs uint8 images through the extractors in fixed-size blocks.
* :func:`make_random_inception` writes a random-weight file with Inception's layers, for
  benchmarks and tests on machines without the real file (same compute, meaningless values).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from gan.util import MissingWeights, UserError, atomic_write_text, cache_root

__all__ = [
    "INCEPTION_FILE", "INCEPTION_URL", "VGG_FILE", "VGG_URL", "POOL", "LOGITS", "VGG_FEATURE", "METRICS",
    "parse_training_metrics", "resolve_inception_weights", "resolve_vgg_weights",
    "SHA256_MEMO", "sha256_file", "load_inception", "load_vgg16", "LOADERS", "Extractors", "load_extractors",
    "extract_many", "extract_features", "make_random_inception",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
VGG_FILE = "vgg16-397923af.pth"
VGG_URL = "https://download.pytorch.org/models/" + VGG_FILE
POOL = "2048"              # Inception pool3 features: FID and KID
LOGITS = "logits_unbiased"  # Inception logits: IS
VGG_FEATURE = "fc2_relu"   # VGG16 fc2 after ReLU: precision/recall (torch-fidelity's default layer)
METRICS = ("fid", "kid", "is", "pr")
SHA256_MEMO = "weights-sha256.json"  # under gan.util.cache_root(): {path: {size, mtime_ns, sha256}}


# ---------------------------------------------------------------------------- names


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


# ---------------------------------------------------------------------------- files


def _resolve(path: Optional[str | os.PathLike], filename: str, url: str, option: str, what: str) -> Path:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        where = f"{option} {p} does not exist"
    elif cache.is_file():
        return cache
    else:
        where = f"{filename} is not in torch's cache"
    raise MissingWeights(
        f"{what} weights missing: {where}. This needs the file {filename}; download it from {url} on a machine "
        f"with internet and put it at {cache} (torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass "
        f"{option} PATH. Nothing is downloaded at run time."
    )


def resolve_inception_weights(path: Optional[str | os.PathLike] = None) -> Path:
    """The Inception weights file (TensorFlow Inception converted by torch-fidelity):
    ``path`` if given, else torch's hub cache. Never downloads; raises
    :class:`gan.util.MissingWeights` with one paragraph naming the file, the cache path and the URL."""
    return _resolve(path, INCEPTION_FILE, INCEPTION_URL, "--inception-weights", "Inception (FID/KID/IS)")


def resolve_vgg_weights(path: Optional[str | os.PathLike] = None) -> Path:
    """torchvision's ImageNet VGG16 file for precision/recall, as :func:`resolve_inception_weights`."""
    return _resolve(path, VGG_FILE, VGG_URL, "--vgg-weights", "VGG16 (precision/recall)")


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns): a file that is replaced or rewritten gets a new key."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_memo(memo: Path) -> dict:
    """The SHA-256 memo's entries; a missing or damaged file is an empty memo (it is only a shortcut)."""
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    memo = cache_root() / SHA256_MEMO
    entry = _read_memo(memo).get(path)
    if isinstance(entry, dict) and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns \
            and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = _hash_file(path)
    # Read again just before writing, so an entry another process added meanwhile is kept.
    entries = {**_read_memo(memo), path: {"size": size, "mtime_ns": mtime_ns, "sha256": digest}}
    try:
        atomic_write_text(memo, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # an unwritable cache only costs the next process a re-hash
    return digest


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime): in this process, and across
    processes in ``$MTF_CACHE_DIR/weights-sha256.json`` (written atomically), so a second
    evaluation does not read the 95 MB Inception file again; another size or mtime re-hashes."""
    return _sha256_of(*_file_key(path))


# ---------------------------------------------------------------------------- networks


@functools.lru_cache(maxsize=8)
def _fidelity_extractor(name: str, features: tuple[str, ...], path: str, size: int, mtime_ns: int,
                        device: str) -> torch.nn.Module:
    from torch_fidelity.utils import create_feature_extractor

    # cuda=False: torch-fidelity's default cuda=True fails on machines without a GPU; we move it ourselves.
    fe = create_feature_extractor(name, list(features), cuda=False, feature_extractor_weights_path=path,
                                  verbose=False)
    return fe.to(device)


def load_inception(weights: str | os.PathLike, device: str | torch.device = "cpu",
                   features: Sequence[str] = (POOL,)) -> torch.nn.Module:
    """torch-fidelity's ``inception-v3-compat`` extractor with local weights, on ``device``.

    It takes uint8 ``[N, 3, H, W]`` and resizes to 299 px itself; it returns one tensor
    per name in ``features`` (``"2048"`` pool, ``"logits_unbiased"``). Built once per process
    for a given file, device and feature list, and shared: callers only run it (eval mode,
    no gradients), never modify it.
    """
    return _fidelity_extractor("inception-v3-compat", tuple(features), *_file_key(weights), str(torch.device(device)))


def load_vgg16(weights: str | os.PathLike, device: str | torch.device = "cpu",
               features: Sequence[str] = (VGG_FEATURE,)) -> torch.nn.Module:
    """torch-fidelity's ``vgg16`` extractor (fc2 after ReLU, 4096-d) with local weights,
    built and shared as :func:`load_inception`."""
    return _fidelity_extractor("vgg16", tuple(features), *_file_key(weights), str(torch.device(device)))


#: How each extractor is built: ``loader(weights_path, device, features) -> module`` whose
#: ``features_list`` names its outputs and whose forward maps uint8 ``[N, 3, H, W]`` to one
#: float ``[N, D]`` tensor per feature. :func:`load_extractors` looks the loader up here at
#: call time (tests put a small stand-in network here; users never need to).
LOADERS: dict[str, Callable[..., torch.nn.Module]] = {"inception": load_inception, "vgg16": load_vgg16}


@dataclass(frozen=True)
class Extractors:
    """The loaded extractors of a metric set and their files' SHA-256 (None where the set
    does not need one); the Inception logits are extracted only when IS is asked for."""

    inception: Optional[torch.nn.Module]
    inception_sha: Optional[str]
    vgg: Optional[torch.nn.Module]
    vgg_sha: Optional[str]
    want_is: bool


def load_extractors(metrics: Sequence[str], device: str | torch.device = "cpu",
                    inception_weights: Optional[str | os.PathLike] = None,
                    vgg_weights: Optional[str | os.PathLike] = None) -> Extractors:
    """The extractors ``metrics`` need (Inception for fid/kid/is, VGG16 for pr), on ``device``.

    Every file is resolved before anything is built, so a missing one stops the run before
    any work; an unknown metric name is an error listing the known ones.
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise UserError(f"--metrics: {', '.join(bad) or '(none)'} unknown; choose from {', '.join(METRICS)}")
    inc = inc_sha = vgg = vgg_sha = None
    inc_path = resolve_inception_weights(inception_weights) if {"fid", "kid", "is"} & set(metrics) else None
    vgg_path = resolve_vgg_weights(vgg_weights) if "pr" in metrics else None
    if inc_path is not None:
        feats = (POOL, LOGITS) if "is" in metrics else (POOL,)
        inc, inc_sha = LOADERS["inception"](inc_path, device, feats), sha256_file(inc_path)
    if vgg_path is not None:
        vgg, vgg_sha = LOADERS["vgg16"](vgg_path, device, (VGG_FEATURE,)), sha256_file(vgg_path)
    return Extractors(inc, inc_sha, vgg, vgg_sha, "is" in metrics)


# ---------------------------------------------------------------------------- images -> features


def extract_many(images: Iterable[torch.Tensor], extractors: Sequence[torch.nn.Module], batch: int = 64,
                 device: str | torch.device = "cpu", total: Optional[int] = None, progress: bool = False,
                 desc: str = "features") -> list[list[torch.Tensor]]:
    """One pass over uint8 ``[3, H, W]`` images through several extractors (so fakes are
    generated once for Inception and VGG), ``batch`` images at a time. Returns, per
    extractor, one float tensor ``[N, D]`` per feature it was built with."""
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


# ---------------------------------------------------------------------------- stand-in weights


def make_random_inception(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write an Inception state dict with torch-fidelity's keys and He-initialised convs.

    A stand-in for the real file where it is absent (benchmarks, tests): the compute is the
    same, so speed numbers hold, but the metric values mean nothing. Default init gives
    features ~0, which makes every metric degenerate; He init keeps the activations alive.
    The real loading code (:func:`load_inception`) reads this file as it reads the real one.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    class _NoLoad(fi.FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):  # skip the weights load in __init__
            return None

    orig = fi.load_state_dict_from_url
    fi.load_state_dict_from_url = lambda *a, **k: {}
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        try:
            torch.manual_seed(seed)
            net = _NoLoad("inception-v3-compat", ["2048"])
        finally:
            fi.load_state_dict_from_url = orig
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
