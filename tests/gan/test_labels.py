"""``gan.labels``: class folders and CSV columns -> the labels ``prepare`` writes."""

from __future__ import annotations

import pytest

from gan.labels import csv_labels, folder_labels
from gan.util import UserError


def test_folder_labels_index_sorted_class_folders_and_report_root_files():
    lab = folder_labels(["b/1.png", "a/2.png", "a/3.png", "root.png"])
    assert lab.classes == ["a", "b"] and lab.dim == 2 and lab.groups is None
    assert lab.by_source == {"b/1.png": 1, "a/2.png": 0, "a/3.png": 0}
    assert "not inside a class folder" in lab.missing_reason["root.png"]
    with pytest.raises(UserError, match="--labels folder needs class folders"):
        folder_labels(["x.png", "y.png"])


def test_csv_labels_match_paths_and_unique_bare_names_and_sort_numbers_numerically(tmp_path):
    (tmp_path / "l.csv").write_text("file,age,g\n./p/1.png,10,F\n2.png,9,M\nq\\3.png,,M\nnone.png,1,F\n",
                                    encoding="utf-8")
    names = ["p/1.png", "p/2.png", "q/3.png", "r/4.png"]
    one = csv_labels(tmp_path / "l.csv", ["age"], names)
    assert one.classes == ["9", "10"]  # numeric order, not "10" < "9"
    assert one.by_source == {"p/1.png": 1, "p/2.png": 0}
    assert one.missing_reason == {"q/3.png": "empty age in l.csv", "r/4.png": "no row in l.csv"}
    assert one.csv_missing == ["none.png"]
    two = csv_labels(tmp_path / "l.csv", ["g", "age"], names)
    assert two.dim == 4 and [g["offset"] for g in two.groups] == [0, 2]
    assert two.by_source["p/2.png"] == [0.0, 1.0, 1.0, 0.0]  # M, 9


def test_csv_labels_refuse_conflicting_rows(tmp_path):
    (tmp_path / "l.csv").write_text("file,g\na.png,F\na.png,M\n", encoding="utf-8")
    with pytest.raises(UserError, match="different labels on lines 2 and 3"):
        csv_labels(tmp_path / "l.csv", ["g"], ["a.png"])
