"""``classify.edit`` and ``mtf-classify edit``: faces moved along a fitted direction.

On the stand-in generator (``tests/_standin.py``) the age classifier's probability must rise
monotonically along the fitted age direction (Old -> Young). Its faces change identity
whenever an edit moves ``w[3:]`` across a 0.1 rounding step, which the fitted direction's
small off-axis components do, so each strength's mean is over many faces and the strengths
are 1.5 w_std apart: measured by resampling 128 of 512 faces, such a sweep was monotonic 400
times in 400, its smallest step above 0.07 in 95% (per-face probabilities have a spread of
about 0.4). The demo GAN is only smoke-tested.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from classify import edit as E
from classify.directions import load_directions, sample_ws, std_along
from gan.util import UserError
from tests._standin import StandInGenerator, attributes_of
from tests.classify._attribute_runs import demo_directions, standin_directions

STRENGTHS = (-1.5, 0.0, 1.5, 3.0)
SEEDS = range(1000, 1128)  # faces the directions were not fitted on (those were seeds 0-599)


@pytest.fixture(scope="module")
def standin_file(built_once, trained_classifiers, one_thread):
    return standin_directions(built_once, trained_classifiers)


@pytest.fixture(scope="module")
def demo_file(built_once, demo_run, trained_classifiers, one_thread):
    return demo_directions(built_once, demo_run, trained_classifiers)


def _edit(**kw):
    return E.edit(E.EditOptions(**kw), echo=lambda s: None)


def test_an_edit_along_the_fitted_age_direction_moves_the_age_classifier_monotonically(
        tmp_path, standin_file, trained_classifiers):
    out = tmp_path / "edit"
    report = _edit(network=StandInGenerator(), directions=standin_file, attribute="age", outdir=out,
                   strengths=STRENGTHS, seeds=SEEDS, classifiers=[trained_classifiers["age"]], progress=False)
    young = report["tasks"]["age"]["mean_probability"]["Young"]
    assert report["tasks"]["age"]["strengths"] == list(STRENGTHS) and report["tasks"]["age"]["edited"]
    assert all(b > a for a, b in zip(young, young[1:])), young
    assert young[-1] - young[0] > 0.3, young

    # The stand-in's truth: the share of faces it draws Young rises from few to nearly all.
    from classify.score import load_conditioned_generator

    G, labels, _ = load_conditioned_generator(StandInGenerator(), len(SEEDS))  # as edit draws them
    data = load_directions(standin_file, G)
    ws = sample_ws(G, list(SEEDS), labels)
    moved = E.edited_ws(ws, data["directions"]["age"], data["w_std"]["age"], STRENGTHS)  # [N, S, num_ws, w_dim]
    share = [np.mean([a == "Young" for a in attributes_of(moved[:, k, 0])["age"]]) for k in range(len(STRENGTHS))]
    assert all(b >= a for a, b in zip(share, share[1:])) and share[0] < 0.2 and share[-1] > 0.9, share

    from PIL import Image

    with Image.open(out / "grid.png") as im:
        assert im.size == (32 * len(STRENGTHS), 32 * len(SEEDS))  # columns strengths, rows seeds
    assert (out / "edit.png").stat().st_size > 0
    saved = json.loads((out / "edit.json").read_text())
    assert saved["w_std"] == pytest.approx(data["w_std"]["age"]) and saved["from"] == "Old" and saved["to"] == "Young"


def test_orthogonal_edit_projects_the_direction_and_rescales_w_std(demo_file):
    data = torch.load(demo_file, weights_only=True)
    name, n, w_std, others = E.edit_direction(data, "Age", ["gender"])
    assert name == "age" and others == ["gender"]
    assert abs(float(n @ data["directions"]["gender"])) < 1e-5 and float(n.norm()) == pytest.approx(1, abs=1e-5)
    assert w_std == pytest.approx(std_along(n, data["w_cov"]))
    assert E.edit_direction(data, "age")[2] == pytest.approx(data["w_std"]["age"])
    with pytest.raises(UserError, match="one direction per class; pass one of race=Asian_Chinese_Korean"):
        E.edit_direction(data, "race")


# ---------------------------------------------------------------------------- bad input


def test_edit_refuses_an_unknown_attribute(tmp_path, standin_file):
    with pytest.raises(UserError, match="--attribute hair: the directions file has no such direction; "
                                        "choose one of gender, age"):
        _edit(network=StandInGenerator(), directions=standin_file, attribute="hair", outdir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_edit_refuses_directions_made_for_another_generator(tmp_path, standin_file):
    other = StandInGenerator()
    other.mapping.w_avg[0] = 0.0  # another G_ema: its tracked mean w differs
    with pytest.raises(UserError, match="was made for another generator"):
        _edit(network=other, directions=standin_file, attribute="age", outdir=tmp_path / "e")


def test_edit_refuses_a_non_empty_outdir_and_an_existing_video(tmp_path, standin_file):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="not empty"):
        _edit(network=StandInGenerator(), directions=standin_file, attribute="age", outdir=tmp_path / "full")
    (tmp_path / "old.mp4").write_bytes(b"mine")
    with pytest.raises(UserError, match="exists; pass a new file name"):
        _edit(network=StandInGenerator(), directions=standin_file, attribute="age", outdir=tmp_path / "e",
              video=tmp_path / "old.mp4")
    assert (tmp_path / "old.mp4").read_bytes() == b"mine"


def test_strengths_that_are_not_numbers_are_a_usage_error_naming_the_option(tmp_path, standin_file):
    from classify.cli import main

    res = CliRunner().invoke(main, ["edit", "--network", str(tmp_path / "G.pt"), "--directions", str(standin_file),
                                    "--attribute", "age", "--strengths=-1,strong", "--outdir", str(tmp_path / "e")])
    assert res.exit_code == 2
    assert "--strengths" in res.output and "'strong' is not a number" in res.output
    with pytest.raises(UserError, match="--strengths 1,nan"):
        E.parse_strengths("1,nan")


# ---------------------------------------------------------------------------- the demo generator


def test_edit_cli_on_the_demo_generator_writes_grid_numbers_plot_and_video(tmp_path, demo_run, demo_file,
                                                                           trained_classifiers, one_thread):
    import imageio.v2 as imageio

    from classify.cli import main

    out, video = tmp_path / "edit", tmp_path / "sweep.mp4"
    args = ["edit", "--network", str(demo_run["checkpoint"]), "--directions", str(demo_file), "--attribute", "age",
            "--strengths=-3,0,3", "--seeds", "0-3", "--orthogonal-to", "gender", "--outdir", str(out),
            "--video", str(video), "--frames", "12", "--fps", "10", "--device", "cpu", "--no-progress"]
    for task in ("gender", "age"):
        args += ["--classifier", str(trained_classifiers[task])]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"grid.png", "edit.json", "edit.png"}
    report = json.loads((out / "edit.json").read_text())
    assert report["strengths"] == [-3.0, 0.0, 3.0] and report["seeds"] == [0, 1, 2, 3]
    assert report["orthogonal_to"] == ["gender"] and report["w_std"] > 0
    for task, classes in (("gender", ["Female", "Male"]), ("age", ["Old", "Young"])):
        t = report["tasks"][task]
        assert t["classes"] == classes and t["edited"] == (task == "age")
        per_strength = np.array([t["mean_probability"][c] for c in classes]).T  # [S, K]
        assert per_strength.shape == (3, 2) and np.allclose(per_strength.sum(1), 1, atol=1e-4)
    assert report["video"]["frames"] == 12
    reader = imageio.get_reader(video)
    try:
        assert reader.count_frames() == 12
    finally:
        reader.close()
