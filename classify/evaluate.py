"""Test metrics of a classifier: accuracy (95 % Wilson interval), macro P/R/F1, confusion matrix.

Metrics are pure functions of ``(y_true, y_pred)`` computed with numpy (exact integer
counts; no scikit-learn dependency for four lines of arithmetic), laid out as
``features -> counts -> metrics`` so a test can check them against a hand-computed
confusion matrix:

* ``confusion[i, j]`` counts test images of true class ``i`` predicted as ``j``;
* per class: precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 their harmonic
  mean; a ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``);
* macro P/R/F1 are unweighted means over **all** classes of the task (as the MTF
  notebook's ``average='macro'`` over a test set that holds every class); macro F1 is the
  mean of per-class F1s, not the F1 of the macro P and R;
* accuracy comes with the Wilson score interval (Wilson 1927; recommended over the normal
  approximation by Brown, Cai & DasGupta 2001), which stays inside [0, 1] and is sensible
  at 100 % on a small test set.

:func:`evaluate` loads a checkpoint written by :mod:`classify.train` (read by
:mod:`classify.checkpoint`), predicts a split of a task tree through the evaluation transform
of :mod:`classify.loaders` and writes ``metrics.json``, ``per_class.csv`` and ``confusion.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from classify.checkpoint import load_for_inference
from classify.loaders import batch_prep, make_loader, scan_for
from classify.plots import plot_confusion  # the figure of write_metrics
from gan.distributed import pick_device
from gan.util import UserError, atomic_write_text

__all__ = [
    "confusion_matrix",
    "wilson_interval",
    "classification_metrics",
    "write_metrics",
    "format_metrics",
    "predict",
    "evaluate",
]

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """``int64 [K, K]``: rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (Wilson 1927, eq. for p+-)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                           classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy (+ Wilson 95 %), macro P/R/F1, per-class table and confusion matrix as plain data."""
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    correct = int(tp.sum())
    lo, hi = wilson_interval(correct, n)
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": [lo, hi],
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "majority_rate": float(support.max() / n) if n else 0.0,
        "classes": list(classes),
        "per_class": [
            {"class": c, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i])}
            for i, c in enumerate(classes)
        ],
        "confusion": cm.tolist(),
    }


def write_metrics(metrics: dict[str, Any], outdir: str | os.PathLike, title: str = "") -> list[Path]:
    """``metrics.json``, ``per_class.csv`` and ``confusion.png`` in ``outdir``; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outdir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "precision", "recall", "f1", "support"])
    for row in metrics["per_class"]:
        w.writerow([row["class"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", row["support"]])
    atomic_write_text(outdir / "per_class.csv", buf.getvalue())
    plot_confusion(np.array(metrics["confusion"]), metrics["classes"], outdir / "confusion.png", title=title)
    return [outdir / "metrics.json", outdir / "per_class.csv", outdir / "confusion.png"]


def format_metrics(m: dict[str, Any], max_rows: int = 12) -> str:
    """A few lines for the terminal: accuracy with its interval, macro scores, per-class rows."""
    lo, hi = m["accuracy_ci95"]
    lines = [
        f"test accuracy {m['accuracy']:.2%} (95% CI {lo:.1%}-{hi:.1%}, n={m['n']:,}; majority class "
        f"{m['majority_rate']:.1%}); macro P {m['macro_precision']:.3f} R {m['macro_recall']:.3f} "
        f"F1 {m['macro_f1']:.3f}",
    ]
    rows = m["per_class"]
    width = max(len(r["class"]) for r in rows[:max_rows])
    for r in rows[:max_rows]:
        lines.append(f"  {r['class']:<{width}}  P {r['precision']:.3f}  R {r['recall']:.3f}  "
                     f"F1 {r['f1']:.3f}  n {r['support']}")
    if len(rows) > max_rows:
        lines.append(f"  ... {len(rows) - max_rows} more classes in per_class.csv")
    return "\n".join(lines)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, device: torch.device,
            prep: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(y_true [N], y_pred [N], mean cross-entropy)`` over ``loader`` in eval mode."""
    model.eval()
    ys, ps = [], []
    loss_sum, n = 0.0, 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if prep is not None:
            x = prep(x)
        y = y.to(device)
        logits = model(x).float()  # [N, K]
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
        ys.append(y.cpu().numpy())
        ps.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(ys), np.concatenate(ps), loss_sum / max(n, 1)


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    outdir: str | os.PathLike | None = None,
    split: str = "test",
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Predict ``split`` of the checkpoint's task under ``data`` and write the metric files.

    ``outdir`` defaults to the checkpoint's folder. The tree's classes are mapped onto the
    checkpoint's class order (aliases applied), so a tree spelled ``Males``/``Females``
    evaluates a model trained on ``Male``/``Female``.
    """
    ckpt_path = Path(checkpoint)
    if not ckpt_path.is_file():
        raise UserError(f"evaluate: checkpoint {ckpt_path} does not exist; pass best.pt or last.pt of a run")
    dev = pick_device(device)
    ckpt, model, recipe = load_for_inference(ckpt_path, dev)
    task_data = scan_for(data, ckpt["task"], recipe, classes=ckpt["classes"])
    if split not in task_data.splits:
        raise UserError(f"evaluate: no {split} split in {task_data.root}")
    loader = make_loader(task_data, split, recipe, cache_dir, train=False, batch_size=batch_size, log=log)
    prep = batch_prep(recipe, dev, channels_last=recipe.train.channels_last and dev.type == "cuda")
    y_true, y_pred, _ = predict(model, loader, dev, prep)
    metrics = classification_metrics(y_true, y_pred, ckpt["classes"])
    metrics.update({"task": ckpt["task"], "model": ckpt["model_name"], "split": split,
                    "checkpoint": str(ckpt_path), "epoch": ckpt["epoch"]})
    out = Path(outdir) if outdir is not None else ckpt_path.parent
    write_metrics(metrics, out, title=f"{ckpt['model_name']} / {ckpt['task']} ({split})")
    return metrics
