"""Procedural labelled faces: the stand-in for MTF in tests and in the demo.

The MTF data sets (Haffar, Sánchez, Domingo-Ferrer, *IEEE Access* 13, 2025) cannot be
downloaded by this package, so every stage is exercised on faces drawn with numpy: this
module draws people and their appearance from the labels and writes the trees;
:mod:`gan.face_paint` paints each photo from analytic shapes with soft edges.

Appearance follows the labels, but **the cues overlap between classes** on purpose, so a
small CNN learns each attribute well yet imperfectly (the tests hold it in a band of
roughly 70-97 % test accuracy) and no single pixel statistic gives the answer away:

* identity (:class:`Person`) fixes face shape, jaw, eye spacing and size, nose, mouth,
  ears, hair style and colour, iris colour, brows;
* race shifts the distributions of skin tone (overlapping across races), hair colour and
  texture, eye height, nose and lip width;
* gender shifts hair length (some long-haired men, some short-haired women), jaw width,
  brow thickness, beard shadow (some men only), lip colour and earrings;
* age shifts wrinkles, grey hair (some young people have a few grey hairs, some old
  people none), eye bags and sagging cheeks, a receding hairline (some old men);
* every image varies pose (shift, scale, roll, a little yaw), lighting direction,
  strength, exposure and white balance, background colour and gradient, clothing,
  expression (smile, eye openness, open mouth), gaze and sensor noise.

Measured (``tests/gan/test_synthetic.py``: 64 people x 8 images at 32 px, a 3-layer CNN
trained 20 epochs on the curated train split, six data seeds): test accuracy race
0.83-0.87, gender 0.79-0.90, age 0.81-0.94, identity 0.23-0.38 (chance 0.016); on 48
people never trained on, race 0.57-0.77, gender 0.67-0.81, age 0.69-0.84; nearest class
mean of the mean colour at most 0.69. Rendering takes about 1.5 ms per image at 32 px and
13 ms at 256 px on one core (JPEG encoding adds 0.3 ms, PNG 9 ms), so 2,000 256-px JPEGs
take under 30 s.

Everything is a pure function of its seeds: the same ``(person, resolution, seed)`` gives
the same pixels, and :func:`write_synthetic` writes byte-identical files for the same
arguments.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gan.face_paint import FaceParams, paint_face
from gan.util import UserError, derive_seed

__all__ = [
    "RACES",
    "GENDERS",
    "AGES",
    "TASKS",
    "LAYOUTS",
    "MIN_RESOLUTION",
    "MAX_RESOLUTION",
    "Person",
    "make_people",
    "render_face",
    "write_synthetic",
]

#: Class names exactly as the curated MTF folders spell them; alphabetical, which is the
#: class-index order of torchvision's ``ImageFolder``.
RACES = ("Asian_Chinese_Korean", "Asian_Indian", "Black", "White")
GENDERS = ("Female", "Male")
AGES = ("Old", "Young")
#: The four task trees of curated MTF.
TASKS = ("face_recognition", "race", "gender", "age")
LAYOUTS = ("curated", "noncurated")
MIN_RESOLUTION, MAX_RESOLUTION = 16, 256

#: Fractions of each person's images in the curated splits (val and test get at least one).
_SPLIT_FRACTIONS = {"val": 0.2, "test": 0.2}
_JPEG_QUALITY = 95


# ---------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Person:
    """One synthetic identity: a name, its three attribute labels and an identity seed.

    The private appearance parameters (face shape, hair style, colours, ...) are derived
    from all five fields by a stable hash, so a ``Person`` built by hand renders too, and
    two people that differ only in ``identity`` look different.
    """

    name: str
    race: str
    gender: str
    age: str
    identity: int = 0

    def __post_init__(self) -> None:
        for field, value, options in (
            ("race", self.race, RACES), ("gender", self.gender, GENDERS), ("age", self.age, AGES),
        ):
            if value not in options:
                raise ValueError(f"Person {self.name!r}: {field} {value!r} is not one of {options}")

    def label(self, task: str) -> str:
        """The class of this person for one of :data:`TASKS` (the name for face_recognition)."""
        if task == "face_recognition":
            return self.name
        if task in ("race", "gender", "age"):
            return getattr(self, task)
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# Name pools per race group: realistic-looking, ASCII and file-system safe. Apostrophes are
# written as ``_`` as in MTF ("Shaquille O_Neal").
_FIRST = {  # (race, gender) -> first names, "|"-separated
    ("Asian_Chinese_Korean", "Female"): (
        "Mei|Yuna|Ji Woo|Xiu|Hana|Lian|Soo Ah|Jing|Min|Yan|Eun Ji|Lin"
    ).split("|"),
    ("Asian_Chinese_Korean", "Male"): (
        "Wei|Min Jun|Hao|Jae|Tao|Jun|Seo Jun|Lei|Hyun|Bo|Chen|Kang"
    ).split("|"),
    ("Asian_Indian", "Female"): (
        "Priya|Ananya|Lakshmi|Kavya|Deepa|Meera|Aishwarya|Nisha|Pooja|Sunita|Riya|Divya"
    ).split("|"),
    ("Asian_Indian", "Male"): (
        "Arjun|Raj|Vikram|Rahul|Sanjay|Amit|Karthik|Rohan|Anil|Dev|Suresh|Imran"
    ).split("|"),
    ("Black", "Female"): (
        "Ada|Amara|Nia|Zuri|Imani|Ayo|Kemi|Naledi|Abena|Chidinma|Folake|Wanjiru"
    ).split("|"),
    ("Black", "Male"): (
        "Kwame|Tunde|Jabari|Kofi|Chidi|Malik|Themba|Emeka|Sekou|Obi|Desmond|Shaquille"
    ).split("|"),
    ("White", "Female"): (
        "Emma|Olivia|Sofia|Ingrid|Chloe|Grace|Maria|Anna|Claire|Freya|Lucia|Hannah"
    ).split("|"),
    ("White", "Male"): (
        "Liam|Lucas|Noah|Henrik|Marco|Oliver|Pierre|Tomas|James|Mateo|Erik|Connor"
    ).split("|"),
}
_LAST = {  # race -> surnames
    "Asian_Chinese_Korean": "Chen|Kim|Park|Wang|Li|Zhang|Choi|Liu|Jung|Huang|Yoon|Zhao".split("|"),
    "Asian_Indian": "Patel|Sharma|Iyer|Reddy|Singh|Nair|Gupta|Rao|Menon|Khan|D_Souza|Das".split("|"),
    "Black": "Okafor|Mensah|Adeyemi|Okoye|Diallo|Kamau|Nkosi|Mbeki|Boateng|Johnson|O_Neal|Achebe".split("|"),
    "White": "O_Brien|Smith|Rossi|Kowalski|Andersen|Dubois|O_Connor|Mueller|Garcia|D_Angelo|Novak|Walsh".split("|"),
}
_APOSTROPHE_LAST = ["O_Brien", "O_Neal", "O_Connor", "D_Souza", "D_Angelo", "O_Hara"]
_INITIALS = "ABCDEFGHJKLMNPRSTW"


def _balanced(options: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` labels cycling through ``options`` (each within one of n/len), shuffled."""
    start = int(rng.integers(len(options)))
    labels = [options[(start + i) % len(options)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def make_people(n: int, seed: int) -> list[Person]:
    """``n`` distinct people with roughly balanced, independently shuffled attributes.

    Each attribute is balanced on its own (every class appears ``n // k`` or one more
    times, so all classes are present once ``n >= 4``) and shuffled with its own draw,
    so race, gender and age are independent across people rather than crossed in a
    fixed pattern. Names are unique and drawn from pools that fit race and gender;
    when ``n >= 4`` at least one contains ``_`` (an apostrophe, as MTF writes them).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"synthetic: the number of people must be a positive integer, got {n!r}")
    rng = np.random.default_rng(derive_seed(int(seed) & 0xFFFFFFFFFFFFFFFF, 0x9E0F1E))
    races, genders, ages = (_balanced(opts, n, rng) for opts in (RACES, GENDERS, AGES))
    names: list[str] = []
    taken: set[str] = set()
    for i in range(n):
        first_pool, last_pool = _FIRST[(races[i], genders[i])], _LAST[races[i]]
        name = ""
        for attempt in range(200):
            if attempt >= 40:  # the pool of this group is exhausted: borrow surnames
                last_pool = [s for pool in _LAST.values() for s in pool]
            first = first_pool[int(rng.integers(len(first_pool)))]
            last = last_pool[int(rng.integers(len(last_pool)))]
            name = f"{first} {last}"
            if attempt >= 100:  # still taken: add a middle initial
                name = f"{first} {_INITIALS[int(rng.integers(len(_INITIALS)))]} {last}"
            if name not in taken:
                break
        suffix = 2
        while name in taken:  # astronomically many people: number them
            name = f"{name.rsplit(' ', 1)[0]} {suffix}" if suffix > 2 else f"{name} {suffix}"
            suffix += 1
        names.append(name)
        taken.add(name)
    if n >= 4 and not any("_" in name for name in names):
        i = int(rng.integers(n))
        first = names[i].split(" ")[0]
        for last in _APOSTROPHE_LAST:
            if f"{first} {last}" not in taken:
                taken.discard(names[i])
                names[i] = f"{first} {last}"
                taken.add(names[i])
                break
    identities = rng.integers(0, 2**31 - 1, size=n)
    return [
        Person(names[i], races[i], genders[i], ages[i], identity=int(identities[i])) for i in range(n)
    ]


# ---------------------------------------------------------------------------- appearance


# Skin palette along one tone axis, dark -> light (linear RGB-ish, 0..1).
_SKIN_STOPS = np.array([
    [0.27, 0.17, 0.12],
    [0.45, 0.29, 0.20],
    [0.62, 0.43, 0.31],
    [0.78, 0.58, 0.44],
    [0.89, 0.71, 0.58],
    [0.97, 0.82, 0.72],
], dtype=np.float32)
# Race -> (mean, sd) of the tone (0 dark .. 1 light); neighbours overlap on purpose.
_TONE = {
    "Black": (0.22, 0.11),
    "Asian_Indian": (0.47, 0.11),
    "Asian_Chinese_Korean": (0.74, 0.09),
    "White": (0.85, 0.09),
}
# Race -> tint added to the skin colour (East Asian a little more yellow, White pinker).
_SKIN_TINT = {
    "Black": (0.0, 0.0, 0.0),
    "Asian_Indian": (0.0, 0.0, -0.01),
    "Asian_Chinese_Korean": (0.0, 0.02, -0.03),
    "White": (0.02, -0.015, 0.0),
}
_HAIR_COLOURS = {
    "black": (0.07, 0.06, 0.06),
    "dark_brown": (0.20, 0.13, 0.08),
    "brown": (0.38, 0.25, 0.14),
    "blond": (0.78, 0.63, 0.38),
    "red": (0.55, 0.24, 0.10),
}
# Race -> probabilities of (black, dark_brown, brown, blond, red).
_HAIR_P = {
    "Black": (0.85, 0.15, 0.0, 0.0, 0.0),
    "Asian_Indian": (0.75, 0.25, 0.0, 0.0, 0.0),
    "Asian_Chinese_Korean": (0.75, 0.20, 0.05, 0.0, 0.0),
    "White": (0.12, 0.28, 0.28, 0.22, 0.10),
}
_IRIS = {
    "dark": (0.16, 0.09, 0.05),
    "brown": (0.35, 0.20, 0.09),
    "hazel": (0.42, 0.35, 0.16),
    "green": (0.30, 0.45, 0.28),
    "blue": (0.30, 0.45, 0.65),
}
_IRIS_P = {  # (dark, brown, hazel, green, blue)
    "Black": (0.7, 0.3, 0.0, 0.0, 0.0),
    "Asian_Indian": (0.6, 0.35, 0.05, 0.0, 0.0),
    "Asian_Chinese_Korean": (0.65, 0.35, 0.0, 0.0, 0.0),
    "White": (0.05, 0.3, 0.2, 0.15, 0.3),
}


def _choice(rng: np.random.Generator, table: dict[str, Any], p: tuple[float, ...]) -> Any:
    keys = list(table)
    return table[keys[int(rng.choice(len(keys), p=np.asarray(p) / sum(p)))]]


@lru_cache(maxsize=4096)
def _identity(person: Person) -> FaceParams:
    fields = (person.name, person.race, person.gender, person.age, person.identity)
    rng = np.random.default_rng(derive_seed("|".join(str(f) for f in fields)))
    race, male, old = person.race, person.gender == "Male", person.age == "Old"
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    nrm = lambda m, s, lo=-1e9, hi=1e9: float(np.clip(rng.normal(m, s), lo, hi))  # noqa: E731

    mean, sd = _TONE[race]
    tone = nrm(mean, sd, 0.0, 1.0) * (len(_SKIN_STOPS) - 1)
    i0 = min(int(tone), len(_SKIN_STOPS) - 2)
    skin = _SKIN_STOPS[i0] * (1 - (tone - i0)) + _SKIN_STOPS[i0 + 1] * (tone - i0)
    skin = np.clip(skin + np.asarray(_SKIN_TINT[race]) + rng.normal(0, 0.015, 3), 0, 1)

    hair = np.asarray(_choice(rng, _HAIR_COLOURS, _HAIR_P[race])) * u(0.85, 1.15)
    iris = np.asarray(_choice(rng, _IRIS, _IRIS_P[race])) * u(0.85, 1.15)

    # Hair length: mostly long for women and short for men, with overlap both ways.
    p_len = (0.55, 0.35, 0.10) if male else (0.07, 0.20, 0.73)
    hair_len = int(rng.choice(3, p=p_len))
    hair_curly = (
        u(0.4, 1.0) if rng.random() < (0.55 if race == "Black" else 0.08) else u(0.0, 0.25)
    )
    if hair_curly > 0.4 and hair_len == 2 and rng.random() < 0.5:
        hair_len = 1  # big curly hair reads as volume rather than length
    # Grey hair: many old people, a few young ones with some grey.
    if old:
        grey = nrm(0.5, 0.32, 0.0, 1.0) if rng.random() < 0.8 else u(0.0, 0.15)
    else:
        grey = u(0.0, 0.3) if rng.random() < 0.2 else 0.0
    wrinkles = nrm(0.55, 0.25, 0.0, 1.0) if old else nrm(0.0, 0.15, 0.0, 1.0)
    sag = nrm(0.55, 0.25, 0.0, 1.0) if old else nrm(0.05, 0.1, 0.0, 1.0)
    hairline = -0.36 + (u(0.0, 0.22) if (male and old and rng.random() < 0.45) else 0.0)
    bangs = u(0.4, 1.0) if rng.random() < (0.25 if male else 0.4) else 0.0
    if bangs:
        hairline += 0.11 * bangs

    eye_ry_scale = nrm(0.78, 0.1, 0.55, 1.1) if race == "Asian_Chinese_Korean" else nrm(1.0, 0.1, 0.7, 1.25)
    lip_scale = {"Black": 1.3, "Asian_Indian": 1.1}.get(race, 1.0)
    nose_scale = {"Black": 1.25, "Asian_Indian": 1.1}.get(race, 1.0)
    lipstick = (not male) and rng.random() < 0.5
    lip_base = skin * 0.75 + np.array([0.16, 0.02, 0.03])
    if lipstick:
        lip_base = np.array([0.65, 0.12, 0.18]) * u(0.7, 1.1) * 0.6 + lip_base * 0.4
    return FaceParams(
        skin=tuple(map(float, skin)),
        hair=tuple(map(float, np.clip(hair, 0, 1))),
        iris=tuple(map(float, np.clip(iris, 0, 1))),
        head_rx=nrm(0.47 if male else 0.45, 0.025),
        head_ry=nrm(0.61, 0.03),
        jaw=nrm(0.88 if male else 0.70, 0.07, 0.55, 1.0),
        chin=nrm(1.6, 0.3, 1.1, 2.4),
        eye_dx=nrm(0.175, 0.014),
        eye_y=nrm(-0.04, 0.02),
        eye_rx=nrm(0.085, 0.008),
        eye_ry=0.042 * eye_ry_scale,
        eye_tilt=nrm(0.08 if race == "Asian_Chinese_Korean" else 0.0, 0.06),
        lid=nrm(1.0, 0.25, 0.6) if male else nrm(1.45, 0.35, 0.6),
        brow_thick=nrm(0.030 if male else 0.018, 0.006, 0.008, 0.05),
        brow_arch=nrm(0.8 if male else 1.6, 0.5, 0.0, 3.0),
        brow_gap=nrm(0.075, 0.012),
        nose_w=nrm(0.055, 0.008) * nose_scale,
        nose_len=nrm(0.20, 0.02),
        mouth_w=nrm(0.13, 0.012) * (1.05 if race == "Black" else 1.0),
        lip_u=nrm(0.022, 0.005, 0.01) * lip_scale,
        lip_l=nrm(0.03, 0.006, 0.012) * lip_scale,
        lip_colour=tuple(map(float, np.clip(lip_base, 0, 1))),
        ear_r=nrm(0.075, 0.008),
        hair_len=hair_len,
        hair_curly=hair_curly,
        hairline=hairline,
        bangs=bangs,
        part=nrm(0.0, 0.12),
        grey=grey,
        wrinkles=wrinkles,
        sag=sag,
        beard=(u(0.3, 0.9) if male and rng.random() < 0.7 else 0.0),
        earrings=bool(rng.random() < (0.35 if not male else 0.04)),
        neck_w=nrm(0.20 if male else 0.17, 0.015),
    )


# ---------------------------------------------------------------------------- rendering


def render_face(person: Person, resolution: int, seed: int) -> np.ndarray:
    """Draw one face of ``person``: uint8 ``[resolution, resolution, 3]``.

    Identity comes from ``person``; pose, light, background, clothing, expression and
    noise come from ``seed``, so different seeds are different photos of one person.
    """
    res = int(resolution)
    if not MIN_RESOLUTION <= res <= MAX_RESOLUTION:
        raise UserError(
            f"synthetic: resolution {resolution} is out of range; "
            f"pass a value from {MIN_RESOLUTION} to {MAX_RESOLUTION}"
        )
    rng = np.random.default_rng(derive_seed(int(seed) & 0xFFFFFFFFFFFF, 0x5EED))
    return paint_face(_identity(person), res, rng)


# ---------------------------------------------------------------------------- writing


def _file_stem(name: str) -> str:
    """A person's name as a file-name prefix (spaces become ``_``)."""
    return name.replace(" ", "_")


def _image_seed(seed: int, person: Person, index: int) -> int:
    """The render seed of image ``index`` of ``person`` in a set written with ``seed``."""
    return derive_seed(int(seed) & 0xFFFFFFFF, person.identity, index, bits=32)


def _encode(img: np.ndarray, image_format: str) -> bytes:
    """PNG or JPEG bytes; both encoders are deterministic for fixed settings."""
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(img).save(buf, format="PNG")
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def _split_counts(per_person: int) -> dict[str, int]:
    """Images per person in each curated split: about 60/20/20, at least one in each."""
    val = max(1, round(per_person * _SPLIT_FRACTIONS["val"]))
    test = max(1, round(per_person * _SPLIT_FRACTIONS["test"]))
    return {"train": per_person - val - test, "val": val, "test": test}


def _check_int(value: Any, option: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"synthetic: {option} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise UserError(f"synthetic: {option} is {value}; pass a value {bounds}")
    return int(value)


def _check_options(out: str | os.PathLike, layout: str, people: Any, per_person: Any, resolution: Any,
                   seed: Any, image_format: str | None) -> tuple[Path, int, int, int, int, str]:
    """Validate :func:`write_synthetic`'s options before anything is written; returns
    ``(out, people, per_person, resolution, seed, image_format)`` as a path, plain ints and
    ``png`` or ``jpg``."""
    if layout not in LAYOUTS:
        raise UserError(f"synthetic: layout {layout!r} is unknown; pass one of {', '.join(LAYOUTS)}")
    people = _check_int(people, "people (--people)", 1)
    per_person = _check_int(per_person, "per_person (--per-person)", 1)
    if layout == "curated" and per_person < 3:
        raise UserError(
            f"synthetic: per_person (--per-person) is {per_person}, but the curated layout puts "
            "every person in train, val and test; pass at least 3"
        )
    resolution = _check_int(resolution, "resolution (--resolution)", MIN_RESOLUTION, MAX_RESOLUTION)
    seed = _check_int(seed, "seed (--seed)", 0)
    if image_format is None:
        image_format = "png" if layout == "curated" else "jpg"
    image_format = {"jpeg": "jpg"}.get(str(image_format).lower(), str(image_format).lower())
    if image_format not in ("png", "jpg"):
        raise UserError(f"synthetic: image format {image_format!r} is unknown; pass png or jpg")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"synthetic: {out} already exists and is not an empty folder; "
            "pass a new --out (nothing was written)"
        )
    return out, people, per_person, resolution, seed, image_format


def _write_images(tmp: Path, persons: list[Person], layout: str, per_person: int, resolution: int,
                  seed: int, image_format: str, progress: bool) -> tuple[int, list[tuple[str, ...]]]:
    """Render and write every image under ``tmp``; returns the number of files and, for the
    non-curated layout, the rows of ``attributes.csv``."""
    from tqdm import tqdm

    splits = _split_counts(per_person) if layout == "curated" else {}
    files = 0
    rows: list[tuple[str, ...]] = []
    bar = tqdm(total=len(persons) * per_person, desc=f"synth {layout}", unit="img", disable=not progress)
    with contextlib.closing(bar):
        for person in persons:
            stem = _file_stem(person.name)
            for k in range(per_person):
                img = render_face(person, resolution, _image_seed(seed, person, k))
                data = _encode(img, image_format)
                fname = f"{stem}_{k:04d}.{image_format}"
                if layout == "curated":
                    split = "train" if k < splits["train"] else (
                        "val" if k < splits["train"] + splits["val"] else "test")
                    for task in TASKS:
                        path = tmp / task / split / person.label(task) / fname
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(data)
                        files += 1
                else:
                    rel = f"{person.name}/{fname}"
                    path = tmp / person.name / fname
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    rows.append((rel, person.name, person.race, person.gender, person.age))
                    files += 1
                bar.update(1)
    return files, rows


def write_synthetic(
    out: str | os.PathLike,
    layout: str,
    people: int,
    per_person: int,
    resolution: int,
    seed: int = 0,
    image_format: str | None = None,
    progress: bool = True,
) -> dict:
    """Draw ``people`` x ``per_person`` faces and write them as an MTF-like tree.

    ``layout="curated"``: ``<out>/{face_recognition,race,gender,age}/{train,val,test}/
    <class>/*.png``, split per person (about 60/20/20, at least one image in each split,
    so ``per_person >= 3``); every image appears once in each task tree under its class
    for that task, as in curated MTF, where every person is in every split.

    ``layout="noncurated"``: ``<out>/<person>/*.jpg`` plus ``<out>/attributes.csv`` with
    the header ``file,person,race,gender,age`` (``file`` relative to ``out``, with ``/``).

    ``image_format`` is ``"png"`` or ``"jpg"`` (default: png for curated, jpg for
    non-curated). ``out`` must not exist or be empty: a user's data is never overwritten.
    The tree is written beside ``out`` and renamed into place at the end, so an
    interrupted run leaves no half-written ``out``. Returns a summary: where, how many
    people, images and files, the classes of each task, and per-split counts.
    """
    out, people, per_person, resolution, seed, image_format = _check_options(
        out, layout, people, per_person, resolution, seed, image_format)
    persons = make_people(people, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files, rows = _write_images(tmp, persons, layout, per_person, resolution, seed, image_format, progress)
        if layout == "noncurated":
            with open(tmp / "attributes.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["file", "person", "race", "gender", "age"])
                writer.writerows(rows)
            files += 1
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace needs it gone or empty
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    splits = _split_counts(per_person) if layout == "curated" else {}
    classes = {
        "face_recognition": sorted(p.name for p in persons),
        "race": [c for c in RACES if any(p.race == c for p in persons)],
        "gender": [c for c in GENDERS if any(p.gender == c for p in persons)],
        "age": [c for c in AGES if any(p.age == c for p in persons)],
    }
    return {
        "out": str(out),
        "layout": layout,
        "people": people,
        "per_person": per_person,
        "images": people * per_person,
        "files": files,
        "resolution": resolution,
        "seed": seed,
        "format": image_format,
        "classes": classes,
        "splits": {name: n * people for name, n in splits.items()},
        "attributes_csv": str(out / "attributes.csv") if layout == "noncurated" else None,
    }
