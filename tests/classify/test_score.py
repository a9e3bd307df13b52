"""``classify.score.score`` and ``mtf-classify score``: attribute shares, BBSE, conditional
consistency, the report files and the user errors (the numbers alone: ``test_shift.py``).

The classifiers and the conditional demo GAN are the session fixtures of ``conftest.py``
(tiny CNNs on ``synthetic_curated``; the demo preset on ``prepared_archive``, conditional
on gender). Tolerances are the issue's and were fixed before any result was seen.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from classify import score as S
from gan.util import UserError
from tests._settings import CURATED_PEOPLE, SYNTH_RES

TASKS4 = ("gender", "race", "age", "face_recognition")


# ---------------------------------------------------------------------------- helpers


def _score(outdir, classifiers, **options):
    """:func:`classify.score.score` with :class:`ScoreOptions` of these fields, silently."""
    return S.score(S.ScoreOptions(outdir, classifiers, **options), echo=lambda s: None)


def _write_faces(folder: Path, people, per_person: int, seed0: int) -> None:
    """``per_person`` fresh photos (new render seeds) of each person, as PNGs."""
    from gan.synthetic import render_face

    folder.mkdir(parents=True)
    for i, p in enumerate(people):
        for k in range(per_person):
            img = render_face(p, SYNTH_RES, seed0 + 100 * i + k)
            Image.fromarray(img).save(folder / f"{p.name.replace(' ', '_')}_{k:03d}.png")


# ---------------------------------------------------------------------------- 80/20 mix


def test_gender_share_of_an_80_20_folder_is_recovered(tmp_path, trained_classifiers, one_thread):
    """Fresh photos of the curated tree's own people (what the classifier's test split is:
    same people, unseen photos, so BBSE's label-shift assumption holds): 160 women, 40 men."""
    from gan.synthetic import make_people

    people = make_people(CURATED_PEOPLE, seed=1)  # the people of the synthetic_curated fixture
    women = [p for p in people if p.gender == "Female"]
    men = [p for p in people if p.gender == "Male"]
    assert len(women) == len(men) == CURATED_PEOPLE // 2
    gen, ref = tmp_path / "mix", tmp_path / "balanced"
    _write_faces(gen / "women", women, 160 // len(women), seed0=50_000)
    _write_faces(gen / "men", men, 40 // len(men), seed0=60_000)
    _write_faces(ref, people, 100 // len(people) + 1, seed0=70_000)

    rep = _score(tmp_path / "report", [trained_classifiers["gender"]], images=gen, reference=ref, memorization=False)
    t = rep["tasks"]["gender"]
    female = t["classes"].index("Female")
    raw = t["generated"]["share"][female]
    corrected = t["generated"]["corrected"][female]
    assert t["generated"]["num"] == 200
    print(f"80/20 mix: raw Female share {raw:.3f}, BBSE {corrected:.3f}, reference {t['reference']['share']}")
    assert abs(raw - 0.80) <= 0.10, t["generated"]
    assert abs(corrected - 0.80) <= abs(raw - 0.80) + 1e-9, (raw, corrected, t["bbse"])


# ---------------------------------------------------------------------------- the demo generator, end to end


@pytest.fixture(scope="module")
def scored_demo(tmp_path_factory, demo_run, trained_classifiers, one_thread):
    """``mtf-classify score`` on the conditional demo G with all four classifiers, once."""
    from classify.cli import main

    out = tmp_path_factory.mktemp("score") / "report"
    preds = out.parent / "predictions.csv"
    args = ["score", "--network", str(demo_run["checkpoint"]), "--num", "64", "--outdir", str(out),
            "--predictions", str(preds), "--device", "cpu", "--threads", "1"]
    for task in TASKS4:
        args += ["--classifier", str(trained_classifiers[task])]
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    print(f"score on the demo G: {time.perf_counter() - t0:.1f} s")
    assert res.exit_code == 0, res.output
    return {"out": out, "output": res.output, "predictions": preds,
            "report": json.loads((out / "report.json").read_text())}


def test_score_writes_every_report_file(scored_demo):
    out, rep = scored_demo["out"], scored_demo["report"]
    expected = {"report.json", "report.md", "attributes.png", "closest_pairs.png", "identity_leaks.png",
                "consistency_gender.png"}
    expected |= {f"{kind}_{t}.png" for t in TASKS4 for kind in ("confidence", "samples")}
    assert expected <= {p.name for p in out.iterdir()}
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 50, p.name
    md = (out / "report.md").read_text()
    for task in TASKS4:
        assert f"## {task}" in md
    assert set(rep["tasks"]) == set(TASKS4)
    for t in rep["tasks"].values():
        assert sum(t["generated"]["share"]) == pytest.approx(1.0)
        assert sum(t["reference"]["share"]) == pytest.approx(1.0)
        assert 0.0 <= t["tv"] <= 1.0 and t["kl"] >= 0.0
        assert t["generated"]["num"] == 64 and t["reference"]["num"] > 64  # the default reference: all of it
    # The default reference is the GAN's training archive, labelled by gender: true shares and accuracy.
    assert rep["reference"]["is_training_archive"]
    g = rep["tasks"]["gender"]["reference"]
    assert g["labelled"] == g["num"] and g["accuracy"] is not None and sum(g["true_share"]) == pytest.approx(1.0)
    assert rep["tasks"]["race"]["reference"]["true_share"] is None  # the archive has no race labels
    assert rep["memorization"]["feature_space"].startswith("face-recognition")
    assert rep["identity_leak"]["num"] == 64
    # The printed summary ends with where the report is.
    assert str(out / "report.md") in scored_demo["output"].strip().splitlines()[-1]


def test_conditional_consistency_matrix_has_a_row_per_condition_summing_to_one(scored_demo):
    c = scored_demo["report"]["consistency"]
    assert c["task"] == "gender" and c["classes"] == ["Female", "Male"]
    m = np.asarray(c["matrix"])
    assert m.shape == (2, 2)
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert sum(c["counts"]) == 64 and set(c["conditions"]) == {"Female", "Male"}
    for name, i in (("Female", 0), ("Male", 1)):
        assert c["agreement"][name] == pytest.approx(m[c["conditions"].index(name), i])
        assert 0.0 <= c["classifier_recall"][name] <= 1.0  # measured on the labelled reference
    assert "reference" in c["classifier_recall_source"]


def test_predictions_csv_has_one_row_per_generated_face(scored_demo):
    with open(scored_demo["predictions"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 64 and rows[0]["file"] == "seed0000"
    assert {"gender", "gender_confidence", "race", "age"} <= set(rows[0])


def test_class_option_conditions_every_face(tmp_path, demo_run, trained_classifiers, one_thread):
    rep = _score(tmp_path / "r", [trained_classifiers["gender"]], network=demo_run["checkpoint"], num=12,
                 class_name="male")
    c = rep["consistency"]
    assert c["conditions"] == ["Male"] and c["counts"] == [12]
    # Without a face-recognition classifier, memorization searches downsampled pixels.
    assert rep["memorization"]["feature_space"].startswith("downsampled pixels")
    assert (tmp_path / "r" / "closest_pairs.png").is_file() and rep["identity_leak"] is None


def test_images_with_predictions_need_no_reference(tmp_path, synthetic_noncurated, trained_classifiers, one_thread):
    preds = tmp_path / "preds.csv"
    rep = _score(tmp_path / "r", [trained_classifiers["gender"]], images=synthetic_noncurated, predictions=preds)
    assert rep["reference"] is None and rep["tasks"]["gender"]["tv"] is None
    assert rep["predictions"]["images"] == rep["generated"]["num"] == 96
    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "gender_vote" in rows[0] and rows[0]["person"]  # voted per person folder


# ---------------------------------------------------------------------------- user errors


def _retasked(src: Path, dest: Path, **changes) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt.update(changes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)
    return dest


def test_unknown_class_name_lists_the_valid_ones(tmp_path, demo_run, trained_classifiers):
    with pytest.raises(UserError, match=r"--class Alien.*Female.*Male"):
        _score(tmp_path / "r", [trained_classifiers["gender"]], network=demo_run["checkpoint"], num=4,
               class_name="Alien")
    assert not (tmp_path / "r").exists()  # nothing written


def test_classifier_of_another_task_set_is_refused(tmp_path, trained_classifiers):
    src = trained_classifiers["gender"]
    bad_task = _retasked(src, tmp_path / "emotion" / "best.pt", task="emotion")
    with pytest.raises(UserError, match=r"emotion.*gender, race, age, face_recognition"):
        _score(tmp_path / "r", [bad_task], images=tmp_path, reference=tmp_path)
    bad_classes = _retasked(src, tmp_path / "pets" / "best.pt", classes=["cat", "dog"])
    with pytest.raises(UserError, match=r"cat, dog.*Female, Male.*another task set"):
        _score(tmp_path / "r", [bad_classes], images=tmp_path, reference=tmp_path)


def test_two_classifiers_for_one_task_are_refused(tmp_path, trained_classifiers):
    twin = _retasked(trained_classifiers["gender"], tmp_path / "twin" / "best.pt")
    with pytest.raises(UserError, match="two classifiers for task gender"):
        _score(tmp_path / "r", [trained_classifiers["gender"], twin], images=tmp_path, reference=tmp_path)


def test_empty_image_folder_and_missing_reference_are_clear_errors(tmp_path, trained_classifiers):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"--images .*empty: no images"):
        _score(tmp_path / "r", [trained_classifiers["gender"]], images=empty, reference=empty)
    with pytest.raises(UserError, match="--images needs --reference"):
        _score(tmp_path / "r", [trained_classifiers["gender"]], images=empty)


def test_cli_refuses_a_non_empty_outdir(tmp_path, trained_classifiers):
    from classify.cli import main

    out = tmp_path / "r"
    out.mkdir()
    (out / "report.json").write_text("{}")
    res = CliRunner().invoke(main, ["score", "--images", str(tmp_path), "--reference", str(tmp_path),
                                    "--classifier", str(trained_classifiers["gender"]), "--outdir", str(out)])
    assert res.exit_code == 1 and "not empty" in res.output and "Traceback" not in res.output
    assert (out / "report.json").read_text() == "{}"


def test_a_published_pkl_is_scored_and_needs_a_reference(tmp_path, prepared_archive, trained_classifiers, one_thread):
    """``--network`` takes a published StyleGAN2-ADA pickle (read without executing it); its
    training set is not one of ours, so the real side must be named."""
    from tests._settings import shared_fixture

    pkl = shared_fixture("sg2a-tiny-uncond.pkl")
    with pytest.raises(UserError, match="--reference"):
        _score(tmp_path / "a", [trained_classifiers["gender"]], network=pkl, num=8)
    rep = _score(tmp_path / "r", [trained_classifiers["gender"]], network=pkl, num=8, reference=prepared_archive)
    assert rep["generated"]["network"] == str(pkl) and not rep["reference"]["is_training_archive"]
    gender = rep["tasks"]["gender"]
    assert gender["generated"]["num"] == 8 and sum(gender["generated"]["share"]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- truncation (issue 16)
#
# On the stand-in generator (tests/_standin.py) the attributes of every face are known from its w.
# The demo classifiers, trained on 16 people, do not generalise to the stand-in's new faces (about
# 60% gender agreement there), so the stand-in tests read the truth instead: an "oracle" classifier
# that answers for each image what the stand-in drew it with. What is tested is the sweep and the
# class centres of `score`, not a classifier.


def _truthful_standin():
    """A stand-in whose synthesis records, per uint8 image, the attributes it was drawn with."""
    from gan.images import images_to_uint8
    from tests._standin import StandInGenerator, StandInSynthesis, attributes_of

    class Recording(StandInSynthesis):
        def __init__(self, truth):
            super().__init__()
            self.truth = truth

        def forward(self, ws, noise_mode="const", **_ignored):
            img = super().forward(ws, noise_mode)
            attrs = attributes_of(ws[:, 0])
            for i, u in enumerate(images_to_uint8(img)):
                self.truth[u.contiguous().numpy().tobytes()] = {t: v[i] for t, v in attrs.items()}
            return img

    G = StandInGenerator()
    G.truth = {}
    G.synthesis = Recording(G.truth)
    return G


def _oracle(task: str, truth: dict):
    """A :class:`Classifier` that is always right about images the stand-in drew (one-hot)."""
    from classify.classifier import Classifier
    from gan.synthetic import AGES, GENDERS

    classes = list({"age": AGES, "gender": GENDERS}[task])
    clf = Classifier(path=Path(f"oracle-{task}"), task=task, classes=classes, model_name="oracle",
                     model=torch.nn.Identity(), recipe=None, device=torch.device("cpu"),
                     confusion=np.eye(len(classes)) * 100)

    def predict(images, batch=64):
        idx = torch.tensor([classes.index(truth[torch.as_tensor(im).contiguous().numpy().tobytes()][task])
                            for im in images])
        return torch.nn.functional.one_hot(idx, len(classes)).float(), torch.zeros(len(idx), 1)

    clf.predict = predict
    return clf


@pytest.fixture(scope="module")
def standin_reference(tmp_path_factory):
    """200 untruncated stand-in faces (seeds 10000+, half of each class) as PNGs: the reference
    is the generator's own distribution, so the TV at psi 1 is sampling noise alone."""
    from gan.generate import generate_images

    G = _truthful_standin()
    folder = tmp_path_factory.mktemp("standin") / "reference"
    folder.mkdir()
    for s in range(10_000, 10_200):
        img = generate_images(G, [s], torch.eye(2)[s % 2][None])[0]  # [3, H, W]
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"seed{s}.png")
    return folder, G.truth


def test_truncation_sweep_on_the_standin_shows_the_predicted_old_shift(tmp_path, standin_reference, one_thread):
    """Global truncation pulls w[1] (age) to w_avg's 0.5 > 0: the Old share rises from 0.69 to
    0.80 (psi 0.6) and 0.95 (psi 0.3) by tests/_standin.old_share_under_global_truncation, and
    women turn men below psi 1/3. 200 faces per psi: binomial sd <= 0.035, tolerance 0.1."""
    from tests._standin import old_share_under_global_truncation

    ref, ref_truth = standin_reference
    G = _truthful_standin()
    G.truth.update(ref_truth)  # the oracle knows the reference's faces too
    clfs = [_oracle("age", G.truth), _oracle("gender", G.truth)]
    rep = _score(tmp_path / "r", clfs, network=G, num=200, reference=ref, memorization=False,
                 trunc_sweep=(1, 0.6, 0.3))
    sw = rep["truncation_sweep"]
    assert sw["psi"] == [1.0, 0.6, 0.3] and sw["trunc_center"] == "global" and sw["num"] == 200
    age = sw["tasks"]["age"]
    old = [row[age["classes"].index("Old")] for row in age["share"]]
    predicted = [round(old_share_under_global_truncation(p), 3) for p in sw["psi"]]
    print(f"stand-in sweep: Old {old} (predicted {predicted})")
    for psi, share in zip(sw["psi"], old):
        assert share == pytest.approx(old_share_under_global_truncation(psi), abs=0.1), (psi, old)
    assert old[2] - old[0] >= 0.15, old  # predicted 0.26
    assert age["corrected"] == age["share"]  # a perfect classifier: BBSE changes nothing
    assert age["tv"][0] <= 0.12 and age["tv"][2] >= 0.15, age["tv"]
    gender = sw["tasks"]["gender"]
    male = [row[gender["classes"].index("Male")] for row in gender["share"]]
    print(f"stand-in sweep: Male {male} towards w_avg")
    assert male[2] >= 0.75, male  # half women, three in four of them men at psi 0.3: 0.875
    assert (tmp_path / "r" / "truncation.png").is_file()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Truncation sweep" in md and "| 0.3 |" in md and "![truncation](truncation.png)" in md
    # Towards each class's own centre no woman turns man: every face keeps its gender (a property
    # of each face, not a share, so 100 faces do).
    rep = _score(tmp_path / "c", clfs, network=G, num=100, reference=ref, memorization=False,
                 trunc_center="class", trunc_sweep=(1, 0.3))
    sw = rep["truncation_sweep"]
    assert sw["trunc_center"] == "class" and sw["trunc_center_samples"] == 1000
    assert rep["generated"]["trunc_center"] == "class" and rep["generated"]["trunc_center_samples"] == 1000
    male = [row[sw["tasks"]["gender"]["classes"].index("Male")] for row in sw["tasks"]["gender"]["share"]]
    print(f"stand-in sweep: Male {male} towards the class centres")
    assert abs(male[1] - male[0]) <= 0.02, male


def test_trunc_center_class_on_an_unconditional_generator_is_refused(tmp_path, trained_classifiers,
                                                                     prepared_archive):
    from gan.networks import NetworkConfig, build_generator

    G = build_generator(NetworkConfig(z_dim=8, w_dim=8, c_dim=0, img_resolution=8, channel_base=64, channel_max=8,
                                      mapping_layers=1, num_fp16_res=0))
    with pytest.raises(UserError, match=r"--trunc-center class: this network is unconditional.*global"):
        _score(tmp_path / "r", [trained_classifiers["gender"]], network=G, num=4, reference=prepared_archive,
               trunc_center="class")
    assert not (tmp_path / "r").exists()


def test_trunc_sweep_options_are_checked(tmp_path, trained_classifiers):
    from classify.cli import main

    base = ["score", "--classifier", str(trained_classifiers["gender"]), "--outdir", str(tmp_path / "r")]
    res = CliRunner().invoke(main, base + ["--images", str(tmp_path), "--reference", str(tmp_path),
                                           "--trunc-sweep", "1,0.5"])
    assert res.exit_code == 1 and "need --network" in res.output
    res = CliRunner().invoke(main, base + ["--images", str(tmp_path), "--reference", str(tmp_path),
                                           "--trunc-sweep", "1,half"])
    assert res.exit_code == 1 and "'half' is not a number" in res.output and "Traceback" not in res.output
    assert S.parse_trunc_sweep("1, 0.9,0.7,0.5,0.7") == (1.0, 0.9, 0.7, 0.5)
    assert not (tmp_path / "r").exists()


def test_score_with_class_centres_and_a_sweep_on_the_demo_generator(tmp_path, demo_run, trained_classifiers,
                                                                     one_thread):
    """Smoke run: files and numbers are written (the demo G is too weak to judge the values)."""
    from classify.cli import main

    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["score", "--network", str(demo_run["checkpoint"]), "--num", "16",
                                    "--classifier", str(trained_classifiers["age"]), "--trunc", "0.7",
                                    "--trunc-center", "class", "--trunc-sweep", "1,0.5", "--no-memorization",
                                    "--outdir", str(out), "--threads", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["generated"]["trunc_center"] == "class" and rep["generated"]["trunc_center_samples"] == 1000
    sw = rep["truncation_sweep"]
    assert sw["psi"] == [1.0, 0.5] and sw["num"] == 16
    age = sw["tasks"]["age"]
    assert len(age["share"]) == len(age["corrected"]) == len(age["tv"]) == 2
    assert all(sum(r) == pytest.approx(1.0) for r in age["share"]) and all(0 <= v <= 1 for v in age["tv"])
    with Image.open(out / "truncation.png") as im:
        assert im.size[0] > 300
    assert "truncation sweep (age" in res.output and "class mean w" in (out / "report.md").read_text()
