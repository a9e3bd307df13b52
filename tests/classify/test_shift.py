"""``classify.shift``: class shares, black-box shift estimation and distances, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from classify import shift as S


# ---------------------------------------------------------------------------- pure numbers


def test_bbse_recovers_the_true_shares_under_label_shift():
    cm = np.array([[70, 30], [10, 90]])  # P(pred | true) = [[.7, .3], [.1, .9]]: raw share 0.58
    q_true = np.array([0.8, 0.2])
    mu = (cm / cm.sum(1, keepdims=True)).T @ q_true  # what the classifier would report
    q, info = S.bbse_correct(mu, cm)
    assert info["method"] == "solve"
    np.testing.assert_allclose(q, q_true, atol=1e-9)
    assert abs(mu[0] - 0.8) > 0.1  # the raw share is off; the correction is what fixes it


def test_bbse_on_a_singular_confusion_falls_back_to_least_squares_on_the_simplex():
    cm = np.array([[5, 5, 0], [5, 5, 0], [0, 0, 10]])  # classes 0 and 1 indistinguishable
    q, info = S.bbse_correct([0.6, 0.1, 0.3], cm)
    assert info["method"] == "lstsq" and "singular" in info["note"]
    assert (q >= 0).all() and q.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(q, [0.35, 0.35, 0.3], atol=1e-9)  # the 0.7 of {0, 1} split evenly


def test_bbse_clips_negative_solutions_and_keeps_untested_classes():
    cm = np.array([[8, 2], [0, 0]])  # class 1 has no test images: taken as recognised perfectly
    q, info = S.bbse_correct([0.9, 0.1], cm)  # exact solution [1.125, -0.125]: outside the simplex
    assert info["untested_classes"] == 1 and info["clipped"]
    np.testing.assert_allclose(q, [1.0, 0.0])


def test_distances_of_distributions():
    assert S.total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
    assert S.total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert S.kl_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    dropped = S.kl_divergence([0.5, 0.5], S.smoothed([1.0, 0.0], 100))
    assert np.isfinite(dropped) and dropped > 1.0  # a dropped class: large, not infinite
