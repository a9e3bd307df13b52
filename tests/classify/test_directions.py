"""``classify.directions`` and ``mtf-classify directions``: InterFaceGAN boundaries in W.

The right answers come from the stand-in generator (``tests/_standin.py``), whose W holds known
axes: ``w[0]`` gender (Female -> Male = +e0), ``w[1]`` age (Old -> Young = -e1), ``w[2]`` race
quartiles. Fitted on its true labels the boundaries must be those axes; fitted on the demo
classifiers' labels they must still point along them, with the one deviation the age
classifier's measured race bias predicts (``tests/classify/_attribute_runs.py``). The demo GAN
is only smoke-tested: it is too weak to have directions worth judging.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from classify import directions as D
from gan.util import UserError
from tests._standin import TRUE_AXES, W_DIM, StandInGenerator, attributes_of, cosine
from tests.classify._attribute_runs import STANDIN_NUM, demo_directions, standin_directions


@pytest.fixture(scope="module")
def standin_file(built_once, trained_classifiers, one_thread):
    return standin_directions(built_once, trained_classifiers)


def _one_hot(names: list[str], classes: tuple[str, ...]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor([classes.index(n) for n in names]), len(classes)).float()


# ---------------------------------------------------------------------------- the fit, on true labels


def test_boundaries_fitted_on_the_standins_true_labels_are_its_axes():
    """No classifier in the way: labels are the stand-in's own (``attributes_of``), so each
    boundary must be the axis the stand-in draws the attribute from, pointing from the
    task's first class to its second, with the spread of w along it as ``w_std``."""
    from classify.dataset import TASK_CLASSES
    from classify.score import load_conditioned_generator

    G, labels, how = load_conditioned_generator(StandInGenerator(), 2000)
    assert how.startswith("uniform")  # a module has no training archive: classes uniform
    w = D.sample_ws(G, range(2000), labels)[:, 0]  # [N, W_DIM]
    truth = attributes_of(w)
    probs = {t: _one_hot(truth[t], TASK_CLASSES[t]) for t in ("gender", "age", "race")}
    clfs = {t: SimpleNamespace(task=t, classes=list(TASK_CLASSES[t])) for t in probs}
    specs = D.direction_specs(clfs)
    assert list(specs) == ["gender", "age", "race=Asian_Chinese_Korean", "race=Asian_Indian", "race=Black",
                           "race=White"]
    assert (specs["age"]["from"], specs["age"]["to"]) == ("Old", "Young")
    fits = D.fit_directions(w, probs, specs)

    assert cosine(fits["gender"]["normal"], TRUE_AXES["gender"]) > 0.99
    assert cosine(fits["age"]["normal"], TRUE_AXES["age"]) > 0.99
    for name in ("gender", "age"):  # (the stand-in's race is tied to its gender and age: see tests/_standin.py)
        assert fits[name]["accuracy"] > 0.97, (name, fits[name])

    cov = torch.cov(w.double().T)
    # Age: w[1] = z[1] + 0.5, so the spread along -e1 is 1 and the boundary w[1] = 0 is offset 0.
    assert D.std_along(fits["age"]["normal"], cov) == pytest.approx(1.0, abs=0.06)
    assert abs(fits["age"]["offset"]) < 0.1
    # Gender: w[0] = +-2 + 0.5 z[0] with classes half and half: std sqrt(4 + 0.25).
    assert D.std_along(fits["gender"]["normal"], cov) == pytest.approx(4.25 ** 0.5, abs=0.1)


def test_orthogonalize_removes_the_span_of_the_others():
    e = torch.eye(4)
    d = D.orthogonalize(torch.tensor([1.0, 1.0, 1.0, 0.0]), [e[0], e[0] + e[1]])  # Gram-Schmidt: e0, then e1
    assert torch.allclose(d, e[2], atol=1e-6)
    with pytest.raises(UserError, match="span"):
        D.orthogonalize(e[0] + e[1], [e[0], e[1]])


def test_resolve_names_takes_directions_and_tasks():
    names = ["gender", "age", "race=Black", "race=White"]
    tasks = {"gender": "gender", "age": "age", "race=Black": "race", "race=White": "race"}
    assert D.resolve_names(["race", "Gender"], names, tasks) == ["race=Black", "race=White", "gender"]
    assert D.resolve_names(["race=white"], names, tasks) == ["race=White"]
    with pytest.raises(UserError, match="--orthogonal-to hair: no such direction or task"):
        D.resolve_names(["hair"], names, tasks)


# ---------------------------------------------------------------------------- through the classifiers


def test_directions_from_the_demo_classifiers_follow_the_standins_axes(standin_file):
    """The age classifier was not what the stand-in is conditioned on (gender): allowed. Fitted
    on the fixture classifiers' labels of 600 stand-in faces, the directions are the true axes
    (measured: cosine 0.999 for age, 0.95 for gender; a random direction in 8 dimensions has a
    cosine above 0.75 with a given axis once in a hundred)."""
    data = torch.load(standin_file, weights_only=True)
    assert cosine(data["directions"]["age"], TRUE_AXES["age"]) > 0.9
    assert cosine(data["directions"]["gender"], TRUE_AXES["gender"]) > 0.9
    # The labels are linear in W beyond chance (on held-out faces).
    for name in ("age", "gender"):
        assert data["boundary_accuracy"][name] > data["majority_accuracy"][name]


def test_directions_file_is_plain_data_with_the_generators_identity(standin_file):
    data = torch.load(standin_file, weights_only=True)
    assert data["generator"]["identity"] == D.generator_identity(StandInGenerator())
    assert data["sampling"]["num"] == STANDIN_NUM and data["sampling"]["seeds"] == f"0-{STANDIN_NUM - 1}"
    assert set(data["directions"]) == {"gender", "age"}
    for name, d in data["directions"].items():
        assert d.shape == (W_DIM,) and float(d.norm()) == pytest.approx(1.0, abs=1e-5)
        assert 0 < data["w_std"][name] < 10 and 0 <= data["boundary_accuracy"][name] <= 1
        assert isinstance(data["offsets"][name], float)
    assert data["attributes"]["gender"]["from"] == "Female" and data["attributes"]["gender"]["to"] == "Male"
    assert [(c["task"], c["classes"]) for c in data["classifiers"]] == [("gender", ["Female", "Male"]),
                                                                       ("age", ["Old", "Young"])]
    assert data["conditional"] == {} and data["orthogonal_to"] == []
    assert torch.tensor(data["cosines"]["fitted"]).shape == (2, 2)
    out = standin_file.parent
    assert (out / "cosines.png").stat().st_size > 0
    assert "| age | Old -> Young |" in (out / "directions.md").read_text()


# ---------------------------------------------------------------------------- bad input


def test_directions_refuse_a_non_empty_outdir(tmp_path, trained_classifiers):
    (tmp_path / "old.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        D.directions(D.DirectionsOptions(StandInGenerator(), [trained_classifiers["age"]], tmp_path, num=50))


def test_directions_refuse_face_recognition_and_unknown_orthogonal_names(tmp_path, trained_classifiers):
    with pytest.raises(UserError, match="face_recognition classifier has no attribute direction"):
        D.directions(D.DirectionsOptions(StandInGenerator(), [trained_classifiers["face_recognition"]],
                                         tmp_path / "a", num=50))
    with pytest.raises(UserError, match="--orthogonal-to race: no such direction or task"):
        D.directions(D.DirectionsOptions(StandInGenerator(), [trained_classifiers["age"]], tmp_path / "b", num=50,
                                         orthogonal_to=("race",)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- the demo generator


def test_directions_cli_on_the_demo_generator_writes_files_and_numbers(tmp_path, demo_run, trained_classifiers,
                                                                       one_thread):
    from classify.cli import main

    out = tmp_path / "dirs"
    args = ["directions", "--network", str(demo_run["checkpoint"]), "--num", "64", "--orthogonal-to", "gender",
            "--outdir", str(out), "--device", "cpu", "--no-progress"]
    for task in ("gender", "age", "race"):
        args += ["--classifier", str(trained_classifiers[task])]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"directions.pt", "directions.md", "cosines.png"}
    data = torch.load(out / "directions.pt", weights_only=True)
    names = ["gender", "age", "race=Asian_Chinese_Korean", "race=Asian_Indian", "race=Black", "race=White"]
    assert list(data["directions"]) == names
    assert data["sampling"]["conditions"].startswith("the label mix of")  # the training archive's
    g = data["directions"]["gender"]
    assert torch.equal(g, data["fitted"]["gender"])  # not projected against itself
    for name in names[1:]:
        assert abs(float(data["directions"][name] @ g)) < 1e-5
        assert data["conditional"][name] == ["gender"]
    for name in names:
        assert 0 <= data["boundary_accuracy"][name] <= 1 and data["w_std"][name] > 0
    assert "boundary accuracy" in res.output and "orthogonal to" in (out / "directions.md").read_text()


def test_directions_cli_rejects_too_few_faces(tmp_path, trained_classifiers):
    from classify.cli import main

    res = CliRunner().invoke(main, ["directions", "--network", str(tmp_path / "G.pt"), "--num", "5",
                                    "--classifier", str(trained_classifiers["age"]), "--outdir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--num" in res.output


def test_demo_directions_fixture_is_for_the_demo_generator(built_once, demo_run, trained_classifiers, one_thread):
    from gan.checkpoint import load_generator

    data = torch.load(demo_directions(built_once, demo_run, trained_classifiers), weights_only=True)
    assert data["generator"]["identity"] == D.generator_identity(load_generator(demo_run["checkpoint"]))
