"""``classify.report``: ``report.md`` tables, the summary lines and the two report files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from classify.report import REPORT_VERSION, format_markdown, json_default, summary_lines, write_report
from classify.shift import task_report


def _report() -> dict:
    clf = SimpleNamespace(task="gender", path="cls/best.pt", model_name="tiny_cnn", classes=["Female", "Male"],
                          confusion=np.array([[9.0, 1.0], [2.0, 8.0]]))
    gen = np.array([[0.9, 0.1]] * 6 + [[0.2, 0.8]] * 4)  # [10, 2]: 60 % Female
    ref = np.array([[0.9, 0.1]] * 5 + [[0.1, 0.9]] * 5)  # [10, 2]: 50 % Female
    t = task_report(clf, gen, ref, np.array([0] * 5 + [1] * 5))
    t["files"] = {"confidence": "confidence_gender.png", "samples": "samples_gender.png"}
    return {"version": REPORT_VERSION,
            "generated": {"kind": "images", "images": "fakes/", "num": 10, "resolution": 32},
            "reference": {"path": "real.zip", "num": 10, "resolution": 32, "is_training_archive": False},
            "tasks": {"gender": t}, "consistency": None, "memorization": None, "identity_leak": None,
            "predictions": None}


def test_markdown_has_a_table_per_task_with_every_share():
    md = format_markdown(_report())
    assert md.startswith("# Attribute report\n") and "Generated: 10 images from `fakes/`, 32 px." in md
    assert "## gender" in md and "| class | generated | generated (BBSE) | reference | reference (BBSE) |" in md
    assert "| Female | 60.0% |" in md and "test accuracy 85.0%" in md and "accuracy on the labelled reference" in md
    assert "## Memorization" not in md and md.rstrip().endswith("![attributes](attributes.png)")


def test_summary_has_one_line_per_task():
    lines = summary_lines(_report())
    assert len(lines) == 1
    assert lines[0].startswith("gender: generated Female 60%, Male 40% | reference 50%, 50% | TV 0.100 (BBSE ")


def test_report_files_are_written_with_numpy_values_as_numbers(tmp_path):
    rep = _report()
    rep["extra"] = {"array": np.arange(3), "scalar": np.float32(0.5), "path": tmp_path}
    write_report(rep, tmp_path)
    back = json.loads((tmp_path / "report.json").read_text())
    assert back["extra"] == {"array": [0, 1, 2], "scalar": 0.5, "path": str(tmp_path)}
    assert (tmp_path / "report.md").read_text() == format_markdown(rep)
    assert json_default(np.int64(3)) == 3
