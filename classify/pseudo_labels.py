"""Pseudo-labels for the non-curated MTF set, in the CSV that ``mtf-gan prepare`` reads.

The non-curated MTF set (Haffar, Sánchez, Domingo-Ferrer, *IEEE Access* 13, 2025) comes
as ``<person>/*.jpg`` without documented race, gender or age labels, while the curated
set has them. Classifiers trained on the curated set (``mtf-classify train``) label the
non-curated images here, so a gender-, race- or age-conditional GAN can be trained on the
larger set:

1. :func:`predict_rows`: one row per image: the file (relative to the tree, with ``/``),
   and per task the predicted class and its confidence (top softmax probability).
2. :func:`person_vote`: MTF attributes belong to a person, not to a photo, so the
   per-image predictions of one person are pooled by majority vote. A person's photos
   vary in pose, light and expression; a vote over them corrects the photos that the
   classifier gets wrong, as long as most are right. Ties and the per-person agreement
   (share of the person's predictions that match the vote) are reported.
3. :func:`write_predictions`: ``predictions.csv``, written atomically, with per-image
   columns ``<task>``, ``<task>_confidence`` and per-person columns ``person``,
   ``<task>_vote``, ``<task>_agreement``. ``mtf-gan prepare --labels predictions.csv
   --label-column gender`` trains on per-image labels, ``--label-column gender_vote`` on
   per-person labels.

:func:`pseudo_labels` runs the three steps on an image folder or archive.
``mtf-classify score --predictions`` writes the same file through
:func:`scored_predictions`: the rows come from the probabilities the report already
computed (:func:`rows_from_scored`, no second pass over the images), and the vote and the
writing are steps 2 and 3 above; there a tree without person folders gets per-image
columns only instead of an error, since the report is the point of that command.

Uncertain predictions (confidence below ``min_confidence``) are dropped: they neither
vote nor label their image (the cell is left empty, which ``prepare`` skips and
reports); a row left with no label at all is not written. Both are counted.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from classify.classifier import ScoredSet, iter_image_source, score_stream
from gan.util import UserError, atomic_write_text

__all__ = [
    "predict_rows",
    "rows_from_scored",
    "persons_from_folders",
    "persons_from_csv",
    "person_vote",
    "write_predictions",
    "pseudo_labels",
    "scored_predictions",
]


def _tasks_of(classifiers: Sequence[Any]) -> list[str]:
    tasks = [c.task for c in classifiers]
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise UserError(f"predictions: two --classifier checkpoints are for the task {dup[0]!r}; pass one per task")
    return tasks


def predict_rows(
    classifiers: Sequence[Any] | Mapping[str, Any],
    source: str | os.PathLike | Iterable[tuple[str, Any]],
    batch: int = 64,
    num: Optional[int] = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per image of ``source``: ``{"file", <task>, <task>_confidence, ...}``.

    ``classifiers`` are :class:`classify.classifier.Classifier` objects (one per task);
    ``source`` is an image folder (read recursively), a prepared archive, or an iterable
    of ``(name, uint8 [3, H, W])`` pairs. ``file`` is the path relative to the folder with
    ``/`` separators, which is what ``mtf-gan prepare --labels`` matches against. The images
    go through :func:`classify.classifier.score_stream` block by block, keeping only the
    probabilities, so a 132k-image tree is never held in memory at once.
    """
    clfs = list(classifiers.values()) if isinstance(classifiers, Mapping) else list(classifiers)
    if not clfs:
        raise UserError("predictions: pass at least one --classifier (gender, race, age, ...)")
    tasks = _tasks_of(clfs)
    if isinstance(source, (str, os.PathLike)):
        items = iter_image_source(source, num)
    else:
        items = itertools.islice(iter(source), num)
    first = next(items, None)
    if first is None:
        raise UserError(f"predictions: {source} holds no images to label")
    named = ((str(n).replace(os.sep, "/").replace("\\", "/"), img) for n, img in itertools.chain([first], items))

    from tqdm import tqdm

    with tqdm(desc="predict", unit="img", disable=not progress) as bar:
        scored = score_stream(named, dict(zip(tasks, clfs)), batch, pixels=False, thumbs=False, features=False,
                              on_block=bar.update)
    return rows_from_scored(scored, clfs)


def rows_from_scored(scored: ScoredSet, classifiers: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows of :func:`predict_rows` from a scored set: per image ``file`` (its name) and
    per classifier ``<task>`` (the arg-max class) and ``<task>_confidence`` (its probability)."""
    rows = [{"file": name} for name in scored.names]
    for clf in classifiers:
        p = scored.probs[clf.task]  # [N, K]
        for row, k, c in zip(rows, p.argmax(1).tolist(), p.max(1).tolist()):
            row[clf.task] = clf.classes[k]
            row[f"{clf.task}_confidence"] = float(c)
    return rows


# ---------------------------------------------------------------------------- persons


def persons_from_folders(files: Iterable[str]) -> dict[str, str]:
    """``file -> person`` from the first folder level (``<person>/*.jpg``, the non-curated
    MTF layout); files directly in the tree's root get no person (and no vote)."""
    return {f: f.split("/", 1)[0] for f in files if "/" in f}


def persons_from_csv(path: str | os.PathLike, column: str, files: Iterable[str]) -> dict[str, str]:
    """``file -> person`` from a CSV with a ``file`` column and the person column ``column``
    (``--person-column``). Files are matched as ``prepare --labels`` matches them: by path
    relative to the tree, or by bare file name when that name is unique in the tree."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"predictions: person CSV {p} does not exist; pass a CSV with 'file' and person columns")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if "file" not in header or column not in header:
            missing = [c for c in ("file", column) if c not in header]
            raise UserError(
                f"predictions: {p} has no column {', '.join(repr(c) for c in missing)} "
                f"(columns: {', '.join(header) or 'none'}); pass --person-column with one of them"
            )
        table = {}
        for row in reader:
            f = (row.get("file") or "").strip().replace("\\", "/")
            while f.startswith("./"):
                f = f[2:]
            if f and (row.get(column) or "").strip():
                table[f] = row[column].strip()
    files = list(files)
    present = set(files)
    by_base: dict[str, list[str]] = {}
    for f in files:
        by_base.setdefault(f.rsplit("/", 1)[-1], []).append(f)
    out: dict[str, str] = {}
    for f, person in table.items():
        if f in present:
            out[f] = person
        elif "/" not in f and len(by_base.get(f, [])) == 1:
            out[by_base[f][0]] = person
    if files and not out:
        raise UserError(f"predictions: no image matches a row of {p}; its 'file' column must hold paths "
                        "relative to the image folder (as for mtf-gan prepare --labels)")
    return out


def _tasks_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [k[: -len("_confidence")] for k in rows[0] if k.endswith("_confidence")] if rows else []


def _certain(row: Mapping[str, Any], task: str, min_confidence: float) -> bool:
    return bool(row.get(task)) and float(row.get(f"{task}_confidence", 0.0)) >= min_confidence


def person_vote(
    rows: Sequence[Mapping[str, Any]],
    person_of: Mapping[str, str] | Callable[[str], Optional[str]],
    min_confidence: float = 0.0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Majority vote per person and task: ``{person: {task: {...}}}``.

    Each entry holds ``label`` (the class most of the person's confident predictions
    give; ``""`` when none is confident), ``votes`` (count per class), ``n`` (predictions
    counted), ``agreement`` (share of them equal to ``label``), ``tie`` (whether another
    class had as many votes) and ``confidence`` (mean confidence of the agreeing
    predictions). A tie goes to the class with the larger summed confidence (a soft vote
    among the tied classes), then to the first name in sorted order, and is flagged.
    Predictions under ``min_confidence`` do not vote.
    """
    lookup = person_of if callable(person_of) else (lambda f, m=person_of: m.get(f))
    tasks = _tasks_in(rows)
    pooled: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for row in rows:
        person = lookup(row["file"])
        if not person:
            continue
        entry = pooled.setdefault(person, {t: [] for t in tasks})
        for t in tasks:
            if _certain(row, t, min_confidence):
                entry[t].append((str(row[t]), float(row[f"{t}_confidence"])))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for person in sorted(pooled):
        out[person] = {}
        for t in tasks:
            preds = pooled[person][t]
            counts = Counter(c for c, _ in preds)
            if not counts:
                out[person][t] = {"label": "", "votes": {}, "n": 0, "agreement": 0.0, "tie": False, "confidence": 0.0}
                continue
            top = max(counts.values())
            tied = sorted(c for c, k in counts.items() if k == top)
            mass = {c: sum(p for cc, p in preds if cc == c) for c in tied}
            label = max(tied, key=lambda c: (mass[c], -tied.index(c)))
            out[person][t] = {
                "label": label,
                "votes": dict(sorted(counts.items())),
                "n": len(preds),
                "agreement": top / len(preds),
                "tie": len(tied) > 1,
                "confidence": mass[label] / top,
            }
    return out


# ---------------------------------------------------------------------------- writing


def write_predictions(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    min_confidence: float = 0.0,
    vote: Optional[Mapping[str, Mapping[str, Mapping[str, Any]]]] = None,
    person_of: Optional[Mapping[str, str] | Callable[[str], Optional[str]]] = None,
) -> dict[str, Any]:
    """Write ``predictions.csv`` (atomically) and return what was written and dropped.

    Columns: ``file``; per task ``<task>`` (empty when the prediction is under
    ``min_confidence``) and ``<task>_confidence``; with ``vote`` (from :func:`person_vote`,
    which should get the same ``min_confidence``) and ``person_of`` also ``person`` and per
    task ``<task>_vote`` and ``<task>_agreement``, the same on every row of one person.
    A row with no label left in any label column is dropped. ``mtf-gan prepare --labels
    predictions.csv --label-column <task>`` (per image) or ``<task>_vote`` (per person)
    reads it directly.

    Returns ``{"path", "images", "rows", "dropped", "uncertain": {task: n}, "tasks"}``
    plus, with a vote, ``people``, ``ties``, ``no_vote`` (people without any confident
    prediction) and ``mean_agreement`` per task.
    """
    if not rows:
        raise UserError("predictions: no rows to write")
    if not 0.0 <= min_confidence <= 1.0:
        raise UserError(f"predictions: --min-confidence {min_confidence} must be between 0 and 1")
    if (vote is None) != (person_of is None):
        raise UserError("predictions: a per-person vote needs both the vote and the file -> person map")
    tasks = _tasks_in(rows)
    lookup = None
    if person_of is not None:
        lookup = person_of if callable(person_of) else (lambda f, m=person_of: m.get(f))
    header = ["file"] + (["person"] if vote is not None else [])
    for t in tasks:
        header += [t, f"{t}_confidence"] + ([f"{t}_vote", f"{t}_agreement"] if vote is not None else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    uncertain = dict.fromkeys(tasks, 0)
    written = dropped = 0
    for row in rows:
        person = (lookup(row["file"]) or "") if lookup is not None else None
        cells: list[Any] = [row["file"]] + ([person] if person is not None else [])
        labelled = False
        for t in tasks:
            ok = _certain(row, t, min_confidence)
            uncertain[t] += not ok
            labelled |= ok
            cells += [row[t] if ok else "", f"{float(row[f'{t}_confidence']):.4f}"]
            if vote is not None:
                v = vote.get(person or "", {}).get(t)
                lab = v["label"] if v else ""
                labelled |= bool(lab)
                cells += [lab, f"{v['agreement']:.3f}" if v and lab else ""]
        if not labelled:
            dropped += 1
            continue
        writer.writerow(cells)
        written += 1
    atomic_write_text(path, buf.getvalue())
    counts: dict[str, Any] = {
        "path": str(path), "images": len(rows), "rows": written, "dropped": dropped,
        "uncertain": uncertain, "tasks": tasks, "min_confidence": float(min_confidence),
    }
    if vote is not None:
        counts["people"] = len(vote)
        counts["ties"] = {t: sum(1 for p in vote.values() if p[t]["tie"]) for t in tasks}
        counts["no_vote"] = {t: sum(1 for p in vote.values() if not p[t]["label"]) for t in tasks}
        counts["mean_agreement"] = {
            t: float(np.mean([p[t]["agreement"] for p in vote.values() if p[t]["label"]] or [0.0])) for t in tasks
        }
    return counts


def _persons(files: Sequence[str], person_csv: Optional[str | os.PathLike], person_column: Optional[str]
             ) -> dict[str, str]:
    """``file -> person``: ``person_column`` of ``person_csv`` when given, else the first folder level."""
    if person_csv is not None:
        return persons_from_csv(person_csv, person_column, files)
    return persons_from_folders(files)


def _voted(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, min_confidence: float,
           person_of: Mapping[str, str]) -> dict[str, Any]:
    """Steps 2 and 3: the per-person vote and ``predictions.csv`` with its columns."""
    votes = person_vote(rows, person_of, min_confidence)
    return write_predictions(rows, path, min_confidence, vote=votes, person_of=person_of)


def pseudo_labels(
    classifiers: Sequence[Any] | Mapping[str, Any],
    source: str | os.PathLike,
    path: str | os.PathLike,
    min_confidence: float = 0.0,
    person_csv: Optional[str | os.PathLike] = None,
    person_column: Optional[str] = None,
    vote: bool = True,
    batch: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict, vote per person and write ``path``; returns :func:`write_predictions`' counts.

    The person of an image is ``person_column`` of ``person_csv`` when given, else its
    first folder level under ``source`` (``vote=False`` writes per-image columns only).
    """
    if person_csv is not None and not person_column:
        raise UserError("predictions: --person-csv needs --person-column COL (the column naming the person)")
    if person_column and person_csv is None:
        raise UserError(f"predictions: --person-column {person_column} needs --person-csv FILE.csv that has it; "
                        "leave both out to take the person from the first folder level")
    rows = predict_rows(classifiers, source, batch=batch, progress=progress)
    if not vote:
        return write_predictions(rows, path, min_confidence)
    person_of = _persons([r["file"] for r in rows], person_csv, person_column)
    if not person_of:
        raise UserError(
            f"predictions: every image sits directly in {source}, so there is no person folder to vote over; "
            "pass --person-csv FILE.csv --person-column COL, or --no-vote for per-image labels only"
        )
    return _voted(rows, path, min_confidence, person_of)


def scored_predictions(scored: ScoredSet, classifiers: Sequence[Any], path: str | os.PathLike,
                       min_confidence: float = 0.0, person_csv: Optional[str | os.PathLike] = None,
                       person_column: Optional[str] = None, images: Optional[str | os.PathLike] = None,
                       vote: bool = True) -> dict[str, Any]:
    """``predictions.csv`` of ``mtf-classify score --predictions``, from the probabilities
    already computed (:func:`rows_from_scored`, no second pass), with a per-person vote
    when a person is known: ``person_column`` of ``person_csv`` (with ``person_column``
    alone, the ``attributes.csv`` of the ``images`` folder), else the first folder level;
    images without any person get per-image columns only. Returns the counts of
    :func:`write_predictions`.
    """
    if person_column and person_csv is None:
        csv_guess = Path(images) / "attributes.csv" if images is not None else None
        if csv_guess is None or not csv_guess.is_file():
            raise UserError(f"--person-column {person_column} needs --person-csv FILE.csv holding that column "
                            f"(the images folder has no attributes.csv)")
        person_csv = csv_guess
    rows = rows_from_scored(scored, classifiers)
    if not vote:
        return write_predictions(rows, path, min_confidence)
    person_of = _persons([r["file"] for r in rows], person_csv, person_column)
    if person_of:
        return _voted(rows, path, min_confidence, person_of)
    return write_predictions(rows, path, min_confidence)
