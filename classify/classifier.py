"""Trained classifiers as scorers of *any* image source, and the one inference loop of ``classify``.

Every check after training (attribute shares, memorization, identity leaks, pseudo-labels)
runs trained classifiers over images that were not in their decoded cache: a generator's
output, a folder, a prepared archive. Here:

* :class:`Classifier` wraps a ``best.pt`` so that any uint8 ``[3, H, W]`` image goes through
  exactly the transform the classifier was evaluated with, and returns class probabilities
  plus the penultimate features (for nearest-neighbour and identity checks);
* :func:`iter_image_source` / :func:`source_items` read a folder (recursive) or an archive
  (through :func:`gan.dataset.open_images`);
* :func:`score_stream` runs several classifiers over a stream of images block by block,
  keeping only what the reports need (:class:`ScoredSet`: probabilities, features, 64-px
  thumbnails), so memory grows with the number of images, not their size;
* :func:`blocks` is the one block-and-flush loop: the stream is cut into blocks of images,
  each block into classifier batches.

The transform is the evaluation pipeline of :mod:`classify.loaders`, applied to uint8
images: central square crop, Lanczos resize to the recipe's ``cache_size``
(:func:`gan.images.square_resize` with ``"lanczos"``, what :mod:`classify.dataset` does when
it builds the decoded cache), then :func:`classify.loaders.batch_prep` (bilinear antialiased
resize to ``input_size``, ``[0, 1]`` scaling, optional ImageNet normalisation). Because
generated and reference images share it, a resolution shift between a 32 px generator and
256 px real photos affects both sides of a comparison alike.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classify.recipe import Recipe
from gan.dataset import is_archive, open_images
from gan.distributed import pick_device
from gan.images import square_resize_chw
from gan.util import UserError

__all__ = ["Classifier", "load_classifier", "check_classifiers", "match_class", "to_classifier_size", "blocks",
           "iter_image_source", "source_items", "resolve_recorded", "pixel_features", "ScoredSet",
           "score_stream", "score_source", "THUMB", "BLOCK"]

#: Side of the thumbnails kept of every scored image (for the sample grids and pair plots).
THUMB = 64
#: Images read or generated per block before the classifiers run on them.
BLOCK = 256

T = TypeVar("T")


def blocks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items of ``items`` (the last one shorter), read lazily.

    The one block-and-flush loop of ``classify``: :func:`score_stream` cuts its image
    stream into blocks of :data:`BLOCK` with it and :meth:`Classifier.predict` cuts a block
    into batches, so a stream of any length is never held whole.
    """
    it = iter(items)
    while block := list(itertools.islice(it, size)):
        yield block


def to_classifier_size(img: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, size, size]``: :func:`gan.images.square_resize`
    (central square, Lanczos) in the channels-first layout.

    The same steps as the classifier's decoded cache (:mod:`classify.dataset`), so a scored
    image is prepared exactly like a test image.
    """
    return square_resize_chw(img, size, "lanczos")  # [3, size, size]


# ---------------------------------------------------------------------------- the classifier


@dataclass
class Classifier:
    """A trained ``mtf-classify`` checkpoint, ready to score uint8 images of any size."""

    path: Path
    task: str
    classes: list[str]
    model_name: str
    model: nn.Module
    recipe: Recipe
    device: torch.device
    #: ``[K, K]`` counts, rows = true class, columns = predicted, from the run's
    #: ``metrics.json`` (held-out test split) when it sits beside the checkpoint.
    confusion: Optional[np.ndarray] = None
    _feats: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def cache_size(self) -> int:
        return int(self.recipe.data.cache_size)

    def _hook(self) -> Any:
        """Capture the input of the last ``nn.Linear`` (the penultimate features).

        Every registry model ends in one linear head (``fc`` of ResNet, the last layer of
        ``classifier`` elsewhere), so this works across the registry without per-model code.
        """
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)][-1]
        return last.register_forward_pre_hook(lambda _m, args: self._feats.append(args[0].detach().flatten(1)))

    def _sized(self, images: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for img in images:
            img = torch.as_tensor(img)
            if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"expected uint8 [3, H, W] images, got {img.dtype} {list(img.shape)}")
            yield to_classifier_size(img, self.cache_size)

    @torch.no_grad()
    def predict(self, images: Iterable[torch.Tensor], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs [N, K], features [N, D])`` (float32, CPU) for uint8 ``[3, H, W]`` images.

        Each image is brought to ``cache_size`` (:func:`to_classifier_size`) and each batch
        through :func:`classify.loaders.batch_prep`, i.e. the evaluation transform.
        """
        from classify.loaders import batch_prep

        prep = batch_prep(self.recipe, self.device)
        probs: list[torch.Tensor] = []
        feats: list[torch.Tensor] = []
        handle = self._hook()
        try:
            for chunk in blocks(self._sized(images), batch):
                x = prep(torch.stack(chunk).to(self.device))  # [B, 3, input, input]
                self._feats.clear()
                logits = self.model(x).float()  # [B, K]
                probs.append(torch.softmax(logits, 1).cpu())
                feats.append(self._feats[-1].float().cpu())  # [B, D]
        finally:
            handle.remove()
            self._feats.clear()
        if not probs:
            raise UserError("no images to score")
        return torch.cat(probs), torch.cat(feats)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A ``best.pt``/``last.pt`` of ``mtf-classify train`` as a :class:`Classifier` in eval mode."""
    from classify.checkpoint import load_for_inference

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--classifier {p}: no such file; pass the best.pt of an mtf-classify train run")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    ckpt, model, recipe = load_for_inference(p, dev)
    confusion = None
    mfile = p.parent / "metrics.json"
    if mfile.is_file():
        try:
            m = json.loads(mfile.read_text())
            cm = np.asarray(m.get("confusion"), dtype=np.float64)
            if cm.shape == (len(ckpt["classes"]),) * 2:
                confusion = cm
        except (ValueError, TypeError):
            confusion = None
    return Classifier(path=p, task=str(ckpt["task"]), classes=list(ckpt["classes"]), model_name=str(ckpt["model_name"]),
                      model=model, recipe=recipe, device=dev, confusion=confusion)


def match_class(task: str, name: str, classes: Sequence[str]) -> Optional[int]:
    """Index of ``name`` in ``classes`` through the MTF class aliases (case-insensitive)."""
    from classify.dataset import canonical_class

    want = canonical_class(task, str(name)) or str(name)
    for i, c in enumerate(classes):
        if (canonical_class(task, c) or c).lower() == want.lower():
            return i
    return None


def check_classifiers(classifiers: Sequence[Classifier]) -> dict[str, Classifier]:
    """``{task: classifier}``; errors for an unknown task, classes of another task set, or
    two classifiers for one task (each error names the files)."""
    from classify.dataset import TASK_CLASSES, TASKS, canonical_task

    if not classifiers:
        raise UserError("--classifier: pass at least one best.pt of mtf-classify train (one per task)")
    out: dict[str, Classifier] = {}
    for c in classifiers:
        try:
            task = canonical_task(c.task)
        except UserError:
            raise UserError(f"--classifier {c.path}: trained for task {c.task!r}, which scoring does not know; "
                            f"pass classifiers for {', '.join(TASKS)}") from None
        if task in TASK_CLASSES:
            known = [match_class(task, name, TASK_CLASSES[task]) for name in c.classes]
            if any(j is None for j in known):
                raise UserError(f"--classifier {c.path}: its {task} classes ({', '.join(c.classes)}) are not the "
                                f"MTF {task} classes ({', '.join(TASK_CLASSES[task])}); it was trained on another "
                                f"task set: pass a classifier trained on the MTF {task} tree")
        if task in out:
            raise UserError(f"--classifier: two classifiers for task {task} ({out[task].path} and {c.path}); "
                            f"pass one per task")
        c.task = task
        out[task] = c
    return out


# ---------------------------------------------------------------------------- image sources


def _open_source(source: str | os.PathLike, option: str = "") -> tuple[list[str], Callable[[int], torch.Tensor]]:
    """``(names, read)`` of an archive or an image folder (:func:`gan.dataset.open_images`,
    the one reader of image sources): ``read(i)`` is image ``i`` as uint8 ``[C, H, W]``;
    ``names`` are paths relative to the source (posix). ``option`` (``--reference``)
    prefixes the errors."""
    path = Path(source)
    if path.is_file() and not is_archive(path):
        raise UserError(f"{option + ' ' if option else ''}{path}: not a folder or a .zip archive made by "
                        f"`mtf-gan prepare`")
    images = open_images(path, what=option)
    return list(images.names), images.image


def iter_image_source(source: str | os.PathLike, num: Optional[int] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, uint8 [3, H, W])`` of the first ``num`` (default: all) images of an image
    folder (recursive) or a prepared archive (zip or unzipped with ``dataset.json``);
    ``name`` is the path relative to the source."""
    names, read = _open_source(source)
    for i in range(len(names) if num is None else min(num, len(names))):
        yield names[i], read(i)


def source_items(source: str | os.PathLike, num: Optional[int] = None, seed: int = 0,
                 option: str = "--reference") -> tuple[list[str], np.ndarray, Iterator[tuple[str, torch.Tensor]]]:
    """``(names, indices, items)`` of ``num`` images of an archive or folder, drawn
    uniformly without replacement with ``seed`` (all when ``num`` is None or larger),
    in source order; ``items`` reads them lazily.

    A random subset, not the first ``num``: archives and folders are sorted by person,
    so their first images are a few people and would bias every share.
    """
    names, read = _open_source(source, option)
    n = len(names)
    idx = np.arange(n)
    if num is not None and num < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=num, replace=False))
    picked = [names[int(i)] for i in idx]
    return picked, idx, ((names[int(i)], read(int(i))) for i in idx)


def resolve_recorded(path: str | os.PathLike, anchor: Path) -> Optional[Path]:
    """A path recorded in a run's config (relative to the cwd of that run): as is, else
    relative to each folder above ``anchor``; None when neither exists."""
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute():
        for parent in anchor.resolve().parents:
            if (parent / p).exists():
                return parent / p
    return None


# ---------------------------------------------------------------------------- scored sets


def pixel_features(images: Iterable[Any], size: int = 16) -> np.ndarray:
    """``[N, 3 * size * size]`` float32: each uint8 ``[3, H, W]`` image as downsampled pixels.

    The fallback feature space for :func:`classify.leak.memorization` when no
    face-recognition classifier is given. The central square is area-averaged to ``size``
    px (which removes JPEG noise and small shifts' high frequencies) and the image's mean
    is subtracted, so the cosine distance of two images is one minus their pixel
    correlation: 0 for a copy, also one that was re-encoded or brightened, and well above 0
    for two different faces. Accepts any iterable of images or a uint8 ``[N, 3, H, W]`` tensor.
    """
    if size < 2:
        raise UserError(f"memorization: pixel feature size {size} is too small; pass 8 or more")
    out: list[np.ndarray] = []
    for img in images:
        t = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img)
        if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"pixel_features: expected uint8 [3, H, W] images, got {t.dtype} {list(t.shape)}")
        _, h, w = t.shape
        s = min(h, w)
        t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        x = F.adaptive_avg_pool2d(t.float().unsqueeze(0) / 255.0, size)[0]  # [3, size, size]
        x = x.flatten() - x.mean()
        out.append(x.numpy())
    if not out:
        raise UserError("memorization: no images to compute pixel features of")
    return np.stack(out).astype(np.float32)  # [N, 3 * size * size]


@dataclass
class ScoredSet:
    """Classifier outputs for one image set, computed in blocks so that only small
    thumbnails (``THUMB`` px) stay in memory, never the full images.

    ``probs[task]`` is ``[N, K]``; ``feats`` holds the face-recognition classifier's
    penultimate features ``[N, D]`` (the memorization feature space); ``pixels`` the
    downsampled-pixel features ``[N, 768]`` used without one.
    """

    names: list[str]
    thumbs: list[torch.Tensor]  # N x uint8 [3, t, t]
    probs: dict[str, np.ndarray]
    feats: Optional[np.ndarray] = None
    pixels: Optional[np.ndarray] = None
    labels: Optional[torch.Tensor] = None  # [N, c_dim] generator conditions
    source: Optional[Path] = None  # archive or folder the images came from
    indices: Optional[np.ndarray] = None  # [N] positions in ``source``
    resolution: Optional[int] = None

    def __len__(self) -> int:
        return len(self.names)


def _rgb(items: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, img in items:
        img = torch.as_tensor(img)
        if img.ndim == 3 and img.shape[0] == 1:
            img = img.expand(3, -1, -1).contiguous()  # grey images: the classifiers take RGB
        yield str(name), img


def score_stream(items: Iterable[tuple[str, torch.Tensor]], classifiers: dict[str, Classifier], batch: int = 64,
                 pixels: bool = True, what: str = "images", thumbs: bool = True, features: bool = True,
                 on_block: Optional[Callable[[int], Any]] = None) -> ScoredSet:
    """Run every classifier on ``(name, uint8 [3, H, W])`` items, block by block.

    Kept per image: the name, the probabilities of every task, and unless switched off a
    thumbnail (``thumbs``), the face-recognition features (``features``) and the
    :func:`pixel_features` (``pixels``). ``on_block(n)`` is called after each block of ``n``
    images (a progress bar). An empty stream is a :class:`UserError` naming ``what``.
    """
    names: list[str] = []
    small: list[torch.Tensor] = []
    probs: dict[str, list[np.ndarray]] = {t: [] for t in classifiers}
    feats: list[np.ndarray] = []
    pix: list[np.ndarray] = []
    res: Optional[int] = None
    for block in blocks(_rgb(items), BLOCK):
        images = [img for _, img in block]
        for name, img in block:
            res = res or int(min(img.shape[-2:]))
            names.append(name)
            if thumbs:
                small.append(to_classifier_size(img, min(THUMB, int(min(img.shape[-2:])))))
        for task, clf in classifiers.items():
            p, f = clf.predict(images, batch=batch)  # [B, K], [B, D]
            probs[task].append(p.numpy())
            if features and task == "face_recognition":
                feats.append(f.numpy())
        if pixels:
            pix.append(pixel_features(images))
        if on_block is not None:
            on_block(len(block))
    if not names:
        raise UserError(f"no {what} to score")
    return ScoredSet(names=names, thumbs=small, probs={t: np.concatenate(v) for t, v in probs.items()},
                     feats=np.concatenate(feats) if feats else None,
                     pixels=np.concatenate(pix) if pix else None, resolution=res)


def score_source(source: str | os.PathLike, classifiers: dict[str, Classifier], num: Optional[int] = None,
                 batch: int = 64, option: str = "--reference", seed: int = 0) -> ScoredSet:
    """:func:`score_stream` over :func:`source_items`."""
    names, idx, items = source_items(source, num, seed, option)
    s = score_stream(items, classifiers, batch, what=f"images in {option} {source}")
    s.source, s.indices = Path(source), idx
    return s
