"""Labels for ``prepare``: first-level folder names, or one or more columns of a CSV.

Non-curated MTF comes with no documented label format, so the two common forms are read:
``SRC/<class>/...`` folders, and a CSV whose ``file`` column names each image (its path
relative to SRC, or a bare file name when that name is unique in SRC). One column gives an
integer class; several give a joint vector of one-hot groups, in the given order, whose
layout ``prepare`` writes to ``dataset.json["label_groups"]``. Class names are sorted
(numerically when they are all integers) so the same CSV always gives the same indices.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from gan.util import UserError

__all__ = ["Labels", "folder_labels", "csv_labels"]


@dataclass
class Labels:
    """Per-source labels and the class layout written to dataset.json."""

    by_source: dict[str, Any]  # rel -> int or list[float]
    classes: Any  # list[str] | dict[str, list[str]]
    groups: list[dict] | None
    dim: int
    missing_reason: dict[str, str]  # rel -> why it has no label
    csv_missing: list[str]  # CSV entries naming no source file


def folder_labels(names: list[str]) -> Labels:
    classes = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not classes:
        raise UserError(
            "prepare: --labels folder needs class folders (SRC/<class>/...), but every image is "
            "directly in SRC; pass --labels FILE.csv or leave --labels out"
        )
    index = {c: i for i, c in enumerate(classes)}
    by_source, missing = {}, {}
    for n in names:
        if "/" in n:
            by_source[n] = index[n.split("/", 1)[0]]
        else:
            missing[n] = "not inside a class folder (--labels folder)"
    return Labels(by_source, classes, None, len(classes), missing, [])


def _sort_values(values: Iterable[str]) -> list[str]:
    vals = set(values)
    with contextlib.suppress(ValueError):
        return sorted(vals, key=int)  # numeric classes (e.g. 0..9) in numeric order
    return sorted(vals)


def csv_labels(csv_path: Path, columns: Sequence[str], names: list[str]) -> Labels:
    if not csv_path.is_file():
        raise UserError(f"prepare: labels CSV {csv_path} does not exist; pass --labels FILE.csv or --labels folder")
    if not columns:
        raise UserError(f"prepare: --labels {csv_path.name} needs --label-column COL ({_csv_header_hint(csv_path)})")
    try:
        return _read_csv_labels(csv_path, columns, names)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"prepare: cannot read labels CSV {csv_path} ({exc}); save it as UTF-8 CSV") from None


def _read_csv_labels(csv_path: Path, columns: Sequence[str], names: list[str]) -> Labels:
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if "file" not in header:
            raise UserError(
                f"prepare: {csv_path} has no 'file' column (columns: {', '.join(header) or 'none'}); "
                "add a 'file' column with image paths relative to SRC"
            )
        unknown = [c for c in columns if c not in header]
        if unknown:
            valid = [c for c in header if c != "file"]
            raise UserError(
                f"prepare: {csv_path} has no column {', '.join(repr(c) for c in unknown)}; "
                f"pass --label-column with one of: {', '.join(valid)}"
            )
        rows: dict[str, tuple[int, tuple[str, ...]]] = {}
        for line, row in enumerate(reader, start=2):
            f = (row.get("file") or "").strip().replace("\\", "/")
            while f.startswith("./"):
                f = f[2:]
            if not f:
                continue
            vals = tuple((row.get(c) or "").strip() for c in columns)
            if f in rows and rows[f][1] != vals:
                raise UserError(
                    f"prepare: {csv_path} gives {f!r} different labels on lines {rows[f][0]} and {line}; "
                    "keep one row per file"
                )
            rows.setdefault(f, (line, vals))

    present = set(names)
    by_base: dict[str, list[str]] = {}
    for n in names:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    matched: dict[str, tuple[str, ...]] = {}
    csv_missing: list[str] = []
    for f, (_, vals) in rows.items():
        if f in present:
            matched[f] = vals
        elif "/" not in f and len(by_base.get(f, [])) == 1:
            matched[by_base[f][0]] = vals  # a bare file name that is unique in SRC
        else:
            csv_missing.append(f)
    classes_per_col = [_sort_values(v[i] for v in matched.values() if v[i]) for i in range(len(columns))]
    by_source: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for n in names:
        vals = matched.get(n)
        if vals is None:
            missing[n] = f"no row in {csv_path.name}"
            continue
        empty = [c for c, v in zip(columns, vals) if not v]
        if empty:
            missing[n] = f"empty {', '.join(empty)} in {csv_path.name}"
            continue
        idx = [classes_per_col[i].index(v) for i, v in enumerate(vals)]
        if len(columns) == 1:
            by_source[n] = idx[0]
        else:
            vec: list[float] = []
            for i, k in enumerate(idx):
                onehot = [0.0] * len(classes_per_col[i])
                onehot[k] = 1.0
                vec += onehot
            by_source[n] = vec
    if len(columns) == 1:
        classes: Any = classes_per_col[0]
        groups = None
    else:
        classes = {c: classes_per_col[i] for i, c in enumerate(columns)}
        groups, offset = [], 0
        for i, c in enumerate(columns):
            groups.append({"column": c, "offset": offset, "size": len(classes_per_col[i]), "classes": classes_per_col[i]})
            offset += len(classes_per_col[i])
    dim = sum(len(c) for c in classes_per_col)
    return Labels(by_source, classes, groups, dim, missing, sorted(csv_missing))


def _csv_header_hint(csv_path: Path) -> str:
    with contextlib.suppress(Exception), open(csv_path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
        return "columns: " + ", ".join(h for h in header if h != "file")
    return "see the CSV header"


# ---------------------------------------------------------------------------- prepare
