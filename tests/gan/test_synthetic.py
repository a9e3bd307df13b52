"""Tests of the procedural face generator (``gan.synthetic``) and ``mtf-gan synth``.

Besides layout and determinism, these check the property the rest of the package relies
on: labels are *learnable but not trivial*. A small CNN trained briefly on the curated
train split must land in a band of test accuracy (the issue asks for roughly 70-97 %;
asserted as 0.65-0.985 to leave room for seed noise), must also beat chance clearly on
people it never saw (so the cues, not memorised identities, carry the labels), and a
nearest-mean classifier on the image's mean colour must not solve race.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan.cli import main
from gan.synthetic import (
    AGES, GENDERS, RACES, TASKS, Person, make_people, render_face, write_synthetic,
)
from gan.util import UserError

# Sizes of the learnability sets: 64 people (16 per race) x 8 images at 32 px gives
# 256 train / 128 test images per task, a few seconds of CPU training per attribute.
LEARN_PEOPLE, LEARN_PER_PERSON, LEARN_RES, LEARN_EPOCHS = 64, 8, 32, 20
UNSEEN_PEOPLE, UNSEEN_PER_PERSON = 48, 4
#: The issue's 70-97 % with a margin for seed and platform noise. Measured over six data
#: seeds (11..61): race 0.83-0.87, gender 0.79-0.90, age 0.81-0.94; with this module's
#: seeds and torch seeds 0..2: race 0.83-0.88, gender 0.80-0.83, age 0.87-0.90.
BAND = (0.65, 0.985)
#: Accuracy on people absent from training, well above chance (0.25 race, 0.5 others).
#: Measured 0.57-0.77 (race), 0.67-0.81 (gender), 0.69-0.84 (age); a renderer that
#: ignores the attributes scores 0.20-0.23 / 0.45-0.54 / 0.45-0.56 here, because
#: memorised training identities do not transfer (on the curated test split it still
#: reaches up to 0.70 on gender and 0.63 on age by memorising who is who, so the band
#: alone would not catch it).
UNSEEN_MIN = {"race": 0.45, "gender": 0.62, "age": 0.62}
#: Nearest-mean-colour accuracy must stay far from 100 % (measured 0.32-0.69).
MEAN_COLOUR_MAX = 0.85


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load_tree(base: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``ImageFolder``-style arrays: images ``[N, H, W, 3]`` uint8, labels ``[N]``."""
    classes = classes or sorted(p.name for p in base.iterdir())
    xs, ys = [], []
    for index, name in enumerate(classes):
        for f in sorted((base / name).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("RGB")))
            ys.append(index)
    return np.stack(xs), np.asarray(ys), classes


# ---------------------------------------------------------------------------- people


def test_make_people_is_deterministic_balanced_and_names_are_safe():
    people = make_people(24, seed=5)
    assert people == make_people(24, seed=5)
    assert people != make_people(24, seed=6)
    names = [p.name for p in people]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z _]*[A-Za-z]", n) for n in names), names
    assert all(" " in n for n in names)
    assert any("_" in n for n in names)
    for field, options in (("race", RACES), ("gender", GENDERS), ("age", AGES)):
        counts = [sum(getattr(p, field) == c for p in people) for c in options]
        assert max(counts) - min(counts) <= 1, (field, counts)
    # Attributes are shuffled independently, not crossed in a fixed pattern.
    assert len({(p.race, p.gender, p.age) for p in people}) >= 10


@pytest.mark.parametrize("n", [8, 9, 13])
def test_make_people_covers_every_class_from_eight_people(n):
    for seed in range(5):
        people = make_people(n, seed)
        assert {p.race for p in people} == set(RACES)
        assert {p.gender for p in people} == set(GENDERS)
        assert {p.age for p in people} == set(AGES)


def test_make_people_keeps_names_unique_beyond_the_name_pools():
    people = make_people(1500, seed=0)
    assert len({p.name for p in people}) == 1500


def test_person_rejects_unknown_class_names():
    with pytest.raises(ValueError, match="race"):
        Person("Ada Okafor", "black", "Female", "Young")


# ---------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("res", [16, 37, 256])
def test_render_face_is_deterministic_per_seed_and_varies_across_seeds(res):
    person = make_people(4, seed=1)[2]
    img = render_face(person, res, seed=3)
    assert img.shape == (res, res, 3) and img.dtype == np.uint8
    assert np.array_equal(img, render_face(person, res, seed=3))
    assert not np.array_equal(img, render_face(person, res, seed=4))
    assert img.std() > 10  # a picture, not a flat fill


@pytest.mark.parametrize("res", [15, 257, 0])
def test_render_face_rejects_resolution_out_of_range(res):
    with pytest.raises(UserError, match="resolution"):
        render_face(make_people(1, 0)[0], res, seed=0)


# ---------------------------------------------------------------------------- writing


@pytest.mark.parametrize("layout", ["curated", "noncurated"])
def test_same_seed_writes_identical_bytes_other_seed_differs(tmp_path, layout):
    kwargs = dict(layout=layout, people=5, per_person=3, resolution=24, progress=False)
    write_synthetic(tmp_path / "a", seed=7, **kwargs)
    write_synthetic(tmp_path / "b", seed=7, **kwargs)
    write_synthetic(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c
    if layout == "noncurated":
        assert all(name.endswith((".jpg", ".csv")) for name in a)


def test_curated_layout_has_every_person_in_every_split_of_every_task(tmp_path):
    people, per_person = 8, 10
    summary = write_synthetic(tmp_path / "cur", "curated", people, per_person, 32, seed=3, progress=False)
    root = tmp_path / "cur"
    persons = make_people(people, 3)
    assert sorted(p.name for p in root.iterdir()) == sorted(TASKS)
    assert summary["splits"] == {"train": 6 * people, "val": 2 * people, "test": 2 * people}
    assert summary["images"] == people * per_person and summary["files"] == 4 * people * per_person
    expected = {"race": RACES, "gender": GENDERS, "age": AGES}
    for task in TASKS:
        for split in ("train", "val", "test"):
            classes = sorted(p.name for p in (root / task / split).iterdir())
            want = sorted(p.name for p in persons) if task == "face_recognition" else list(expected[task])
            assert classes == want, (task, split)
    # The same image sits under each task's class for its person, byte for byte.
    for person in persons:
        for split, n in (("train", 6), ("val", 2), ("test", 2)):
            fr = sorted((root / "face_recognition" / split / person.name).iterdir())
            assert len(fr) == n
            for f in fr:
                for task in ("race", "gender", "age"):
                    twin = root / task / split / person.label(task) / f.name
                    assert twin.read_bytes() == f.read_bytes()
    img = Image.open(next((root / "race" / "test").rglob("*.png")))
    assert img.size == (32, 32) and img.mode == "RGB"


def test_noncurated_layout_matches_its_attributes_csv(tmp_path):
    root = tmp_path / "non"
    summary = write_synthetic(root, "noncurated", people=9, per_person=4, resolution=20, seed=2, progress=False)
    with open(root / "attributes.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "person", "race", "gender", "age"]
    assert len(rows) == 36 == summary["images"]
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.jpg")}
    assert {r["file"] for r in rows} == on_disk
    by_person = {p.name: p for p in make_people(9, 2)}
    for r in rows:
        assert r["file"].split("/")[0] == r["person"]
        p = by_person[r["person"]]
        assert (r["race"], r["gender"], r["age"]) == (p.race, p.gender, p.age)
    assert sorted(d.name for d in root.iterdir() if d.is_dir()) == sorted(by_person)


def test_write_refuses_a_non_empty_out_and_leaves_it_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match=re.escape(str(out))):
        write_synthetic(out, "curated", 4, 3, 16, progress=False)
    assert _files(out) == {"keep.txt": b"user data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporaries left
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(UserError, match="file.png"):
        write_synthetic(a_file, "noncurated", 4, 3, 16, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_synthetic(empty, "noncurated", 2, 1, 16, progress=False)
    assert (empty / "attributes.csv").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resolution=8), "resolution"),
        (dict(resolution=300), "resolution"),
        (dict(per_person=2), "at least 3"),
        (dict(people=0), "people"),
        (dict(layout="flat"), "layout"),
        (dict(image_format="gif"), "format"),
    ],
)
def test_write_rejects_bad_options_with_a_clear_error(tmp_path, kwargs, match):
    args = dict(layout="curated", people=4, per_person=3, resolution=16, progress=False) | kwargs
    with pytest.raises(UserError, match=match):
        write_synthetic(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_cli_synth_writes_and_prints_a_summary(tmp_path):
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--layout", "curated", "--people", "4", "--per-person", "3",
            "--resolution", "16", "--seed", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "12 16-px png images of 4 people" in result.output and str(out) in result.output
    assert "Asian_Chinese_Korean" in result.output
    assert len(list(out.rglob("*.png"))) == 48
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "not an empty folder" in again.output
    assert "Traceback" not in again.output


# ---------------------------------------------------------------------------- learnability


def _small_cnn(num_classes: int) -> torch.nn.Module:
    def block(cin: int, cout: int) -> list[torch.nn.Module]:
        return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    return torch.nn.Sequential(
        *block(3, 16), torch.nn.MaxPool2d(2), *block(16, 32), torch.nn.MaxPool2d(2), *block(32, 64),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes),
    )


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, H, W]


def _train_cnn(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A few epochs of Adam with one-cycle LR and horizontal flips; deterministic."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = _small_cnn(num_classes)
    xt, yt = _to_tensor(x), torch.from_numpy(y)
    batch = 32
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = LEARN_EPOCHS * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps)
    model.train()
    for _ in range(LEARN_EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            xb = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(_to_tensor(x)).argmax(1).numpy() == y).mean())


@pytest.fixture(scope="module")
def learn_sets(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """A curated set to train on, and a set of other people (another seed) never trained on."""
    root = tmp_path_factory.mktemp("learn")
    write_synthetic(root / "curated", "curated", LEARN_PEOPLE, LEARN_PER_PERSON, LEARN_RES,
                    seed=11, progress=False)
    write_synthetic(root / "unseen", "curated", UNSEEN_PEOPLE, UNSEEN_PER_PERSON, LEARN_RES,
                    seed=12, progress=False)
    return root / "curated", root / "unseen"


@pytest.mark.parametrize("task", ["race", "gender", "age"])
def test_small_cnn_learns_each_attribute_within_the_band(learn_sets, task):
    curated, unseen = learn_sets
    x_tr, y_tr, classes = _load_tree(curated / task / "train")
    x_te, y_te, _ = _load_tree(curated / task / "test", classes)
    model = _train_cnn(x_tr, y_tr, len(classes))
    acc = _accuracy(model, x_te, y_te)
    assert BAND[0] <= acc <= BAND[1], f"{task}: test accuracy {acc:.3f} outside {BAND}"
    # The same model on people it never saw: the cues generalise, so memorising the
    # training identities is not what carries the accuracy.
    x_new = np.concatenate([_load_tree(unseen / task / s, classes)[0] for s in ("train", "val", "test")])
    y_new = np.concatenate([_load_tree(unseen / task / s, classes)[1] for s in ("train", "val", "test")])
    acc_new = _accuracy(model, x_new, y_new)
    assert acc_new >= UNSEEN_MIN[task], f"{task}: accuracy on unseen people {acc_new:.3f}"


@pytest.mark.parametrize("task", ["race", "gender", "age"])
def test_mean_colour_does_not_give_the_attribute_away(learn_sets, task):
    """Nearest class mean of the mean colour (whole image, and the centre crop) stays far from 100 %."""
    curated, _ = learn_sets
    x_tr, y_tr, classes = _load_tree(curated / task / "train")
    x_te, y_te, _ = _load_tree(curated / task / "test", classes)
    c = LEARN_RES // 4
    for crop in (slice(None), slice(c, -c)):
        f_tr = x_tr[:, crop, crop].reshape(len(x_tr), -1, 3).mean(1)  # [N, 3]
        f_te = x_te[:, crop, crop].reshape(len(x_te), -1, 3).mean(1)
        means = np.stack([f_tr[y_tr == k].mean(0) for k in range(len(classes))])  # [K, 3]
        pred = ((f_te[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        assert (pred == y_te).mean() < MEAN_COLOUR_MAX


def test_small_cnn_recognises_identities_well_above_chance(learn_sets):
    curated, _ = learn_sets
    x_tr, y_tr, classes = _load_tree(curated / "face_recognition" / "train")
    x_te, y_te, _ = _load_tree(curated / "face_recognition" / "test", classes)
    model = _train_cnn(x_tr, y_tr, len(classes))
    chance = 1 / len(classes)
    acc = _accuracy(model, x_te, y_te)
    assert acc >= 5 * chance, f"identity accuracy {acc:.3f} vs chance {chance:.3f}"
