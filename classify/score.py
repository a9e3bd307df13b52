"""Scoring generated faces with trained classifiers (the last stage of ``classify``).

:func:`score` (``mtf-classify score``) answers "what does the generator generate?": per
task the class shares the classifier predicts on generated and on reference images, the
same shares corrected for the classifier's errors (black-box shift estimation, Lipton et
al. 2018), their total variation and KL distances, confidence histograms and sample grids;
for a conditional generator the condition-vs-prediction matrix; and, through
:mod:`classify.leak` and :mod:`classify.pseudo_labels`, the memorization and identity-leak
checks and a predictions CSV. Images are scored block by block and only 64-px thumbnails
are kept, so memory grows with the number of images, not their size.

This module also holds the pieces every scoring check shares: a trained classifier wrapped so
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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from classify.evaluate import pyplot, save_figure
from gan.metrics import IMAGE_EXTS  # one list of image types for both packages
from gan.util import UserError

__all__ = ["Classifier", "load_classifier", "to_classifier_size", "iter_image_source", "list_image_files",
           "IMAGE_EXTS", "score", "ScoredSet", "score_stream", "score_source", "check_classifiers", "class_shares",
           "bbse_correct", "total_variation", "kl_divergence", "smoothed", "task_report", "consistency_report",
           "reference_labels", "plot_attributes", "format_markdown"]



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
    dev = torch.device(device)
    ckpt, model, recipe = T.load_for_inference(p, dev)
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
    from gan.metrics import list_images

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    return list_images(root)


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


# ============================================================================ attribute report
#
# Everything below turns predictions into the report of ``mtf-classify score``:
# distributions -> (BBSE) corrections -> distances -> plots and tables. The numeric parts
# are pure functions of counts and matrices so the tests can check them by hand.

#: Additive smoothing (pseudo-count per class) before KL, so a class the generator never
#: produces gives a large but finite divergence (Jeffreys' prior, 1/2 per class).
KL_PSEUDOCOUNT = 0.5
#: Above this condition number the BBSE system is treated as singular (least squares).
BBSE_MAX_CONDITION = 1e6
#: Classes shown per panel / per sample grid; face recognition has hundreds.
MAX_CLASSES_SHOWN = 20
MAX_GRID_ROWS = 12
#: The report's layout version (bump when a key changes meaning).
REPORT_VERSION = 1


def class_shares(probs: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [K], shares [K])`` of the arg-max predictions of ``probs [N, K]``.

    Hard predictions, not mean probabilities: BBSE's confusion matrix counts hard
    predictions too (Lipton et al. 2018, sec. 3), so both sides of ``C^T q = mu`` match.
    """
    p = np.asarray(probs, dtype=np.float64)
    assert p.ndim == 2 and p.shape[0] > 0, p.shape
    counts = np.bincount(p.argmax(1), minlength=p.shape[1]).astype(np.int64)  # [K]
    return counts, counts / counts.sum()


def bbse_correct(pred_share: Sequence[float] | np.ndarray, confusion: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Black-box shift estimation (Lipton, Wang & Smola, ICML 2018, eq. 2 and Prop. 2).

    Under label shift the class-conditional behaviour of a fixed classifier,
    ``C[y, j] = P(pred = j | true = y)``, is the same on the classifier's test set and on
    the scored images, so the predicted shares ``mu`` satisfy ``mu = C^T q`` for the true
    shares ``q``. ``C`` is ``confusion`` (rows true, columns predicted) with each row
    divided by its count; a class with no test images gets an identity row (assumed
    recognised perfectly: nothing better is known about it).

    Solving: ``np.linalg.solve`` when ``C`` is well conditioned; when it is singular or
    nearly so (condition number above :data:`BBSE_MAX_CONDITION`: two classes the
    classifier confuses identically, a class it never predicts), the minimum-norm
    least-squares solution (``np.linalg.lstsq``), which spreads the share of
    indistinguishable classes evenly instead of blowing up. Either way the solution is
    clipped to ``>= 0`` and renormalised to sum to 1 (the clipped-simplex variant used in
    practice; the raw solution can leave the simplex through sampling noise). If nothing
    positive is left, the uncorrected shares are returned. ``info`` says which path ran.
    """
    mu = np.asarray(pred_share, dtype=np.float64)  # [K]
    cm = np.asarray(confusion, dtype=np.float64)  # [K, K]
    k = mu.shape[0]
    assert cm.shape == (k, k), (cm.shape, k)
    support = cm.sum(axis=1, keepdims=True)  # [K, 1]
    cond_rows = np.where(support > 0, cm / np.maximum(support, 1e-12), np.eye(k))  # P(pred | true)
    a = cond_rows.T  # [K, K]: mu = a @ q
    sv = np.linalg.svd(a, compute_uv=False)
    condition = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    info: dict[str, Any] = {"condition_number": condition if math.isfinite(condition) else None,
                            "untested_classes": int((support[:, 0] == 0).sum())}
    if condition <= BBSE_MAX_CONDITION:
        q = np.linalg.solve(a, mu)
        info["method"] = "solve"
    else:
        q = np.linalg.lstsq(a, mu, rcond=None)[0]
        info["method"] = "lstsq"
        info["note"] = ("the confusion matrix is (nearly) singular: minimum-norm least squares, so the shares of "
                        "classes the classifier cannot tell apart are split evenly")
    info["clipped"] = bool((q < 0).any())
    q = np.clip(q, 0.0, None)
    if q.sum() <= 0:
        info["method"] = "none"
        info["note"] = "the correction left no positive share; uncorrected shares reported"
        return mu.copy(), info
    return q / q.sum(), info


def total_variation(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """``TV(p, q) = 1/2 sum |p - q|`` in [0, 1]: the largest difference in probability the
    two distributions give any set of classes."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def smoothed(share: Sequence[float] | np.ndarray, n: int, pseudocount: float = KL_PSEUDOCOUNT) -> np.ndarray:
    """Shares of ``n`` samples with ``pseudocount`` added to every class's count."""
    s = np.asarray(share, np.float64)
    return (s * n + pseudocount) / (n + pseudocount * s.shape[0])


def kl_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """``KL(p || q) = sum p log(p / q)`` in nats (0 log 0 = 0; pass smoothed ``q``)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


# ---------------------------------------------------------------------------- sources


#: Side of the thumbnails kept of every scored image (for the sample grids and pair plots).
THUMB = 64
#: Images read or generated per block before the classifiers run on them.
BLOCK = 256


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


def score_stream(items: Iterable[tuple[str, torch.Tensor]], classifiers: dict[str, Classifier], batch: int = 64,
                 pixel_features: bool = True, what: str = "images") -> ScoredSet:
    """Run every classifier on ``(name, uint8 [3, H, W])`` items, block by block."""
    names: list[str] = []
    thumbs: list[torch.Tensor] = []
    probs: dict[str, list[np.ndarray]] = {t: [] for t in classifiers}
    feats: list[np.ndarray] = []
    pixels: list[np.ndarray] = []
    block: list[torch.Tensor] = []
    res: Optional[int] = None

    def flush() -> None:
        for task, clf in classifiers.items():
            p, f = clf.predict(block, batch=batch)  # [B, K], [B, D]
            probs[task].append(p.numpy())
            if task == "face_recognition":
                feats.append(f.numpy())
        if pixel_features:
            from classify.leak import pixel_features as pf

            pixels.append(pf(block))
        block.clear()

    for name, img in items:
        img = torch.as_tensor(img)
        if img.ndim == 3 and img.shape[0] == 1:
            img = img.expand(3, -1, -1).contiguous()  # grey images: the classifiers take RGB
        res = res or int(min(img.shape[-2:]))
        names.append(str(name))
        thumbs.append(to_classifier_size(img, min(THUMB, int(min(img.shape[-2:])))))
        block.append(img)
        if len(block) == BLOCK:
            flush()
    if block:
        flush()
    if not names:
        raise UserError(f"no {what} to score")
    return ScoredSet(names=names, thumbs=thumbs, probs={t: np.concatenate(v) for t, v in probs.items()},
                     feats=np.concatenate(feats) if feats else None,
                     pixels=np.concatenate(pixels) if pixels else None, resolution=res)


def _gan_training_archive(network: str | os.PathLike) -> Optional[Path]:
    """The training archive named in a GAN checkpoint's config (``data.path``), or None."""
    from gan.checkpoint import load_checkpoint

    state = load_checkpoint(network)
    path = (state.get("config") or {}).get("data", {}).get("path")
    return Path(path) if path else None


def _is_archive(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() == ".zip") or (path / "dataset.json").is_file()


def source_items(source: str | os.PathLike, num: Optional[int] = None, seed: int = 0,
                 option: str = "--reference") -> tuple[list[str], np.ndarray, Iterator[tuple[str, torch.Tensor]]]:
    """``(names, indices, items)`` of ``num`` images of an archive or folder, drawn
    uniformly without replacement with ``seed`` (all when ``num`` is None or larger),
    in source order; ``items`` reads them lazily.

    A random subset, not the first ``num``: archives and folders are sorted by person,
    so their first images are a few people and would bias every share.
    """
    path = Path(source)
    if not path.exists():
        raise UserError(f"{option} {path}: no such image folder or archive")
    if _is_archive(path):
        from gan.dataset import ImageDataset

        ds = ImageDataset(path)
        names: list[str] = list(ds.names)
        read = lambda i: torch.as_tensor(np.asarray(ds[i][0]))  # noqa: E731
    else:
        if path.is_file():
            raise UserError(f"{option} {path}: not a folder or a .zip archive made by `mtf-gan prepare`")
        try:
            files = list_image_files(path)
        except UserError as exc:
            raise UserError(f"{option} {exc}") from None
        names = [f.relative_to(path).as_posix() for f in files]
        read = lambda i: _read_rgb(files[i])  # noqa: E731
    n = len(names)
    idx = np.arange(n)
    if num is not None and num < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=num, replace=False))
    picked = [names[int(i)] for i in idx]
    return picked, idx, ((names[int(i)], read(int(i))) for i in idx)


def score_source(source: str | os.PathLike, classifiers: dict[str, Classifier], num: Optional[int] = None,
                 batch: int = 64, option: str = "--reference", seed: int = 0) -> ScoredSet:
    """:func:`score_stream` over :func:`source_items`."""
    names, idx, items = source_items(source, num, seed, option)
    s = score_stream(items, classifiers, batch, what=f"images in {option} {source}")
    s.source, s.indices = Path(source), idx
    return s


def _condition_labels(G: nn.Module, n: int, archives: Sequence[Optional[Path]]) -> tuple[torch.Tensor, str]:
    """``[n, c_dim]`` conditions for a conditional G drawn as ``mtf-gan metrics`` draws them:
    labels of real images of the first labelled archive of ``archives`` picked at random
    (so the generated and real class mixes agree), else uniform over the classes."""
    from gan.metrics import fake_labels, real_labels

    for a in archives:
        if a is not None and a.exists() and _is_archive(a):
            labels = real_labels(a)
            if labels is not None and labels.shape[1] == G.c_dim:
                return fake_labels(labels, n, seed=0), f"the label mix of {a}"
    rng = np.random.default_rng(0)
    names = list(getattr(G, "class_names", None) or [])
    groups: dict[str, list[int]] = {}
    for i in range(G.c_dim):
        col = names[i].split("=", 1)[0] if i < len(names) and "=" in names[i] else ""
        groups.setdefault(col, []).append(i)
    c = torch.zeros([n, G.c_dim])
    for members in groups.values():
        pick = rng.integers(0, len(members), size=n)
        c[torch.arange(n), torch.as_tensor(np.asarray(members)[pick])] = 1.0
    return c, "uniform over the classes (no labelled training archive found)"


def load_conditioned_generator(network: str | os.PathLike, n: int, class_name: Optional[str] = None,
                               device: str | torch.device = "cpu",
                               label_archives: Sequence[Optional[Path]] = ()) -> tuple[nn.Module, torch.Tensor, str]:
    """``(G, labels [n, c_dim], how the labels were chosen)``. ``class_name`` fixes the
    class of a conditional G (unknown names are errors that list the valid ones);
    without it each image gets a label from :func:`_condition_labels`."""
    from gan.checkpoint import load_generator
    from gan.generate import class_vector

    G = load_generator(network, device)
    if G.c_dim == 0 or class_name is not None:
        c = class_vector(G, class_name)  # [1, c_dim]; errors list the valid classes
        return G, c.expand(n, -1).clone(), ("unconditional" if G.c_dim == 0 else f"all --class {class_name}")
    labels, how = _condition_labels(G, n, label_archives)
    return G, labels, how


def generated_items(G: nn.Module, seeds: Sequence[int], labels: torch.Tensor,
                    truncation_psi: float = 1.0) -> Iterator[tuple[str, torch.Tensor]]:
    """``(seedNNNN, uint8 [3, H, W])`` per seed, image ``i`` drawn with ``labels[i]``,
    exactly as ``mtf-gan generate --seeds`` draws it (the same z and noise per seed)."""
    from gan.generate import generate_images

    for i, s in enumerate(seeds):
        yield f"seed{s:04d}", generate_images(G, [s], labels[i:i + 1], truncation_psi)[0].cpu()


# ---------------------------------------------------------------------------- labels and classes


def _match_class(task: str, name: str, classes: Sequence[str]) -> Optional[int]:
    """Index of ``name`` in ``classes`` through the MTF class aliases (case-insensitive)."""
    from classify.dataset import canonical_class

    want = canonical_class(task, str(name)) or str(name)
    for i, c in enumerate(classes):
        if (canonical_class(task, c) or c).lower() == want.lower():
            return i
    return None


def reference_labels(ref: ScoredSet, task: str, classes: Sequence[str]) -> Optional[np.ndarray]:
    """``int64 [N]`` true classes (indices into ``classes``, -1 where unknown) of the
    reference images for ``task``, or None when the reference carries no such labels.

    Labels come from a prepared archive labelled by a CSV column named for the task
    (``--label-column gender``), or from an ``attributes.csv`` (columns ``file`` and the
    task) at the root of an image folder, as the synthetic non-curated tree has.
    """
    from classify.dataset import canonical_task

    def col_task(col: str) -> Optional[str]:
        try:
            return canonical_task(col)
        except UserError:
            return None

    if ref.source is None or ref.indices is None:
        return None
    if _is_archive(ref.source):
        from gan.dataset import ImageDataset

        ds = ImageDataset(ref.source, use_labels=True)
        if not ds.has_labels:
            return None
        lab = ds.labels.numpy()  # [n, L]
        src = ds.meta.get("label_source") or {}
        if ds.label_groups:
            groups = [(g["column"], g["offset"], g["classes"]) for g in ds.label_groups]
        elif isinstance(src, dict) and len(src.get("columns") or []) == 1 and isinstance(ds.class_names, list):
            groups = [(src["columns"][0], 0, ds.class_names)]
        else:
            return None
        for col, off, names in groups:
            if col_task(col) != task:
                continue
            mapping = np.array([-1 if (j := _match_class(task, n, classes)) is None else j for n in names] + [-1])
            sub = lab[ref.indices, off:off + len(names)]  # [N, k]
            which = np.where(sub.max(1) > 0, sub.argmax(1), len(names))
            return mapping[which]
        return None
    csv_path = ref.source / "attributes.csv"
    if not csv_path.is_file():
        return None
    import csv

    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    col = next((c for c in rows[0] if c and col_task(c) == task), None)
    if col is None or "file" not in rows[0]:
        return None
    table = {r["file"].replace("\\", "/"): r[col] for r in rows}
    out = []
    for name in ref.names:
        v = table.get(name)
        j = _match_class(task, v, classes) if v else None
        out.append(-1 if j is None else j)
    return np.asarray(out, dtype=np.int64)


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
            known = [_match_class(task, name, TASK_CLASSES[task]) for name in c.classes]
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


def condition_groups(G: nn.Module, clf: Classifier) -> Optional[list[tuple[int, int]]]:
    """``[(label index, classifier class index)]`` when G's conditions are ``clf``'s classes
    (one column, or the ``column=value`` entries of the matching column), else None."""
    from classify.dataset import canonical_task

    names = list(getattr(G, "class_names", None) or [])
    if G.c_dim == 0 or len(names) != G.c_dim:
        return None
    pairs = []
    for i, name in enumerate(names):
        col, val = name.split("=", 1) if "=" in name else (None, name)
        if col is not None:
            try:
                if canonical_task(col) != clf.task:
                    continue
            except UserError:
                continue
        j = _match_class(clf.task, val, clf.classes)
        if j is None:
            if col is None:
                return None  # a one-column G whose classes are not this task's
            continue
        pairs.append((i, j))
    return pairs or None


# ---------------------------------------------------------------------------- plots


def _shown_classes(t: dict[str, Any]) -> list[int]:
    """Class indices a panel shows: all, or the :data:`MAX_CLASSES_SHOWN` most frequent."""
    k = len(t["classes"])
    if k <= MAX_CLASSES_SHOWN:
        return list(range(k))
    weight = np.asarray(t["generated"]["share"]) + (np.asarray(t["reference"]["share"]) if t["reference"] else 0)
    return sorted(np.argsort(-weight, kind="stable")[:MAX_CLASSES_SHOWN].tolist())


def plot_attributes(tasks: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars per task: predicted shares on the reference and generated images
    (same classifier, same transform), the BBSE-corrected generated shares where the
    classifier has a confusion matrix, and the reference's true shares as ticks."""
    plt = pyplot()
    n = len(tasks)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.6, 3.9), squeeze=False)
    for ax, (task, t) in zip(axes[0], tasks.items()):
        shown = _shown_classes(t)
        x = np.arange(len(shown))
        bars = [("reference", t["reference"]["share"], "#8c8c8c")] if t["reference"] else []
        bars.append(("generated", t["generated"]["share"], "#1f77b4"))
        if t["generated"].get("corrected") is not None:
            bars.append(("generated, BBSE-corrected", t["generated"]["corrected"], "#ff7f0e"))
        w = 0.8 / len(bars)
        for b, (label, share, colour) in enumerate(bars):
            ax.bar(x - 0.4 + w * (b + 0.5), np.asarray(share)[shown], w, label=label, color=colour)
        true = t["reference"].get("true_share") if t["reference"] else None
        if true is not None:
            ax.scatter(x - 0.4 + w * 0.5, np.asarray(true)[shown], marker="_", s=220, color="black", zorder=3,
                       label="reference, true labels")
        ax.set_xticks(x, labels=[t["classes"][i] for i in shown], rotation=30 if len(shown) > 2 else 0,
                      ha="right" if len(shown) > 2 else "center", fontsize=8 if len(shown) > 6 else 9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of images")
        notes = [] if t["tv"] is None else [f"TV {t['tv']:.3f}"]
        if len(shown) < len(t["classes"]):
            notes.append(f"top {len(shown)} of {len(t['classes'])}")
        ax.set_title(f"{task} ({', '.join(notes)})" if notes else task, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_confidence(t: dict[str, Any], gen_conf: np.ndarray, ref_conf: np.ndarray, path: Path) -> None:
    """Histograms of the top-class probability on generated and reference images. A
    generated histogram piled near ``1/K`` means faces the classifier finds ambiguous
    (often artefacts); one piled near 1 like the reference's means clear attributes."""
    plt = pyplot()
    k = len(t["classes"])
    bins = np.linspace(1.0 / k, 1.0, 21)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    if len(ref_conf):
        ax.hist(ref_conf, bins=bins, density=True, alpha=0.55, color="#8c8c8c", label=f"reference ({len(ref_conf)})")
    ax.hist(gen_conf, bins=bins, density=True, alpha=0.55, color="#1f77b4", label=f"generated ({len(gen_conf)})")
    ax.set_xlabel("classifier confidence (top-class probability)")
    ax.set_ylabel("density")
    ax.set_title(f"{t['task']}: confidence", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _strip(images: Sequence[torch.Tensor], size: int) -> np.ndarray:
    """``[size, n * (size + 2), 3]`` uint8: images side by side (resized to ``size``)."""
    tiles = [to_classifier_size(img, size).permute(1, 2, 0).numpy() for img in images]  # [size, size, 3]
    pad = np.full((size, 2, 3), 255, np.uint8)
    return np.concatenate([np.concatenate([t, pad], 1) for t in tiles], 1)


def plot_samples(t: dict[str, Any], images: Sequence[torch.Tensor], probs: np.ndarray, path: Path, n: int = 8) -> None:
    """Per predicted class (the most frequent :data:`MAX_GRID_ROWS`), the ``n`` generated
    faces the classifier is surest of, then the ``n`` it is least sure of: what the
    generator's 'Female' looks like, and which faces are borderline."""
    plt = pyplot()
    pred, conf = probs.argmax(1), probs.max(1)
    counts = np.bincount(pred, minlength=probs.shape[1])
    rows = [j for j in np.argsort(-counts, kind="stable")[:MAX_GRID_ROWS] if counts[j] > 0]
    size = max(32, min(64, int(images[0].shape[-1])))
    fig, axes = plt.subplots(len(rows), 2, figsize=(2 * (n * 0.62 + 0.4), 0.75 * len(rows) + 0.7), squeeze=False)
    for r, j in enumerate(rows):
        members = np.flatnonzero(pred == j)
        order = members[np.argsort(-conf[members], kind="stable")]
        for col, pick, what in ((0, order[:n], "most"), (1, order[::-1][:n], "least")):
            ax = axes[r][col]
            ax.imshow(_strip([images[i] for i in pick], size), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{t['classes'][j]}\n({counts[j]})", rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(f"{what} confident", fontsize=9)
    fig.suptitle(f"{t['task']}: generated faces by predicted class", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_consistency(c: dict[str, Any], path: Path) -> None:
    """Condition (rows) vs classifier prediction (columns), each row a share of its faces."""
    plt = pyplot()
    m = np.asarray(c["matrix"])
    fig, ax = plt.subplots(figsize=(1.1 * m.shape[1] + 2.8, 0.8 * m.shape[0] + 1.8))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the condition's faces")
    ax.set_xticks(range(m.shape[1]), labels=c["classes"], rotation=30 if m.shape[1] > 2 else 0)
    ax.set_yticks(range(m.shape[0]), labels=[f"{n} ({k})" for n, k in zip(c["conditions"], c["counts"])])
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > 0.5 else "black")
    ax.set_xlabel(f"{c['task']} classifier prediction")
    ax.set_ylabel("generator condition (images)")
    ax.set_title(f"conditional consistency: {c['task']}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- per-task numbers


def task_report(clf: Classifier, gen_probs: np.ndarray, ref_probs: Optional[np.ndarray],
                ref_true: Optional[np.ndarray] = None) -> dict[str, Any]:
    """The attribute numbers of one task (JSON-ready): predicted counts and shares on
    the generated and reference images, their BBSE-corrected shares, TV and KL.

    The comparison that needs no labels is *predicted vs predicted*: both sides go
    through one classifier and one transform, so its errors and the resolution shift
    affect both alike. BBSE (:func:`bbse_correct`) goes one step further and estimates
    the true shares, using the classifier's test confusion matrix. KL is
    ``KL(reference || generated)`` with :data:`KL_PSEUDOCOUNT` per class on the
    generated side: large when the generator drops classes the reference has.
    """
    k = len(clf.classes)
    counts, share = class_shares(gen_probs)
    gen: dict[str, Any] = {"num": int(len(gen_probs)), "counts": counts.tolist(), "share": share.tolist(),
                           "mean_confidence": float(gen_probs.max(1).mean()), "corrected": None}
    out: dict[str, Any] = {
        "task": clf.task, "classifier": str(clf.path), "model": clf.model_name, "classes": list(clf.classes),
        "classifier_test_accuracy": (float(np.trace(clf.confusion) / clf.confusion.sum())
                                     if clf.confusion is not None and clf.confusion.sum() > 0 else None),
        "generated": gen, "reference": None, "bbse": None,
        "tv": None, "kl": None, "tv_corrected": None, "kl_corrected": None,
    }
    if clf.confusion is not None:
        gen["corrected"], out["bbse"] = bbse_correct(share, clf.confusion)
        gen["corrected"] = gen["corrected"].tolist()
    if ref_probs is None:
        return out
    rcounts, rshare = class_shares(ref_probs)
    ref: dict[str, Any] = {"num": int(len(ref_probs)), "counts": rcounts.tolist(), "share": rshare.tolist(),
                           "mean_confidence": float(ref_probs.max(1).mean()), "corrected": None,
                           "true_share": None, "accuracy": None, "labelled": 0}
    out["reference"] = ref
    if clf.confusion is not None:
        ref["corrected"] = bbse_correct(rshare, clf.confusion)[0].tolist()
    if ref_true is not None and (ref_true >= 0).any():
        m = ref_true >= 0
        ref["labelled"] = int(m.sum())
        ref["true_share"] = (np.bincount(ref_true[m], minlength=k) / m.sum()).tolist()
        ref["accuracy"] = float((ref_probs[m].argmax(1) == ref_true[m]).mean())
    out["tv"] = total_variation(share, rshare)
    out["kl"] = kl_divergence(smoothed(rshare, len(ref_probs)), smoothed(share, len(gen_probs)))
    if gen["corrected"] is not None:
        out["tv_corrected"] = total_variation(gen["corrected"], ref["corrected"])
        out["kl_corrected"] = kl_divergence(smoothed(ref["corrected"], len(ref_probs)),
                                            smoothed(gen["corrected"], len(gen_probs)))
    return out


def consistency_report(G: nn.Module, labels: torch.Tensor, clf: Classifier, probs: np.ndarray,
                       pairs: list[tuple[int, int]], ref_true: Optional[np.ndarray] = None,
                       ref_probs: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Condition-vs-prediction matrix of a conditional G (rows: the conditions drawn,
    each a share of its images, so rows sum to 1), the agreement per condition (the
    share assigned to the conditioned class), and beside it the classifier's own recall
    of that class on labelled reference images, else on its test split: a condition
    whose agreement is far below the classifier's recall is a generator failure, one
    about as low is the classifier's error."""
    names = list(G.class_names)
    lab = labels.numpy()  # [N, c_dim]
    cols = np.asarray([i for i, _ in pairs])
    cond = cols[lab[:, cols].argmax(1)]  # [N] label index (within this task's entries)
    pred = probs.argmax(1)
    k = len(clf.classes)
    rows, conditions, counts, agreement = [], [], [], {}
    for i, j in pairs:
        members = cond == i
        if not members.any():
            continue
        row = np.bincount(pred[members], minlength=k) / members.sum()
        rows.append(row.tolist())
        conditions.append(names[i])
        counts.append(int(members.sum()))
        agreement[names[i]] = float(row[j])
    if ref_true is not None and ref_probs is not None and (ref_true >= 0).any():
        m = ref_true >= 0
        cm = np.zeros((k, k))
        np.add.at(cm, (ref_true[m], ref_probs[m].argmax(1)), 1)
        source = f"reference images with true {clf.task} labels ({int(m.sum())})"
    elif clf.confusion is not None:
        cm, source = clf.confusion, "the classifier's test split (metrics.json)"
    else:
        cm, source = None, None
    recall: dict[str, Optional[float]] = {}
    for i, j in pairs:
        if names[i] in agreement:
            recall[names[i]] = float(cm[j, j] / cm[j].sum()) if cm is not None and cm[j].sum() > 0 else None
    return {"task": clf.task, "conditions": conditions, "classes": list(clf.classes), "counts": counts,
            "matrix": rows, "agreement": agreement, "classifier_recall": recall, "classifier_recall_source": source,
            "mean_agreement": float(np.mean(list(agreement.values()))) if agreement else None}


# ---------------------------------------------------------------------------- report files


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the numbers of ``report.json`` as tables, with one line on how to read each."""
    g, r = report["generated"], report["reference"]
    lines = ["# Attribute report", ""]
    if g["kind"] == "network":
        lines.append(f"Generated: {g['num']} images from `{g['network']}` (seeds {g['seeds']}, truncation "
                     f"{g['truncation_psi']}, conditions: {g['conditions']}), {g['resolution']} px.")
    else:
        lines.append(f"Generated: {g['num']} images from `{g['images']}`, {g['resolution']} px.")
    if r is not None:
        lines.append(f"Reference: {r['num']} images from `{r['path']}`, {r['resolution']} px.")
    lines += ["", "Shares are of arg-max predictions; both sides go through the same classifier and the same "
              "transform, so its errors and the resolution change affect both alike. *BBSE* estimates the true "
              "shares from the classifier's test confusion matrix (Lipton et al. 2018). TV is the total variation "
              "distance (0 same, 1 disjoint); KL is KL(reference || generated) in nats.", ""]
    for task, t in report["tasks"].items():
        ref = t["reference"]
        acc = _pct(t["classifier_test_accuracy"])
        lines += [f"## {task}", "", f"Classifier `{t['classifier']}` ({t['model']}, test accuracy {acc}"
                  + (f", accuracy on the labelled reference {_pct(ref['accuracy'])}" if ref and ref["accuracy"] is not None else "")
                  + ").", ""]
        head = ["class", "generated", "generated (BBSE)"]
        if ref:
            head += ["reference", "reference (BBSE)"] + (["reference (true)"] if ref["true_share"] else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        shown = _shown_classes(t)
        for i, c in enumerate(t["classes"]):
            if i not in shown:
                continue
            cells = [c, _pct(t["generated"]["share"][i]),
                     _pct(t["generated"]["corrected"][i]) if t["generated"]["corrected"] else "-"]
            if ref:
                cells += [_pct(ref["share"][i]), _pct(ref["corrected"][i]) if ref["corrected"] else "-"]
                if ref["true_share"]:
                    cells.append(_pct(ref["true_share"][i]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if ref:
            lines.append(f"TV {_num(t['tv'])}, KL {_num(t['kl'])} nats; after BBSE: TV {_num(t['tv_corrected'])}, "
                         f"KL {_num(t['kl_corrected'])}. Mean confidence: generated "
                         f"{_num(t['generated']['mean_confidence'], '.2f')}, reference {_num(ref['mean_confidence'], '.2f')}.")
        if t["bbse"] and t["bbse"].get("note"):
            lines.append(f"BBSE: {t['bbse']['note']}.")
        lines += ["", f"![{task} confidence]({t['files']['confidence']}) ![{task} samples]({t['files']['samples']})", ""]
    c = report.get("consistency")
    if c:
        lines += [f"## Conditional consistency ({c['task']})", "",
                  "Share of the faces generated with each condition that the classifier assigns to that class, beside "
                  f"the classifier's own recall of the class on {c['classifier_recall_source'] or '(unknown)'}: "
                  "agreement well below the recall is the generator's failure, not the classifier's.", "",
                  "| condition | images | agreement | classifier recall |", "|---|---|---|---|"]
        for name, n in zip(c["conditions"], c["counts"]):
            lines.append(f"| {name} | {n} | {_pct(c['agreement'][name])} | {_pct(c['classifier_recall'].get(name))} |")
        lines += ["", f"![consistency]({c['file']})", ""]
    m = report.get("memorization")
    if m:
        s = m["summary"]
        lines += ["## Memorization", "", f"Nearest {m['reference_role']} image of every generated face in "
                  f"{m['feature_space']} ({s['metric']} distance).", "",
                  "| | median distance | share below held-out p1 | share below held-out p5 |", "|---|---|---|---|",
                  f"| generated | {_num(s['median_distance'])} | {_pct(s.get('fraction_below', {}).get('p1'))} | "
                  f"{_pct(s.get('fraction_below', {}).get('p5'))} |",
                  f"| held-out real ({m['heldout']}) | {_num(s.get('heldout_median_distance'))} | 1% (by definition) | 5% |",
                  "", "Without copying the generated shares are about 1% and 5%; many times more means the generator "
                  "reproduces training images.", "", f"![closest pairs]({m['file']})", ""]
    lk = report.get("identity_leak")
    if lk:
        cal = lk["calibration"]
        lines += ["## Identity leak", "", f"{lk['count']} of {lk['num']} generated faces ({_pct(lk['fraction'])}) are "
                  f"assigned to a known person with confidence >= {lk['threshold']:.3f} ({cal['rule']}; held-out "
                  f"accuracy {_pct(cal['heldout_accuracy'])} on {cal['heldout_images']} images).", ""]
        if "stranger_images" not in cal:
            lines += ["Without `--strangers` (faces of people the classifier does not know) this threshold only fixes "
                      "the recall on real look-alikes; it does not bound false matches, so read the share as an upper "
                      "bound.", ""]
        if lk["per_person"]:
            lines += ["| person | flagged faces |", "|---|---|"] + [f"| {p} | {n} |" for p, n in list(lk["per_person"].items())[:20]]
        lines += ["", f"![leaks]({lk['file']})", ""]
    if report.get("identity_leak_skipped"):
        lines += ["## Identity leak", "", f"Skipped: {report['identity_leak_skipped']}", ""]
    p = report.get("predictions")
    if p:
        lines += ["## Predictions", "", f"`{p['path']}`: {p['rows']} rows of {p['images']} images "
                  f"({p['dropped']} dropped: no prediction above --min-confidence {p['min_confidence']}).", ""]
    lines += ["![attributes](attributes.png)", ""]
    return "\n".join(lines)


def _check_outdir(outdir: Path) -> None:
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise UserError(f"--outdir {outdir} exists and is not empty; pass a new folder (a report is never "
                        f"written over an earlier one)")


def _resolve_recorded(path: str | os.PathLike, anchor: Path) -> Optional[Path]:
    """A path recorded in a run's config (relative to the cwd of that run): as is, else
    relative to each folder above ``anchor``."""
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute():
        for parent in anchor.resolve().parents:
            if (parent / p).exists():
                return parent / p
    return None


def _folder_split(clf: Classifier, folder: Path) -> list[tuple[Path, int]]:
    """``(image, class index)`` of a ``<person>/*`` folder; persons the classifier does not
    know are an error that names them."""
    folder = Path(folder)
    items, unknown = [], set()
    for f in list_image_files(folder):
        rel = f.relative_to(folder)
        if len(rel.parts) < 2:
            continue
        j = _match_class(clf.task, rel.parts[0], clf.classes)
        if j is None:
            unknown.add(rel.parts[0])
        else:
            items.append((f, j))
    if unknown or not items:
        names = ", ".join(sorted(unknown)[:3]) or "none in person folders"
        raise UserError(f"--identity-heldout {folder}: expected <person>/* folders of the face-recognition "
                        f"classifier's people; unknown: {names}")
    return items


def _identity_split(clf: Classifier) -> tuple[Optional[Any], str]:
    """The face-recognition classifier's own tree (from its run's ``config.yaml``) as a
    :class:`classify.dataset.TaskData` in its class order, or ``(None, why not)``."""
    from classify import train as T
    from gan.config import load_config

    cfg_path = clf.path.parent / "config.yaml"
    if not cfg_path.is_file():
        return None, f"{cfg_path} is missing, so the classifier's held-out split is unknown"
    try:
        cfg = load_config(T.RunConfig, cfg_path)
    except Exception as exc:  # noqa: BLE001 - an old or edited config: report, do not fail the report
        return None, f"{cfg_path} cannot be read ({exc})"
    data = _resolve_recorded(cfg.data, clf.path.parent)
    if data is None:
        return None, (f"the classifier's data {cfg.data} (from {cfg_path}) is not found; run from the folder it was "
                      "trained in")
    try:
        td = T.scan_for(data, clf.task, cfg.recipe, classes=clf.classes)
    except UserError as exc:
        return None, str(exc)
    return td, str(data)


def _identity_leak(fr: Classifier, gen: ScoredSet, outdir: Path, batch: int, quantile: float,
                   false_match_rate: float, strangers: Optional[ScoredSet],
                   heldout_dir: Optional[str | os.PathLike] = None) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """Calibrate the identity threshold on held-out photos of the classifier's people
    (``heldout_dir``, else the val, else test split of the tree it was trained on, found
    through its run's ``config.yaml``; :func:`classify.leak.calibrate_threshold`) and flag
    generated faces above it."""
    from classify import leak

    if heldout_dir is not None:
        items = _folder_split(fr, Path(heldout_dir))
        split, where, train_items = "--identity-heldout", str(heldout_dir), items
    else:
        td, where = _identity_split(fr)
        if td is None:
            return None, where + "; pass --identity-heldout DIR (<person>/* photos it did not train on)"
        split = "val" if td.splits.get("val") else "test"
        items, train_items = td.splits[split], td.splits["train"]
    held = score_stream(((p.name, _read_rgb(p)) for p, _ in items), {"face_recognition": fr}, batch,
                        pixel_features=False, what=f"held-out images ({split} split of {where})")
    true = np.asarray([y for _, y in items], dtype=np.int64)
    cal = leak.identity_calibration(held.probs["face_recognition"], true, quantile,
                                    strangers.probs["face_recognition"] if strangers is not None else None,
                                    false_match_rate)
    res = leak.identity_leak(gen.probs["face_recognition"], cal["threshold"], fr.classes)
    res["calibration"] = dict(cal, split=f"{split} of {where}")
    people: dict[str, list[torch.Tensor]] = {}
    wanted = set(res["people"][:16])
    for p, y in train_items:
        name = fr.classes[y]
        if name in wanted and len(people.setdefault(name, [])) < 4:
            people[name].append(to_classifier_size(_read_rgb(p), min(THUMB, gen.thumbs[0].shape[-1])))
    res["file"] = "identity_leaks.png"
    leak.plot_leaks(gen.thumbs, people, res, outdir / res["file"])
    return res, None


def _memorization(gen: ScoredSet, ref: ScoredSet, heldout: Optional[ScoredSet], outdir: Path,
                  role: str, heldout_fraction: float = 0.1, space: str = "auto") -> dict[str, Any]:
    """Nearest reference image of each generated face (:func:`classify.leak.memorization`).

    Feature space: the face-recognition classifier's penultimate features when one is
    given (identity, not pose or background, decides closeness), else downsampled pixels.
    Held-out baseline: ``heldout`` when given; else a random ``heldout_fraction`` of the
    reference images is taken out of the search set and their distances to the rest
    are the baseline (fresh real images of the same population).
    """
    from classify import leak

    use_fr = gen.feats is not None and ref.feats is not None and space != "pixels"
    if space == "face" and not use_fr:
        raise UserError("--nn-space face needs a face_recognition --classifier; pass one or use --nn-space pixels")
    g = gen.feats if use_fr else gen.pixels
    r = ref.feats if use_fr else ref.pixels
    train_rows = np.arange(len(ref))
    if heldout is not None:
        h = heldout.feats if use_fr else heldout.pixels
        held_desc = f"{len(heldout)} images of {heldout.source}"
    else:
        n_h = max(1, int(round(heldout_fraction * len(ref)))) if len(ref) > 1 else 0
        pick = np.random.default_rng(0).permutation(len(ref))[:n_h]
        mask = np.ones(len(ref), bool)
        mask[pick] = False
        train_rows = np.flatnonzero(mask)
        h = r[pick] if n_h else None
        held_desc = f"{n_h} reference images left out of the search set"
    res = leak.memorization(g, r[train_rows], h)
    res["index"] = train_rows[res["index"]]  # back to reference rows
    for c in res["summary"]["closest"]:
        c["train"] = int(train_rows[c["train"]])
        c["generated_name"], c["train_name"] = gen.names[c["generated"]], ref.names[c["train"]]
    leak.plot_closest_pairs(gen.thumbs, ref.thumbs, res, outdir / "closest_pairs.png")
    return {"summary": res["summary"], "feature_space": ("face-recognition classifier features" if use_fr
                                                          else "downsampled pixels (16 px)"),
            "reference_role": role, "heldout": held_desc, "file": "closest_pairs.png"}


# ---------------------------------------------------------------------------- score


def score(
    outdir: str | os.PathLike,
    classifiers: Sequence[str | os.PathLike | Classifier],
    network: Optional[str | os.PathLike] = None,
    images: Optional[str | os.PathLike] = None,
    num: Optional[int] = None,
    seeds: Optional[Sequence[int] | str] = None,
    truncation_psi: float = 1.0,
    class_name: Optional[str] = None,
    reference: Optional[str | os.PathLike] = None,
    reference_num: Optional[int] = None,
    heldout: Optional[str | os.PathLike] = None,
    strangers: Optional[str | os.PathLike] = None,
    memorization: bool = True,
    nn_space: str = "auto",
    identity_heldout: Optional[str | os.PathLike] = None,
    identity_quantile: float = 0.95,
    false_match_rate: float = 0.01,
    predictions: Optional[str | os.PathLike] = None,
    person_csv: Optional[str | os.PathLike] = None,
    person_column: Optional[str] = None,
    min_confidence: float = 0.0,
    vote: bool = True,
    device: str = "cpu",
    batch: int = 64,
    echo: Any = print,
) -> dict[str, Any]:
    """Score generated (or any) faces with trained classifiers and write the report.

    Inputs: ``network`` (a GAN checkpoint: ``seeds``, else seeds ``0..num-1``, with
    ``truncation_psi`` and, for a conditional G, ``class_name`` or labels drawn from the
    training archive's label mix) or ``images`` (a folder, read recursively, or an
    archive; ``num`` samples it); ``classifiers``: best.pt files, one per task;
    ``reference``: real images to compare with (default: the GAN's training archive
    named in its checkpoint; required with ``images`` unless only ``predictions`` are
    wanted); ``reference_num`` samples it (default: all).

    Writes into ``outdir`` (new or empty): ``report.json``, ``report.md``,
    ``attributes.png``, per task ``confidence_<task>.png`` and ``samples_<task>.png``,
    ``consistency_<task>.png`` for a conditional G, ``closest_pairs.png``
    (memorization), ``identity_leaks.png`` (with a face-recognition classifier) and
    ``predictions`` when asked. Returns the report dict (plus ``outdir``).
    """
    from classify.train import resolve_device

    out = Path(outdir)
    _check_outdir(out)
    if (network is None) == (images is None):
        raise UserError("pass exactly one of --network CKPT (score a generator) or --images DIR (score a folder)")
    if predictions is not None and Path(predictions).exists():
        raise UserError(f"--predictions {predictions} exists; pass a new file name (nothing is overwritten)")
    if nn_space not in ("auto", "face", "pixels"):
        raise UserError(f"--nn-space {nn_space}: choose auto, face or pixels")
    if batch < 1:
        raise UserError(f"--batch {batch}: pass a positive batch size")
    if num is not None and num < 1:
        raise UserError(f"--num {num}: pass a positive number of images")
    if class_name is not None and network is None:
        raise UserError("--class needs --network (it picks the condition of a conditional generator)")
    if not 0 <= truncation_psi <= 2:
        raise UserError(f"--trunc {truncation_psi}: use a value in [0, 1] (1 = no truncation)")
    dev = resolve_device(device)
    clfs = check_classifiers([c if isinstance(c, Classifier) else load_classifier(c, dev) for c in classifiers])

    # The reference, and what the generator was trained on.
    train_archive = None
    if network is not None:
        train_archive = _gan_training_archive(network)
        if train_archive is not None:
            train_archive = _resolve_recorded(train_archive, Path(network).parent)
    if reference is None and network is not None:
        if train_archive is None:
            raise UserError(f"--network {network}: its config names no training archive that exists here "
                            f"(data.path); pass --reference ZIP|DIR with real images to compare with")
        reference = train_archive
    if reference is None and predictions is None:
        raise UserError("--images needs --reference ZIP|DIR: real images to compare the attribute shares with "
                        "(for pseudo-labels only, pass --predictions FILE.csv)")

    # Generated side.
    echo(f"score: classifiers for {', '.join(clfs)}; device {dev}")
    G = None
    gen_info: dict[str, Any]
    if network is not None:
        from gan.generate import parse_seeds

        if isinstance(seeds, str):
            seed_list = parse_seeds(seeds)
        else:
            seed_list = [int(s) for s in seeds] if seeds is not None else list(range(num if num is not None else 1000))
        G, labels, how = load_conditioned_generator(network, len(seed_list), class_name, dev,
                                                    [train_archive, Path(reference) if reference else None])
        echo(f"score: generating {len(seed_list)} images from {network} ({how})")
        gen = score_stream(generated_items(G, seed_list, labels, truncation_psi), clfs, batch, what="generated images")
        gen.labels = labels
        span = f"{seed_list[0]}-{seed_list[-1]}" if seed_list == list(range(seed_list[0], seed_list[-1] + 1)) else \
            ",".join(map(str, seed_list[:8])) + ("..." if len(seed_list) > 8 else "")
        gen_info = {"kind": "network", "network": str(network), "seeds": span, "truncation_psi": truncation_psi,
                    "class": class_name, "conditions": how, "c_dim": int(G.c_dim),
                    "class_names": list(getattr(G, "class_names", None) or []) or None,
                    "kimg": getattr(G, "cur_nimg", 0) / 1000}
    else:
        echo(f"score: reading {images}")
        gen = score_source(images, clfs, num, batch, option="--images")
        gen_info = {"kind": "images", "images": str(images)}
    gen_info.update(num=len(gen), resolution=gen.resolution)

    ref = None
    if reference is not None:
        echo(f"score: reading the reference {reference}")
        ref = score_source(reference, clfs, reference_num, batch, option="--reference")

    # Per task numbers and plots.
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "version": REPORT_VERSION, "generated": gen_info,
        "reference": None if ref is None else {"path": str(reference), "num": len(ref), "resolution": ref.resolution,
                                                "is_training_archive": train_archive is not None and
                                                Path(reference).resolve() == Path(train_archive).resolve()},
        "tasks": {}, "consistency": None, "memorization": None, "identity_leak": None, "predictions": None,
    }
    ref_true: dict[str, Optional[np.ndarray]] = {}
    for task, clf in clfs.items():
        ref_true[task] = reference_labels(ref, task, clf.classes) if ref is not None else None
        t = task_report(clf, gen.probs[task], ref.probs[task] if ref is not None else None, ref_true[task])
        t["files"] = {"confidence": f"confidence_{task}.png", "samples": f"samples_{task}.png"}
        plot_confidence(t, gen.probs[task].max(1), ref.probs[task].max(1) if ref is not None else np.zeros(0),
                        out / t["files"]["confidence"])
        plot_samples(t, gen.thumbs, gen.probs[task], out / t["files"]["samples"])
        report["tasks"][task] = t
    plot_attributes(report["tasks"], out / "attributes.png")

    # Conditional consistency: the first classifier whose classes are G's conditions.
    if G is not None and G.c_dim > 0:
        for task, clf in clfs.items():
            pairs = condition_groups(G, clf)
            if pairs:
                c = consistency_report(G, gen.labels, clf, gen.probs[task], pairs, ref_true[task],
                                       ref.probs[task] if ref is not None else None)
                c["file"] = f"consistency_{task}.png"
                plot_consistency(c, out / c["file"])
                report["consistency"] = c
                break
        else:
            report["consistency_skipped"] = (f"the generator's conditions ({', '.join(G.class_names or [])}) are not "
                                             f"the classes of any classifier given ({', '.join(clfs)})")

    # Memorization and identity leak (classify.leak).
    if memorization and ref is not None:
        held = score_source(heldout, clfs, None, batch, option="--heldout") if heldout is not None else None
        role = "training archive" if report["reference"]["is_training_archive"] else "reference"
        report["memorization"] = _memorization(gen, ref, held, out, role, space=nn_space)
    if "face_recognition" in clfs:
        stranger_set = (score_source(strangers, {"face_recognition": clfs["face_recognition"]}, None, batch,
                                     option="--strangers") if strangers is not None else None)
        report["identity_leak"], why = _identity_leak(clfs["face_recognition"], gen, out, batch, identity_quantile,
                                                      false_match_rate, stranger_set, identity_heldout)
        if why:
            report["identity_leak_skipped"] = why

    # Pseudo-labels (classify.pseudo_labels): one row per scored image.
    if predictions is not None:
        report["predictions"] = _write_predictions(gen, clfs, Path(predictions), person_csv, person_column,
                                                   min_confidence, images, vote)

    from gan.util import atomic_write_text

    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    atomic_write_text(out / "report.md", format_markdown(report))
    for line in summary_lines(report):
        echo(line)
    echo(f"score: report in {out / 'report.md'} (numbers: report.json; bars: {out / 'attributes.png'})")
    report["outdir"] = str(out)
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _write_predictions(gen: ScoredSet, clfs: dict[str, Classifier], path: Path, person_csv: Optional[str | os.PathLike],
                       person_column: Optional[str], min_confidence: float,
                       images: Optional[str | os.PathLike], vote: bool = True) -> dict[str, Any]:
    """``predictions.csv`` from the probabilities already computed (no second pass), with
    a per-person vote when a person is known (CSV column, else the first folder level)."""
    from classify import pseudo_labels as PL

    if person_column and person_csv is None:
        csv_guess = Path(images) / "attributes.csv" if images is not None else None
        if csv_guess is None or not csv_guess.is_file():
            raise UserError(f"--person-column {person_column} needs --person-csv FILE.csv holding that column "
                            f"(the images folder has no attributes.csv)")
        person_csv = csv_guess
    rows = []
    for i, name in enumerate(gen.names):
        row: dict[str, Any] = {"file": name}
        for task, clf in clfs.items():
            p = gen.probs[task][i]
            row[task], row[f"{task}_confidence"] = clf.classes[int(p.argmax())], float(p.max())
        rows.append(row)
    files = [r["file"] for r in rows]
    if not vote:
        return PL.write_predictions(rows, path, min_confidence)
    person_of = (PL.persons_from_csv(person_csv, person_column, files) if person_csv is not None
                 else PL.persons_from_folders(files))
    if person_of:
        vote = PL.person_vote(rows, person_of, min_confidence)
        return PL.write_predictions(rows, path, min_confidence, vote=vote, person_of=person_of)
    return PL.write_predictions(rows, path, min_confidence)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short summary printed at the end: one line per task and check."""
    lines = []
    for task, t in report["tasks"].items():
        gen = ", ".join(f"{c} {100 * s:.0f}%" for c, s in list(zip(t["classes"], t["generated"]["share"]))[:6])
        line = f"{task}: generated {gen}"
        if t["reference"]:
            ref = ", ".join(f"{100 * s:.0f}%" for s in t["reference"]["share"][:6])
            line += f" | reference {ref} | TV {t['tv']:.3f}"
            if t["tv_corrected"] is not None:
                line += f" (BBSE {t['tv_corrected']:.3f})"
        lines.append(line)
    c = report.get("consistency")
    if c:
        lines.append(f"conditional consistency ({c['task']}): " + ", ".join(
            f"{n} {100 * a:.0f}% (classifier {_pct(c['classifier_recall'].get(n))})" for n, a in c["agreement"].items()))
    m = report.get("memorization")
    if m and "fraction_below" in m["summary"]:
        lines.append(f"memorization: {100 * m['summary']['fraction_below']['p1']:.1f}% of generated faces closer to the "
                     f"{m['reference_role']} than 99% of held-out real images (about 1% expected without copying)")
    lk = report.get("identity_leak")
    if lk:
        lines.append(f"identity leak: {lk['count']} of {lk['num']} generated faces match a known person "
                     f"(confidence >= {lk['threshold']:.3f})")
    p = report.get("predictions")
    if p:
        lines.append(f"predictions: {p['rows']} rows in {p['path']} ({p['dropped']} images dropped as uncertain)")
    return lines
