"""Memorization and identity-leak checks (classify/leak.py; their figures: classify/plots.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classify.classifier import pixel_features
from classify.leak import (
    calibrate_threshold,
    identity_calibration,
    identity_leak,
    memorization,
    nearest_neighbours,
)
from classify.plots import plot_closest_pairs, plot_leaks
from gan.util import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

#: The identity check needs a face-recognition classifier that knows its people well
#: (the session's demo classifier sees 6 photos per person and reaches 69 % test accuracy;
#: nothing can then tell its people from strangers). 30 photos of 16 people, 30 epochs:
#: about 98 % test accuracy, ~30 s on one CPU thread.
FR_PEOPLE, FR_PER_PERSON, FR_EPOCHS = 16, 30, 30


def _images(folder_or_archive: Path) -> tuple[list[str], list[torch.Tensor]]:
    from classify.classifier import iter_image_source

    names, imgs = zip(*iter_image_source(folder_or_archive))
    return list(names), list(imgs)


def _render(people: int, per_person: int, seed: int) -> list[torch.Tensor]:
    """Photos of ``people`` synthetic people never written to any training set."""
    from gan.synthetic import make_people, render_face

    out = []
    for p in make_people(people, seed):
        for k in range(per_person):
            img = render_face(p, 32, seed * 1000 + k)  # [32, 32, 3] uint8
            out.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
    return out


@pytest.fixture(scope="module")
def face_classifier(built_once):
    """A face-recognition classifier on its own curated tree: ``(Classifier, tree)``."""
    from classify import train as T
    from classify.classifier import load_classifier
    from gan.synthetic import write_synthetic

    def build(root: Path) -> None:
        write_synthetic(root / "curated", layout="curated", people=FR_PEOPLE, per_person=FR_PER_PERSON,
                        resolution=32, seed=1, progress=False)
        T.train(root / "curated", "face_recognition", "tiny_cnn", "demo", root / "fr",
                overrides=[f"train.epochs={FR_EPOCHS}"], cache_dir=root / "cache", progress=False, echo=False)

    root = built_once("leak-face-classifier", build)
    return load_classifier(root / "fr" / "best.pt"), root / "curated"


# ---------------------------------------------------------------------------- neighbours


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_chunked_nearest_neighbours_match_the_full_distance_matrix(metric):
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(37, 9, generator=g), torch.randn(53, 9, generator=g)
    dist, idx = nearest_neighbours(q, r, k=3, metric=metric, query_chunk=7, ref_chunk=5)
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(r, dim=1).T  # [37, 53]
    full = 1 - cos if metric == "cosine" else (2 - 2 * cos).clamp_min(0).sqrt()
    want_d, want_i = full.sort(dim=1)
    assert np.array_equal(idx, want_i[:, :3].numpy())
    np.testing.assert_allclose(dist, want_d[:, :3].numpy(), atol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()  # closest first


def test_nearest_neighbours_reject_mismatched_features():
    with pytest.raises(UserError, match="same classifier"):
        nearest_neighbours(np.ones((2, 4)), np.ones((3, 5)))
    with pytest.raises(UserError, match="metric"):
        nearest_neighbours(np.ones((2, 4)), np.ones((3, 4)), metric="manhattan")


# ---------------------------------------------------------------------------- memorization


@pytest.mark.parametrize("space", ["pixels", "face_recognition"])
def test_copies_of_training_images_are_found_at_distance_zero_and_listed_first(
        space, prepared_archive, face_classifier, tmp_path):
    _, train = _images(prepared_archive)  # the GAN's training archive
    copied = [5, 41, 77, 90]
    fresh = _render(6, 3, seed=11)  # new people: what a generator that does not copy makes
    heldout = _render(8, 3, seed=12)  # real photos never trained on
    gen = fresh[:9] + [train[i].clone() for i in copied] + fresh[9:]
    copy_rows = set(range(9, 9 + len(copied)))

    if space == "pixels":
        feats = pixel_features
    else:
        clf = face_classifier[0]
        feats = lambda imgs: clf.predict(imgs)[1].numpy()  # noqa: E731  penultimate features
    res = memorization(feats(gen), feats(train), feats(heldout))

    assert set(res["order"][: len(copied)].tolist()) == copy_rows
    for row, src in zip(sorted(copy_rows), copied):
        assert res["distance"][row] < 1e-4
        assert torch.equal(train[res["index"][row]], train[src])
    fresh_d = np.delete(res["distance"], sorted(copy_rows))
    assert fresh_d.min() > 1e-3
    s = res["summary"]
    # every copy is closer to the archive than any held-out real photo
    assert all(res["distance"][r] < s["thresholds"]["min"] for r in copy_rows)
    assert s["fraction_below"]["min"] >= len(copied) / len(gen)
    assert s["closest"][0]["distance"] < 1e-4 and len(s["closest"]) == 16

    png = tmp_path / "closest.png"
    plot_closest_pairs(gen, train, res, png, n=8)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200


def test_without_copying_the_share_below_the_heldout_percentile_is_the_percentile():
    g = torch.Generator().manual_seed(1)
    train, heldout, gen = (torch.randn(n, 16, generator=g) for n in (500, 2000, 2000))  # one distribution
    s = memorization(gen, train, heldout)["summary"]
    assert s["fraction_below"]["p5"] == pytest.approx(0.05, abs=0.02)
    assert s["fraction_below"]["p1"] == pytest.approx(0.01, abs=0.01)
    assert "warning" not in s
    copied = memorization(train[:50], train, heldout)["summary"]
    assert copied["fraction_below"]["min"] == 1.0
    leaked = memorization(gen, train, torch.cat([heldout, train[:3]]))["summary"]
    assert "3 of 2003 held-out images" in leaked["warning"]


def test_pixel_features_ignore_brightness_but_not_identity():
    a, b = _render(2, 1, seed=3)
    brighter = (a.int() + 20).clamp(0, 255).to(torch.uint8)
    f = pixel_features([a, brighter, b])
    d, _ = nearest_neighbours(f[:1], f[1:], k=2)
    assert d[0, 0] < 0.01 < d[0, 1]


# ---------------------------------------------------------------------------- identity


def test_threshold_is_the_confidence_95_percent_of_correct_predictions_reach():
    conf = np.linspace(0.55, 0.99, 40)
    probs = np.stack([conf, 1 - conf], 1)  # [40, 2], all predict class 0
    wrong = np.array([[0.999, 0.001]] * 5)  # confident but wrong: ignored
    true = np.r_[np.zeros(40, int), np.ones(5, int)]
    t = calibrate_threshold(np.r_[probs, wrong], true)
    assert np.mean(conf >= t) >= 0.95 and np.mean(conf > t) < 0.95
    # strangers: at most 1 % of them may reach the threshold (here: none of 50)
    strangers = np.stack([np.linspace(0.5, 0.97, 50), 1 - np.linspace(0.5, 0.97, 50)], 1)
    cal = identity_calibration(np.r_[probs, wrong], true, strangers_probs=strangers)
    assert cal["threshold"] > 0.97 and cal["stranger_false_match_rate"] == 0.0
    assert cal["heldout_recall"] == pytest.approx(np.mean(conf >= cal["threshold"]))
    with pytest.raises(UserError, match="none of the 5 held-out"):
        calibrate_threshold(wrong, np.ones(5, int))


def test_identity_leak_flags_known_people_well_above_strangers(face_classifier, synthetic_noncurated, tmp_path):
    clf, tree = face_classifier
    fr = tree / "face_recognition"

    def probs(folder):
        names, imgs = _images(folder)
        return names, imgs, clf.predict(imgs)[0].numpy()

    vnames, _, vprobs = probs(fr / "val")
    strangers = clf.predict(_render(16, 4, seed=3))[0].numpy()  # faces the classifier never saw
    cal = identity_calibration(vprobs, [clf.classes.index(n.split("/")[0]) for n in vnames], strangers_probs=strangers)

    _, known_imgs, known = probs(fr / "test")  # held-out photos of its own people
    _, _, unseen = probs(synthetic_noncurated)  # 12 other people, 8 photos each
    hit = identity_leak(known, cal["threshold"], clf.classes)
    false = identity_leak(unseen, cal["threshold"], clf.classes)
    assert false["fraction"] < 0.10
    assert hit["fraction"] >= max(2 * false["fraction"], false["fraction"] + 0.25)

    assert hit["count"] == len(hit["indices"]) == len(hit["people"]) == sum(hit["per_person"].values())
    assert hit["confidences"] == sorted(hit["confidences"], reverse=True)
    assert min(hit["confidences"]) >= cal["threshold"]
    tnames = _images(fr / "test")[0]
    right = np.mean([tnames[i].split("/")[0] == p for i, p in zip(hit["indices"], hit["people"])])
    assert right > 0.9  # the flagged known faces are matched to the right person

    _, train_imgs = _images(fr / "train")
    by_person: dict[str, list] = {}
    for n, img in zip(_images(fr / "train")[0], train_imgs):
        by_person.setdefault(n.split("/")[0], []).append(img)
    png = tmp_path / "leaks.png"
    plot_leaks(known_imgs, by_person, hit, png, n=6)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.height > 400  # six rows of faces
    empty = identity_leak(np.full((2, len(clf.classes)), 1 / len(clf.classes)), 0.99, clf.classes)
    assert empty["count"] == 0
    plot_leaks(known_imgs, by_person, empty, tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 0


def test_identity_leak_rejects_a_class_list_of_another_classifier():
    with pytest.raises(UserError, match="class list"):
        identity_leak(np.full((3, 4), 0.25), 0.5, ["a", "b"])
