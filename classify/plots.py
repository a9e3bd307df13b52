"""Every figure of ``classify``: confusion matrices, attribute bars, confidence histograms,
sample grids, the conditional-consistency matrix, closest pairs and identity leaks, the
cosines between attribute directions and the class probabilities along an edit.

Each function takes plain numbers (dicts of the JSON reports, numpy arrays, uint8 images)
and writes one PNG, so a notebook can redraw a figure from ``report.json`` alone. All go
through :func:`pyplot` (matplotlib's file-only Agg backend: no window, works headless) and
:func:`save_figure` (written atomically: a crash never leaves half a picture).

Images are uint8 ``[3, H, W]`` (the package's layout) or ``[H, W, 3]``; thumbnails are
brought to a common size with :func:`gan.images.square_resize` (central square, Lanczos),
the resize every scored image goes through.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from gan.images import square_resize_chw
from gan.util import UserError, atomic_path

__all__ = [
    "pyplot", "save_figure", "hwc", "shown_classes",
    "plot_confusion", "plot_attributes", "plot_confidence", "plot_samples", "plot_consistency",
    "plot_closest_pairs", "plot_leaks", "plot_truncation", "plot_cosines", "plot_edit",
]

#: Up to this many classes the confusion plot prints counts in cells and names on the axes.
CELL_TEXT_MAX = 20
TICK_LABELS_MAX = 60
#: Classes shown per panel / per sample grid; face recognition has hundreds.
MAX_CLASSES_SHOWN = 20
MAX_GRID_ROWS = 12


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no window, works headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG atomically (a crash never leaves half a picture) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())



def hwc(img: Any) -> np.ndarray:
    """uint8 ``[3, H, W]`` (the package's image layout) or ``[H, W, 3]`` -> ``[H, W, 3]``."""
    a = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return a


# ---------------------------------------------------------------------------- evaluation


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalized confusion matrix as a PNG (colour = share of the true class).

    Counts are printed in cells only up to :data:`CELL_TEXT_MAX` classes and names on the
    axes up to :data:`TICK_LABELS_MAX`, so 240 face-recognition classes stay readable as a
    heat map (a bright diagonal) instead of a black smear of text.
    """
    plt = pyplot()
    cm = np.asarray(cm)
    k = len(classes)
    support = cm.sum(axis=1, keepdims=True).astype(np.float64)  # [K, 1]
    rates = np.divide(cm.astype(np.float64), support, out=np.zeros(cm.shape), where=support != 0)  # no images: 0
    side = min(16.0, max(4.5, 0.45 * k + 2.5)) if k <= TICK_LABELS_MAX else 10.0
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if k <= TICK_LABELS_MAX:
        ax.set_xticks(range(k), labels=list(classes), rotation=90 if k > 6 else 30, ha="right" if k <= 6 else "center",
                      fontsize=8 if k > 20 else 10)
        ax.set_yticks(range(k), labels=list(classes), fontsize=8 if k > 20 else 10)
    else:
        ax.set_xlabel("")
    if k <= CELL_TEXT_MAX:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class" + ("" if k <= TICK_LABELS_MAX else f" (index, {k} classes)"))
    ax.set_ylabel("true class" + ("" if k <= TICK_LABELS_MAX else " (index)"))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- attribute report


def shown_classes(t: dict[str, Any]) -> list[int]:
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
        shown = shown_classes(t)
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
    """``[size, n * (size + 2), 3]`` uint8: uint8 ``[3, H, W]`` images side by side (resized to ``size``)."""
    tiles = [square_resize_chw(img, size, "lanczos").permute(1, 2, 0).numpy() for img in images]  # [size, size, 3]
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


#: Classes drawn per panel of the truncation sweep (the largest shares; face recognition has hundreds).
MAX_SWEEP_LINES = 8


def plot_truncation(sweep: dict[str, Any], path: Path) -> None:
    """One panel per task: each class's generated share against truncation psi (solid: predicted,
    dashed: BBSE-corrected; psi falls to the right), the reference's share as a dotted line of
    the same colour, and the TV distance to the reference in black. ``sweep`` is the
    ``truncation_sweep`` section of ``report.json``."""
    plt = pyplot()
    psi = np.asarray(sweep["psi"], dtype=np.float64)  # [P]
    tasks = sweep["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 0.6, 3.9), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (task, t) in zip(axes[0], tasks.items()):
        share = np.asarray(t["share"])  # [P, K]
        ref = np.asarray(t["reference_share"]) if t["reference_share"] is not None else None
        weight = share.max(0) + (ref if ref is not None else 0)
        shown = sorted(np.argsort(-weight, kind="stable")[:MAX_SWEEP_LINES].tolist())
        for n, k in enumerate(shown):
            colour = colours(n % 10)
            ax.plot(psi, share[:, k], "o-", color=colour, label=t["classes"][k])
            if t["corrected"] is not None:
                ax.plot(psi, np.asarray(t["corrected"])[:, k], "--", color=colour)
            if ref is not None:
                ax.axhline(ref[k], color=colour, ls=":", lw=1)
        if t["tv"] is not None:
            ax.plot(psi, t["tv"], "s-", color="black", lw=1, ms=3, label="TV to reference")
        ax.set_xlim(psi.max() + 0.05, psi.min() - 0.05)  # more truncation to the right
        ax.set_ylim(0, 1)
        ax.set_xlabel("truncation psi")
        ax.set_ylabel("share of images")
        more = f", top {len(shown)} of {len(t['classes'])}" if len(shown) < len(t["classes"]) else ""
        ax.set_title(f"{task}{more}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    towards = "each class's mean w" if sweep.get("trunc_center") == "class" else "w_avg"
    fig.suptitle(f"shares under truncation towards {towards} ({sweep['num']} faces per psi; solid predicted, "
                 f"dashed BBSE, dotted reference)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- attribute directions and edits


def _cosine_panel(fig: Any, ax: Any, names: Sequence[str], m: np.ndarray, title: str) -> None:
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine")
    k = len(names)
    ax.set_xticks(range(k), labels=list(names), rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center",
                  fontsize=8)
    ax.set_yticks(range(k), labels=list(names), fontsize=8)
    if k <= CELL_TEXT_MAX:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(m[i, j]) > 0.6 else "black")
    ax.set_title(title, fontsize=9)


def plot_cosines(cosines: Mapping[str, Any], path: str | os.PathLike, conditional: bool = False) -> None:
    """The cosine between every two attribute directions (``directions.pt``'s ``cosines``):
    the fitted boundary normals, and beside them the conditional (projected) directions
    when ``--orthogonal-to`` made any. Off-diagonal cosines far from 0 are entanglement, of
    the generator or of the classifiers' correlated errors."""
    plt = pyplot()
    names = cosines["names"]
    panels = [("fitted boundary normals", cosines["fitted"])]
    if conditional:
        panels.append(("conditional directions (--orthogonal-to)", cosines["directions"]))
    side = min(12.0, 0.55 * len(names) + 2.6)
    fig, axes = plt.subplots(1, len(panels), figsize=((side + 1.2) * len(panels), side), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels):
        _cosine_panel(fig, ax, names, np.asarray(m, dtype=np.float64).reshape(len(names), len(names)), title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_edit(edit: Mapping[str, Any], path: str | os.PathLike) -> None:
    """One panel per classifier task: the mean predicted probability of each class against
    the edit strength (``edit.json``). The edited attribute's class should move, the others
    should stay flat; a moving other is entanglement (or a classifier's bias)."""
    plt = pyplot()
    tasks = edit["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 0.6, 3.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (task, t) in zip(axes[0], tasks.items()):
        s = np.asarray(t["strengths"], dtype=np.float64)
        means = {c: np.asarray(v) for c, v in t["mean_probability"].items()}
        order = list(means)  # the task's class order: one colour per class in every panel and run
        top = sorted(order, key=lambda c: -float(np.ptp(means[c]) + means[c].mean()))[:MAX_CLASSES_SHOWN // 2]
        for c in (c for c in order if c in top):
            ax.plot(s, means[c], "o-", color=colours(order.index(c) % 10), label=c)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"strength (w_std of {edit['attribute']})")
        ax.set_ylabel("mean predicted probability")
        ax.set_title(f"{task}{' (edited)' if task == edit.get('task') else ''}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"edit along {edit['attribute']} ({edit['from']} -> {edit['to']}), "
                 f"{len(edit['seeds'])} faces per strength", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- memorization and identity leak


def plot_closest_pairs(
    gen_images: Sequence[Any] | Mapping[int, Any],
    train_images: Sequence[Any] | Mapping[int, Any],
    result: Mapping[str, Any],
    path: str | os.PathLike,
    n: int = 16,
) -> None:
    """PNG of the ``n`` generated faces closest to the archive, each above its nearest
    training image, with the distance (and a mark where it is below the held-out p1).

    ``gen_images`` / ``train_images`` are indexed by the row numbers in ``result`` (a list,
    a uint8 ``[N, 3, H, W]`` tensor, or a dict holding just the rows that are shown:
    ``result["order"][:n]`` and their ``result["index"]``), so a 132k-image archive need
    not be loaded to draw 16 pairs.
    """
    plt = pyplot()
    order = np.asarray(result["order"])[:n]
    if len(order) == 0:
        raise UserError("memorization: no generated images to plot")
    p1 = result.get("summary", {}).get("thresholds", {}).get("p1")
    cols = min(8, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.6 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, gi in enumerate(order):
        r, c = 2 * (j // cols), j % cols
        ti = int(result["index"][gi])
        d = float(result["distance"][gi])
        axes[r, c].imshow(hwc(gen_images[int(gi)]))
        flag = " *" if p1 is not None and d < p1 else ""
        axes[r, c].set_title(f"gen {int(gi)}\nd={d:.3f}{flag}", fontsize=7)
        axes[r + 1, c].imshow(hwc(train_images[ti]))
        axes[r + 1, c].set_title(f"train {ti}", fontsize=7)
    note = "  (* closer than 1% of held-out real images)" if p1 is not None else ""
    fig.suptitle(f"closest generated faces (top) and their nearest training images (below){note}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_leaks(
    gen_images: Sequence[Any] | Mapping[int, Any],
    person_images: Mapping[str, Sequence[Any]],
    result: Mapping[str, Any],
    path: str | os.PathLike,
    n: int = 16,
    per_person: int = 4,
) -> None:
    """PNG: each flagged generated face (up to ``n``, most confident first) in a row beside
    up to ``per_person`` real images of the person it was matched to.

    ``person_images`` maps a class name to real images of that person (e.g. from the
    classifier's train split); a person without images gets an empty row beside the face.
    When nothing was flagged, the PNG says so (the file always exists for the report).
    """
    plt = pyplot()
    idx = list(result["indices"])[:n]
    if not idx:
        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no generated face reached the identity threshold {result['threshold']:.3f}",
                ha="center", va="center", fontsize=9)
        save_figure(fig, path)
        return
    cols = 1 + per_person
    fig, axes = plt.subplots(len(idx), cols, figsize=(1.5 * cols, 1.7 * len(idx)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (gi, person, conf) in enumerate(zip(idx, result["people"], result["confidences"])):
        axes[r, 0].imshow(hwc(gen_images[int(gi)]))
        axes[r, 0].set_title(f"gen {int(gi)}  p={conf:.2f}", fontsize=7)
        for c, img in enumerate(list(person_images.get(person, []))[:per_person]):
            axes[r, 1 + c].imshow(hwc(img))
            if c == 0:
                axes[r, 1 + c].set_title(person, fontsize=7, loc="left")
    fig.suptitle(f"generated faces matched to a known person (threshold {result['threshold']:.3f})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)

