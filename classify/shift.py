"""What the generator generates, in numbers: class shares, their correction for the
classifier's errors, distances between distributions, and conditional consistency.

Per task the shares of arg-max predictions on generated and reference images
(:func:`class_shares`), the same shares corrected for the classifier's errors by black-box
shift estimation (:func:`bbse_correct`, Lipton, Wang & Smola 2018), their total variation
and KL distances, and, for a conditional generator, the condition-vs-prediction matrix
(:func:`consistency_report`). The numeric parts are pure functions of counts and matrices
so the tests can check them by hand; :func:`task_report` and :func:`consistency_report`
turn a classifier's outputs into the JSON-ready sections of ``report.json``.
"""

from __future__ import annotations

import csv
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from classify.classifier import Classifier, ScoredSet, match_class
from gan.dataset import is_archive
from gan.util import UserError

__all__ = ["KL_PSEUDOCOUNT", "BBSE_MAX_CONDITION", "class_shares", "bbse_correct", "total_variation", "smoothed",
           "kl_divergence", "reference_labels", "condition_groups", "task_report", "consistency_report"]

#: Additive smoothing (pseudo-count per class) before KL, so a class the generator never
#: produces gives a large but finite divergence (Jeffreys' prior, 1/2 per class).
KL_PSEUDOCOUNT = 0.5


#: Above this condition number the BBSE system is treated as singular (least squares).
BBSE_MAX_CONDITION = 1e6



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



# ---------------------------------------------------------------------------- labels and conditions


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
    if is_archive(ref.source):
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
            mapping = np.array([-1 if (j := match_class(task, n, classes)) is None else j for n in names] + [-1])
            sub = lab[ref.indices, off:off + len(names)]  # [N, k]
            which = np.where(sub.max(1) > 0, sub.argmax(1), len(names))
            return mapping[which]
        return None
    csv_path = ref.source / "attributes.csv"
    if not csv_path.is_file():
        return None
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
        j = match_class(task, v, classes) if v else None
        out.append(-1 if j is None else j)
    return np.asarray(out, dtype=np.int64)


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
        j = match_class(clf.task, val, clf.classes)
        if j is None:
            if col is None:
                return None  # a one-column G whose classes are not this task's
            continue
        pairs.append((i, j))
    return pairs or None



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

