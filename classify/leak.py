"""Does a generator reproduce its training data? Memorization and identity-leak checks.

Two questions, two checks (issue 7, items 4 and 5):

* **Memorization** -- is a generated face a near copy of a training image? Each generated
  face gets its nearest neighbour in the training archive in a feature space (the
  face-recognition classifier's penultimate features when one is given, else downsampled
  pixels, :func:`pixel_features`). A distance alone means little, so it is compared to the
  distances of *held-out real* images to the same archive: a generator that samples the
  data distribution without copying should land about as close to the archive as unseen
  real photos of the same population do, and only about 1 % of its samples should be
  closer than the 1st percentile of the held-out distances. This is the idea of the
  "copy detection" and "data-copying" tests (Meehan, Chaudhuri and Dasgupta 2020, *A
  non-parametric test to detect data-copying in generative models*, AISTATS; Webster et
  al. 2019, *Detecting overfitting of deep generative networks via latent recovery*),
  in its simplest per-sample form.
* **Identity leak** -- does a generated face show a real, known person? A
  face-recognition classifier assigns it to one of its people; the assignment counts only
  above a confidence threshold calibrated on held-out real images of its people, and,
  when faces of strangers are at hand, also on those (:func:`calibrate_threshold`).

Everything here is plain numpy/torch on arrays, so ``mtf-classify score`` (in
:mod:`classify.score`) and a notebook call the same functions.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from classify.evaluate import pyplot, save_figure
from gan.util import UserError

__all__ = [
    "METRICS",
    "nearest_neighbours",
    "pixel_features",
    "memorization",
    "plot_closest_pairs",
    "calibrate_threshold",
    "identity_calibration",
    "identity_leak",
    "plot_leaks",
]

#: Distances between L2-normalised feature vectors: ``cosine`` is ``1 - cos`` (0 .. 2),
#: ``l2`` the Euclidean distance ``sqrt(2 - 2 cos)`` (0 .. 2). Both rank neighbours alike.
METRICS = ("cosine", "l2")


def _as_feats(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise UserError(f"{name}: expected a non-empty [N, D] feature matrix, got shape {list(t.shape)}")
    return t.float()


# ---------------------------------------------------------------------------- neighbours


@torch.no_grad()
def nearest_neighbours(
    query: Any,
    ref: Any,
    k: int = 1,
    metric: str = "cosine",
    query_chunk: int = 2048,
    ref_chunk: int = 16384,
    device: Optional[str | torch.device] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(distance [N, k], index [N, k])`` of each query's ``k`` nearest rows of ``ref``.

    ``query`` is ``[N, D]``, ``ref`` ``[M, D]``; both are L2-normalised first, so the
    distance depends on the direction of a feature vector, not on its length (penultimate
    ReLU features grow with image contrast). Neighbours come closest first.

    The ``[N, M]`` distance matrix is never built whole: blocks of ``query_chunk x
    ref_chunk`` similarities (128 MiB of float32 at the defaults) are reduced to a running
    top-``k``, so 50k generated faces against a 132k-image archive fit in memory. That
    search is ~7e12 floating-point operations with 512-dim features: about 80 s on one
    CPU thread (measured 84 GFLOP/s for 4k x 33k x 512), less with more threads or on a
    GPU (``device="cuda"``).
    """
    if metric not in METRICS:
        raise UserError(f"memorization: unknown metric {metric!r}; pass one of {', '.join(METRICS)}")
    q, r = _as_feats(query, "query features"), _as_feats(ref, "reference features")
    if q.shape[1] != r.shape[1]:
        raise UserError(f"memorization: query features have {q.shape[1]} dims but reference features "
                        f"{r.shape[1]}; extract both with the same classifier (or both as pixels)")
    if k < 1 or k > r.shape[0]:
        raise UserError(f"memorization: k={k}, but the reference set has {r.shape[0]} images; "
                        f"pass 1 <= k <= {r.shape[0]}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n = q.shape[0]
    best_sim = torch.empty(n, k)
    best_idx = torch.empty(n, k, dtype=torch.long)
    for q0 in range(0, n, query_chunk):
        qb = F.normalize(q[q0:q0 + query_chunk].to(dev), dim=1)  # [cq, D]
        run_s = torch.full((qb.shape[0], k), -float("inf"), device=dev)
        run_i = torch.zeros((qb.shape[0], k), dtype=torch.long, device=dev)
        for r0 in range(0, r.shape[0], ref_chunk):
            rb = F.normalize(r[r0:r0 + ref_chunk].to(dev), dim=1)  # [cr, D]
            sim = qb @ rb.T  # [cq, cr]
            kk = min(k, sim.shape[1])
            s, i = sim.topk(kk, dim=1)
            cat_s, cat_i = torch.cat([run_s, s], 1), torch.cat([run_i, i + r0], 1)
            run_s, pick = cat_s.topk(k, dim=1)
            run_i = cat_i.gather(1, pick)
        best_sim[q0:q0 + qb.shape[0]] = run_s.cpu()
        best_idx[q0:q0 + qb.shape[0]] = run_i.cpu()
    sim = best_sim.clamp(-1.0, 1.0)
    dist = (1.0 - sim).clamp_min(0.0) if metric == "cosine" else (2.0 - 2.0 * sim).clamp_min(0.0).sqrt()
    return dist.numpy(), best_idx.numpy()


def pixel_features(images: Iterable[Any], size: int = 16) -> np.ndarray:
    """``[N, 3 * size * size]`` float32: each uint8 ``[3, H, W]`` image as downsampled pixels.

    The fallback feature space for :func:`memorization` when no face-recognition
    classifier is given. The central square is area-averaged to ``size`` px (which removes
    JPEG noise and small shifts' high frequencies) and the image's mean is subtracted, so
    the cosine distance of two images is one minus their pixel correlation: 0 for a copy,
    also one that was re-encoded or brightened, and well above 0 for two different faces.
    Accepts any iterable of images or a uint8 ``[N, 3, H, W]`` tensor.
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


def memorization(
    gen_feats: Any,
    train_feats: Any,
    heldout_feats: Optional[Any] = None,
    metric: str = "cosine",
    percentiles: Sequence[float] = (1.0, 5.0),
    top: int = 16,
    device: Optional[str | torch.device] = None,
) -> dict[str, Any]:
    """Nearest training image of every generated face, compared to held-out real images.

    Arguments are feature matrices in one space (``[N, D]`` generated, ``[M, D]`` training
    archive, ``[H, D]`` held-out real images that are *not* in the archive, e.g. the
    classifier's test split or a slice of the data set left out of ``prepare``).

    Returns a dict with per-sample arrays ``distance [N]`` and ``index [N]`` (nearest
    training row) and ``order [N]`` (generated indices, closest to the archive first),
    ``heldout_distance [H]`` when held-out features are given, and a JSON-ready
    ``summary``:

    * ``median_distance`` of generated faces and ``heldout_median_distance``;
    * ``thresholds["p1"]`` etc.: that percentile of the held-out distances, and
      ``fraction_below["p1"]``: the share of generated faces closer to the archive than
      it. Without copying it is about the percentile itself (0.01 for p1, within sampling
      noise); a generator that reproduces training images shows many times more.
      ``fraction_below["min"]`` uses the smallest held-out distance;
    * ``closest``: the ``top`` closest pairs ``{"generated", "train", "distance"}``.
    """
    g = _as_feats(gen_feats, "generated features")
    t = _as_feats(train_feats, "training features")
    dist, idx = nearest_neighbours(g, t, k=1, metric=metric, device=device)
    dist, idx = dist[:, 0], idx[:, 0]  # [N], [N]
    order = np.argsort(dist, kind="stable")
    summary: dict[str, Any] = {
        "metric": metric,
        "num_generated": int(g.shape[0]),
        "num_train": int(t.shape[0]),
        "median_distance": float(np.median(dist)),
        "min_distance": float(dist.min()),
        "closest": [{"generated": int(i), "train": int(idx[i]), "distance": float(dist[i])} for i in order[:top]],
    }
    result: dict[str, Any] = {"distance": dist, "index": idx, "order": order, "summary": summary}
    if heldout_feats is not None:
        h = _as_feats(heldout_feats, "held-out features")
        hd = nearest_neighbours(h, t, k=1, metric=metric, device=device)[0][:, 0]  # [H]
        thresholds = {f"p{p:g}": float(np.percentile(hd, p)) for p in percentiles}
        thresholds["min"] = float(hd.min())
        summary.update(
            num_heldout=int(h.shape[0]),
            heldout_median_distance=float(np.median(hd)),
            thresholds=thresholds,
            # strict '<': a generated face exactly as far as the threshold is not "closer"
            fraction_below={key: float(np.mean(dist < thr)) for key, thr in thresholds.items()},
            expected_fraction_below={f"p{p:g}": p / 100.0 for p in percentiles},
        )
        result["heldout_distance"] = hd
        copies = int(np.sum(hd < 1e-6))
        if copies:
            summary["warning"] = (
                f"{copies} of {len(hd)} held-out images are (near) copies of training images, so the held-out "
                "percentiles are too low; pass real images that were not given to prepare"
            )
    return result


def _hwc(img: Any) -> np.ndarray:
    """uint8 ``[3, H, W]`` (the package's image layout) or ``[H, W, 3]`` -> ``[H, W, 3]``."""
    a = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return a


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
        axes[r, c].imshow(_hwc(gen_images[int(gi)]))
        flag = " *" if p1 is not None and d < p1 else ""
        axes[r, c].set_title(f"gen {int(gi)}\nd={d:.3f}{flag}", fontsize=7)
        axes[r + 1, c].imshow(_hwc(train_images[ti]))
        axes[r + 1, c].set_title(f"train {ti}", fontsize=7)
    note = "  (* closer than 1% of held-out real images)" if p1 is not None else ""
    fig.suptitle(f"closest generated faces (top) and their nearest training images (below){note}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- identity


def identity_calibration(
    heldout_probs: Any,
    heldout_true: Any,
    quantile: float = 0.95,
    strangers_probs: Optional[Any] = None,
    false_match_rate: float = 0.01,
) -> dict[str, Any]:
    """The identity-leak threshold and how it was reached (JSON-ready); see
    :func:`calibrate_threshold` for the rule. Also reports the held-out accuracy, the
    share of correct held-out predictions the threshold keeps (``heldout_recall``) and,
    with strangers, the share of them it flags (``stranger_false_match_rate``)."""
    p = np.asarray(heldout_probs, dtype=np.float64)
    y = np.asarray(heldout_true).astype(np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],) or p.shape[0] == 0:
        raise UserError(f"identity leak: held-out probabilities {list(p.shape)} and labels {list(y.shape)} "
                        "must be [H, K] and [H] with H > 0")
    if not 0.0 < quantile < 1.0:
        raise UserError(f"identity leak: quantile {quantile} must be between 0 and 1 (e.g. 0.95)")
    if not 0.0 <= false_match_rate < 1.0:
        raise UserError(f"identity leak: false match rate {false_match_rate} must be in [0, 1) (e.g. 0.01)")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise UserError(f"identity leak: held-out labels must be class indices 0..{p.shape[1] - 1}")
    correct = p.argmax(1) == y
    if not correct.any():
        raise UserError(
            f"identity leak: the face-recognition classifier got none of the {len(y)} held-out images right, "
            "so no threshold can be calibrated; train it longer or pass a better --classifier"
        )
    conf = np.sort(p.max(1)[correct])  # [C], ascending
    # the largest observed confidence that at least `quantile` of them reach
    below = int(np.floor((1.0 - quantile) * len(conf) + 1e-9))
    t_recall = float(conf[below])
    out: dict[str, Any] = {
        "rule": f"confidence reached by {quantile:.0%} of correct held-out predictions",
        "quantile": float(quantile),
        "recall_threshold": t_recall,
        "heldout_images": int(len(y)),
        "heldout_accuracy": float(correct.mean()),
    }
    threshold = t_recall
    if strangers_probs is not None:
        s = np.asarray(strangers_probs, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != p.shape[1] or s.shape[0] == 0:
            raise UserError(f"identity leak: strangers' probabilities have shape {list(s.shape)}; expected "
                            f"[S, {p.shape[1]}] from the same face-recognition classifier")
        sc = np.sort(s.max(1))[::-1]  # [S], most confident first
        allowed = int(np.floor(false_match_rate * len(sc) + 1e-9))  # strangers that may be flagged
        # just above the (allowed + 1)-th most confident stranger: at most `allowed` reach it
        t_strangers = float(np.nextafter(sc[allowed], np.inf)) if allowed < len(sc) else 0.0
        threshold = max(t_recall, t_strangers)
        out.update(
            rule=out["rule"] + f", and above all but {false_match_rate:.0%} of strangers' confidences",
            false_match_rate=float(false_match_rate),
            stranger_threshold=t_strangers,
            stranger_images=int(len(sc)),
            stranger_false_match_rate=float(np.mean(sc >= threshold)),
        )
    out["threshold"] = float(threshold)
    out["heldout_recall"] = float(np.mean(conf >= threshold))
    return out


def calibrate_threshold(
    heldout_probs: Any,
    heldout_true: Any,
    quantile: float = 0.95,
    strangers_probs: Optional[Any] = None,
    false_match_rate: float = 0.01,
) -> float:
    """The confidence above which a face counts as a known person (identity leak).

    Rule: run the face-recognition classifier on held-out real images of its own people
    (photos it never trained on, e.g. its validation or test split), keep those it assigns
    to the right person, and take the confidence (top softmax probability) that
    ``quantile`` (95 %) of them reach. A generated face at or above it is as confidently
    recognised as a genuine, correctly recognised photo; the rule fixes the check's recall
    on real look-alikes at 95 % (the TPR-95 operating point of out-of-distribution
    detection, Hendrycks and Gimpel 2017) and needs no other data.

    That rule does not bound false matches: a softmax classifier must put every face in
    one of its classes, and faces of people it never saw often get high confidence
    (measured on the synthetic faces: at the 95 %-recall threshold, 50-95 % of unseen
    identities are flagged). Hence ``strangers_probs`` ``[S, K]``: the classifier's output
    on real faces of people it does *not* know. With them the threshold is raised, if
    needed, until at most ``false_match_rate`` (1 %) of the strangers reach it: the
    false-accept-rate operating point of face verification (a leak flag accuses the
    generator of reproducing someone, so false alarms must be rare). The result is the
    larger of the two thresholds.

    ``heldout_probs`` is ``[H, K]``, ``heldout_true`` ``[H]`` class indices.
    :func:`identity_calibration` returns the same threshold with the numbers behind it.
    """
    return identity_calibration(heldout_probs, heldout_true, quantile, strangers_probs, false_match_rate)["threshold"]


def identity_leak(gen_probs: Any, threshold: float, classes: Sequence[str]) -> dict[str, Any]:
    """Generated faces that the face-recognition classifier assigns to a known person with
    confidence ``>= threshold`` (from :func:`calibrate_threshold`).

    Returns ``fraction`` and ``count`` flagged out of ``num``, ``per_person`` (flag counts,
    most first, people with none left out), and per flagged face, most confident first:
    ``indices`` (rows of ``gen_probs``), ``people`` and ``confidences``; plus the
    ``threshold``. JSON-ready.
    """
    p = np.asarray(gen_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise UserError(f"identity leak: expected [N, K] probabilities of generated faces, got shape {list(p.shape)}")
    if p.shape[1] != len(classes):
        raise UserError(f"identity leak: the probabilities have {p.shape[1]} classes but {len(classes)} class "
                        "names were given; pass the face-recognition classifier's own class list")
    conf, pred = p.max(1), p.argmax(1)
    flagged = np.flatnonzero(conf >= threshold)
    flagged = flagged[np.argsort(-conf[flagged], kind="stable")]
    counts: dict[str, int] = {}
    for i in flagged:
        counts[classes[pred[i]]] = counts.get(classes[pred[i]], 0) + 1
    per_person = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "threshold": float(threshold),
        "num": int(p.shape[0]),
        "count": int(len(flagged)),
        "fraction": float(len(flagged) / p.shape[0]),
        "per_person": per_person,
        "indices": [int(i) for i in flagged],
        "people": [str(classes[pred[i]]) for i in flagged],
        "confidences": [float(conf[i]) for i in flagged],
    }


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
        axes[r, 0].imshow(_hwc(gen_images[int(gi)]))
        axes[r, 0].set_title(f"gen {int(gi)}  p={conf:.2f}", fontsize=7)
        for c, img in enumerate(list(person_images.get(person, []))[:per_person]):
            axes[r, 1 + c].imshow(_hwc(img))
            if c == 0:
                axes[r, 1 + c].set_title(person, fontsize=7, loc="left")
    fig.suptitle(f"generated faces matched to a known person (threshold {result['threshold']:.3f})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
