"""classify.baselines: the models x tasks grid through ``mtf-classify baselines`` (32 px, one epoch)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from classify.cli import main

#: The shared synthetic tree is 32 px: train the demo recipe at its native size.
SMALL = ["--set", "data.input_size=32", "--set", "data.cache_size=32"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_baselines_grid_writes_results_and_skips_finished_cells(tmp_path, synthetic_curated):
    out = tmp_path / "grid"
    args = ["baselines", "--data", str(synthetic_curated), "--outdir", str(out), "--models",
            "tiny_cnn,mobilenet_v3_large", "--tasks", "gender,Age_Classification", "--recipe", "demo",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", *SMALL, "--set", "train.epochs=1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    cells = [out / t / m for t in ("gender", "age") for m in ("tiny_cnn", "mobilenet_v3_large")]
    assert all((c / "metrics.json").is_file() for c in cells)
    md = (out / "results.md").read_text()
    assert "| model | gender | age |" in md
    assert md.count("| tiny_cnn |") == 1 and "| mobilenet_v3_large |" in md and " - " not in md
    assert "| convnext_base (paper, reported) | 98.88% | 97.60% |" in md
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 + 2 and rows[0].startswith("source,task,model,recipe,accuracy,ci95_low")

    stamps = {c: os.stat(c / "metrics.json").st_mtime_ns for c in cells}
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("finished earlier") == 4 and "training in" not in second.output
    assert {c: os.stat(c / "metrics.json").st_mtime_ns for c in cells} == stamps
    assert (out / "results.md").read_text() == md
