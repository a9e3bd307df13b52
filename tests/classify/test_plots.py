"""``classify.plots``: every figure is a readable PNG drawn from plain numbers (closest pairs and
leaks: ``test_leak.py``, which makes them from its own runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from classify.evaluate import confusion_matrix

from classify.plots import (MAX_CLASSES_SHOWN, hwc, plot_attributes, plot_confidence, plot_confusion, plot_consistency,
                            plot_samples, shown_classes)


def _task(k: int, reference: bool = True) -> dict:
    share = np.arange(1, k + 1, dtype=float)
    share /= share.sum()
    ref = {"share": share[::-1].tolist(), "true_share": share.tolist()} if reference else None
    return {"task": "race", "classes": [f"c{i}" for i in range(k)], "tv": 0.25, "reference": ref,
            "generated": {"share": share.tolist(), "corrected": share.tolist()}}


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_panels_show_every_class_or_the_most_frequent_ones():
    assert shown_classes(_task(4)) == [0, 1, 2, 3]
    many = _task(30, reference=False)
    shown = shown_classes(many)
    assert len(shown) == MAX_CLASSES_SHOWN and shown == sorted(shown) and shown[-1] == 29  # the largest shares


def test_attribute_confidence_sample_and_consistency_figures_are_written(tmp_path):
    tasks = {"race": _task(4), "age": dict(_task(2, reference=False), task="age")}
    plot_attributes(tasks, tmp_path / "attributes.png")
    assert _png(tmp_path / "attributes.png")[0] > 400  # one panel per task
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=40)  # [40, 4]
    plot_confidence(tasks["race"], probs.max(1), probs[:10].max(1), tmp_path / "confidence.png")
    images = [torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)) for _ in range(40)]
    plot_samples(tasks["race"], images, probs, tmp_path / "samples.png", n=4)
    c = {"task": "gender", "classes": ["Female", "Male"], "conditions": ["Female", "Male"], "counts": [5, 7],
         "matrix": [[0.8, 0.2], [0.3, 0.7]]}
    plot_consistency(c, tmp_path / "consistency.png")
    for name in ("confidence", "samples", "consistency"):
        w, h = _png(tmp_path / f"{name}.png")
        assert w > 100 and h > 50, name


def test_images_are_drawn_channels_last():
    chw = torch.zeros((3, 5, 7), dtype=torch.uint8)
    assert hwc(chw).shape == (5, 7, 3) and hwc(np.zeros((5, 7, 3))).shape == (5, 7, 3)


@pytest.mark.parametrize("k,texts", [(3, 9), (240, 0)])
def test_confusion_png_prints_cell_counts_only_for_few_classes(tmp_path, monkeypatch, k, texts):
    import matplotlib.axes

    calls = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, *a, **kw: calls.append(a) or original(self, *a, **kw))
    rng = np.random.default_rng(1)
    cm = confusion_matrix(rng.integers(0, k, 5 * k), rng.integers(0, k, 5 * k), k)
    plot_confusion(cm, [f"person {i}" for i in range(k)], tmp_path / "c.png")
    assert len(calls) == texts
    with Image.open(tmp_path / "c.png") as im:
        assert im.format == "PNG" and min(im.size) >= 400
