"""Scoring generated faces with trained classifiers (the last stage of ``classify``).

This module holds the pieces every scoring check shares: a trained classifier wrapped so
that *any* image source (a generator, a folder, a prepared archive) goes through exactly
the transform the classifier was evaluated with, and returns class probabilities plus the
penultimate features (for nearest-neighbour and identity checks).

The transform is the evaluation pipeline of :mod:`classify.train`, applied to uint8
images: central square crop, Lanczos resize to the recipe's ``cache_size`` (what
:func:`classify.dataset._decode` does when it builds the decoded cache), then
:func:`classify.train.batch_prep` (bilinear antialiased resize to ``input_size``,
``[0, 1]`` scaling, optional ImageNet normalisation). Because generated and reference
images share it, a resolution shift between a 32 px generator and 256 px real photos
affects both sides of a comparison alike.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from gan.util import UserError

__all__ = ["Classifier", "load_classifier", "to_classifier_size", "iter_image_source", "list_image_files",
           "IMAGE_EXTS"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def to_classifier_size(img: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, size, size]``: central square, Lanczos resize.

    The same steps as the classifier's decoded cache (:func:`classify.dataset._decode`),
    so a scored image is prepared exactly like a test image.
    """
    from PIL import Image

    a = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[0] == 3, (a.dtype, a.shape)
    _, h, w = a.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    a = a[:, top:top + s, left:left + s]
    if s != size:
        hwc = np.ascontiguousarray(a.transpose(1, 2, 0))  # [S, S, 3]
        a = np.asarray(Image.fromarray(hwc).resize((size, size), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))  # [3, size, size]


@dataclass
class Classifier:
    """A trained ``mtf-classify`` checkpoint, ready to score uint8 images of any size."""

    path: Path
    task: str
    classes: list[str]
    model_name: str
    model: nn.Module
    recipe: Any  # classify.train.Recipe
    device: torch.device
    #: ``[K, K]`` counts, rows = true class, columns = predicted, from the run's
    #: ``metrics.json`` (held-out test split) when it sits beside the checkpoint.
    confusion: Optional[np.ndarray] = None
    _feats: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def cache_size(self) -> int:
        return int(self.recipe.data.cache_size)

    @property
    def input_size(self) -> int:
        return int(self.recipe.data.input_size)

    def _hook(self) -> Any:
        """Capture the input of the last ``nn.Linear`` (the penultimate features).

        Every registry model ends in one linear head (``fc`` of ResNet, the last layer of
        ``classifier`` elsewhere), so this works across the registry without per-model code.
        """
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)][-1]
        return last.register_forward_pre_hook(lambda _m, args: self._feats.append(args[0].detach().flatten(1)))

    @torch.no_grad()
    def predict(self, images: Iterable[torch.Tensor], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs [N, K], features [N, D])`` (float32, CPU) for uint8 ``[3, H, W]`` images.

        Each image is brought to ``cache_size`` (:func:`to_classifier_size`) and each batch
        through :func:`classify.train.batch_prep`, i.e. the evaluation transform.
        """
        from classify.train import batch_prep

        prep = batch_prep(self.recipe, self.device)
        probs: list[torch.Tensor] = []
        feats: list[torch.Tensor] = []
        buf: list[torch.Tensor] = []
        handle = self._hook()

        def flush() -> None:
            x = prep(torch.stack(buf).to(self.device))  # [B, 3, input, input]
            self._feats.clear()
            logits = self.model(x).float()  # [B, K]
            probs.append(torch.softmax(logits, 1).cpu())
            feats.append(self._feats[-1].float().cpu())  # [B, D]
            buf.clear()

        try:
            for img in images:
                img = torch.as_tensor(img)
                if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
                    raise ValueError(f"expected uint8 [3, H, W] images, got {img.dtype} {list(img.shape)}")
                buf.append(to_classifier_size(img, self.cache_size))
                if len(buf) == batch:
                    flush()
            if buf:
                flush()
        finally:
            handle.remove()
            self._feats.clear()
        if not probs:
            raise UserError("no images to score")
        return torch.cat(probs), torch.cat(feats)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A ``best.pt``/``last.pt`` of ``mtf-classify train`` as a :class:`Classifier` in eval mode."""
    from classify import train as T

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--classifier {p}: no such file; pass the best.pt of an mtf-classify train run")
    ckpt = T.load_checkpoint(p)
    dev = torch.device(device)
    model = T.model_from_checkpoint(ckpt).to(dev)
    recipe = T.recipe_from_dict(ckpt["recipe"])
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


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; a clear error when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UserError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in this folder or below it")
    return files


def _read_rgb(path: Path) -> torch.Tensor:
    from PIL import Image, ImageOps

    from gan.dataset import to_rgb8

    with Image.open(path) as img:
        img.load()
        rgb = to_rgb8(ImageOps.exif_transpose(img))  # [H, W, 3] uint8
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # [3, H, W]


def iter_image_source(source: str | os.PathLike, num: Optional[int] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, uint8 [3, H, W])`` of an image folder (recursive) or a prepared archive (zip
    or unzipped with ``dataset.json``); ``name`` is the path relative to the source."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path}: no such image folder or archive")
    if (path.is_file() and path.suffix.lower() == ".zip") or (path / "dataset.json").is_file():
        from gan.dataset import ImageDataset

        ds = ImageDataset(path)
        n = len(ds) if num is None else min(num, len(ds))
        names: Sequence[str] = getattr(ds, "names", None) or [f"{i:08d}" for i in range(len(ds))]
        for i in range(n):
            yield str(names[i]), torch.as_tensor(np.asarray(ds[i][0]))
        return
    files = list_image_files(path)
    for f in files[: num if num is not None else len(files)]:
        yield str(f.relative_to(path)), _read_rgb(f)
