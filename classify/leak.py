"""Does a generator reproduce its training data? Memorization and identity-leak checks.

Two questions, two checks:

* **Memorization** -- is a generated face a near copy of a training image? Each generated
  face gets its nearest neighbour in the training archive in a feature space (the
  face-recognition classifier's penultimate features when one is given, else downsampled
  pixels, :func:`classify.classifier.pixel_features`). A distance alone means little, so it
  is compared to the distances of *held-out real* images to the same archive: a generator
  that samples the data distribution without copying should land about as close to the
  archive as unseen real photos of the same population do, and only about 1 % of its
  samples should be closer than the 1st percentile of the held-out distances. This is the
  idea of the "copy detection" and "data-copying" tests (Meehan, Chaudhuri and Dasgupta
  2020, *A non-parametric test to detect data-copying in generative models*, AISTATS;
  Webster et al. 2019, *Detecting overfitting of deep generative networks via latent
  recovery*), in its simplest per-sample form.
* **Identity leak** -- does a generated face show a real, known person? A
  face-recognition classifier assigns it to one of its people; the assignment counts only
  above a confidence threshold calibrated on held-out real images of its people, and,
  when faces of strangers are at hand, also on those (:func:`calibrate_threshold`).

The math (:func:`nearest_neighbours`, :func:`memorization`, :func:`identity_calibration`,
:func:`identity_leak`) is plain numpy/torch on arrays, so a notebook calls the same
functions; :func:`memorization_section` and :func:`identity_leak_section` run the checks on
scored image sets for ``mtf-classify score`` and draw their figures
(:func:`classify.plots.plot_closest_pairs`, :func:`classify.plots.plot_leaks`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from classify.classifier import (THUMB, Classifier, ScoredSet, match_class, resolve_recorded, score_stream,
                                 to_classifier_size)
from classify.plots import plot_closest_pairs, plot_leaks
from gan.images import list_images, read_rgb
from gan.util import UserError

__all__ = [
    "METRICS",
    "nearest_neighbours",
    "memorization",
    "calibrate_threshold",
    "identity_calibration",
    "identity_leak",
    "memorization_section",
    "identity_leak_section",
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


# ---------------------------------------------------------------------------- the checks of score


def _folder_split(clf: Classifier, folder: Path) -> list[tuple[Path, int]]:
    """``(image, class index)`` of a ``<person>/*`` folder; persons the classifier does not
    know are an error that names them."""
    folder = Path(folder)
    items, unknown = [], set()
    for f in list_images(folder):
        rel = f.relative_to(folder)
        if len(rel.parts) < 2:
            continue
        j = match_class(clf.task, rel.parts[0], clf.classes)
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
    from classify.loaders import scan_for
    from classify.recipe import RunConfig
    from gan.config import load_config

    cfg_path = clf.path.parent / "config.yaml"
    if not cfg_path.is_file():
        return None, f"{cfg_path} is missing, so the classifier's held-out split is unknown"
    try:
        cfg = load_config(RunConfig, cfg_path)
    except Exception as exc:  # noqa: BLE001 - an old or edited config: report, do not fail the report
        return None, f"{cfg_path} cannot be read ({exc})"
    data = resolve_recorded(cfg.data, clf.path.parent)
    if data is None:
        return None, (f"the classifier's data {cfg.data} (from {cfg_path}) is not found; run from the folder it was "
                      "trained in")
    try:
        td = scan_for(data, clf.task, cfg.recipe, classes=clf.classes)
    except UserError as exc:
        return None, str(exc)
    return td, str(data)


def identity_leak_section(fr: Classifier, gen: ScoredSet, outdir: Path, batch: int, quantile: float,
                          false_match_rate: float, strangers: Optional[ScoredSet],
                          heldout_dir: Optional[str | os.PathLike] = None
                          ) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """Calibrate the identity threshold on held-out photos of the classifier's people
    (``heldout_dir``, else the val, else test split of the tree it was trained on, found
    through its run's ``config.yaml``; :func:`calibrate_threshold`) and flag
    generated faces above it."""
    if heldout_dir is not None:
        items = _folder_split(fr, Path(heldout_dir))
        split, where, train_items = "--identity-heldout", str(heldout_dir), items
    else:
        td, where = _identity_split(fr)
        if td is None:
            return None, where + "; pass --identity-heldout DIR (<person>/* photos it did not train on)"
        split = "val" if td.splits.get("val") else "test"
        items, train_items = td.splits[split], td.splits["train"]
    held = score_stream(((p.name, read_rgb(p)) for p, _ in items), {"face_recognition": fr}, batch,
                        pixels=False, what=f"held-out images ({split} split of {where})")
    true = np.asarray([y for _, y in items], dtype=np.int64)
    cal = identity_calibration(held.probs["face_recognition"], true, quantile,
                               strangers.probs["face_recognition"] if strangers is not None else None,
                               false_match_rate)
    res = identity_leak(gen.probs["face_recognition"], cal["threshold"], fr.classes)
    res["calibration"] = dict(cal, split=f"{split} of {where}")
    people: dict[str, list[torch.Tensor]] = {}
    wanted = set(res["people"][:16])
    for p, y in train_items:
        name = fr.classes[y]
        if name in wanted and len(people.setdefault(name, [])) < 4:
            people[name].append(to_classifier_size(read_rgb(p), min(THUMB, gen.thumbs[0].shape[-1])))
    res["file"] = "identity_leaks.png"
    plot_leaks(gen.thumbs, people, res, outdir / res["file"])
    return res, None


def memorization_section(gen: ScoredSet, ref: ScoredSet, heldout: Optional[ScoredSet], outdir: Path,
                         role: str, heldout_fraction: float = 0.1, space: str = "auto") -> dict[str, Any]:
    """Nearest reference image of each generated face (:func:`memorization`).

    Feature space: the face-recognition classifier's penultimate features when one is
    given (identity, not pose or background, decides closeness), else downsampled pixels.
    Held-out baseline: ``heldout`` when given; else a random ``heldout_fraction`` of the
    reference images is taken out of the search set and their distances to the rest
    are the baseline (fresh real images of the same population).
    """
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
    res = memorization(g, r[train_rows], h)
    res["index"] = train_rows[res["index"]]  # back to reference rows
    for c in res["summary"]["closest"]:
        c["train"] = int(train_rows[c["train"]])
        c["generated_name"], c["train_name"] = gen.names[c["generated"]], ref.names[c["train"]]
    plot_closest_pairs(gen.thumbs, ref.thumbs, res, outdir / "closest_pairs.png")
    return {"summary": res["summary"], "feature_space": ("face-recognition classifier features" if use_fr
                                                          else "downsampled pixels (16 px)"),
            "reference_role": role, "heldout": held_desc, "file": "closest_pairs.png"}


