"""classify.evaluate: metrics against a hand-computed confusion matrix; the files of write_metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classify.evaluate import classification_metrics, confusion_matrix, wilson_interval, write_metrics

# Toy test set: 10 images of 3 classes.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 1, 0, 1, 1, 2, 0, 2, 1, 2]
# Worked by hand: rows true, columns predicted.
CM = [[2, 1, 0],
      [0, 2, 0],
      [1, 1, 3]]


def test_confusion_matrix_matches_hand_count():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == CM


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert m["confusion"] == CM
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(0.7)
    # precision = tp / column sum, recall = tp / row sum
    p = [2 / 3, 2 / 4, 3 / 3]
    r = [2 / 3, 2 / 2, 3 / 5]
    f1 = [2 / 3, 2 * 0.5 * 1.0 / 1.5, 2 * 1.0 * 0.6 / 1.6]
    assert [c["precision"] for c in m["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in m["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(f1)
    assert [c["support"] for c in m["per_class"]] == [3, 2, 5]
    assert m["macro_precision"] == pytest.approx(np.mean(p))
    assert m["macro_recall"] == pytest.approx(np.mean(r))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))  # mean of F1s, not F1 of the means (0.7386)
    assert m["majority_rate"] == pytest.approx(0.5)
    # Wilson 95% interval for 7/10 (textbook value 0.3968-0.8922).
    assert m["accuracy_ci95"] == pytest.approx([0.3968, 0.8922], abs=1e-4)


def test_class_never_predicted_has_zero_precision_not_nan():
    m = classification_metrics([0, 1, 1], [0, 0, 0], ["x", "y"])
    assert m["per_class"][1]["precision"] == 0.0 and m["per_class"][1]["f1"] == 0.0
    assert m["macro_recall"] == pytest.approx(0.5)


def test_wilson_interval_edges():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.83 < lo < 0.84  # 20/20 is not "certainly 100%"
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(500, 1000)
    assert lo == pytest.approx(1 - hi) and hi - lo == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(1000), rel=5e-3)  # ~ normal approx. at large n


def test_metrics_agree_with_scikit_learn_on_random_predictions():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    m = classification_metrics(t, p, [str(i) for i in range(7)])
    assert np.array_equal(m["confusion"], metrics.confusion_matrix(t, p, labels=range(7)))
    assert m["macro_f1"] == pytest.approx(metrics.f1_score(t, p, average="macro"))
    assert m["macro_precision"] == pytest.approx(metrics.precision_score(t, p, average="macro"))


def test_write_metrics_writes_json_csv_and_png(tmp_path):
    m = classification_metrics(Y_TRUE, Y_PRED, ["Asian_Indian", "Black", "White"])
    paths = write_metrics(m, tmp_path)
    assert [p.name for p in paths] == ["metrics.json", "per_class.csv", "confusion.png"]
    assert json.loads((tmp_path / "metrics.json").read_text())["confusion"] == CM
    rows = (tmp_path / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,precision,recall,f1,support" and rows[3].startswith("White,1.0000,0.6000,0.7500,5")
