"""Procedural labelled faces: the stand-in for MTF in tests and in the demo.

The MTF data sets (Haffar, Sánchez, Domingo-Ferrer, *IEEE Access* 13, 2025) cannot be
downloaded by this package, so every stage is exercised on faces drawn here with numpy:
analytic shapes (ellipses, parabolic bands, boxes) composited back to front with soft,
one-pixel-wide edges, which anti-aliases them without supersampling; each shape is
painted only inside its bounding window, so a 256-px face takes about 13 ms.

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
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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


# ---------------------------------------------------------------------------- identity


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


@dataclass(frozen=True)
class _Identity:
    """Private appearance parameters of one person (face units: the canvas spans -1..1)."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    head_rx: float
    head_ry: float
    jaw: float            # lower-face width factor (1 wide .. 0.7 narrow)
    chin: float           # chin pointiness exponent
    eye_dx: float         # half distance between the eyes
    eye_y: float
    eye_rx: float
    eye_ry: float
    eye_tilt: float       # outer corners up (+) or down (-), radians
    lid: float            # upper-lid line weight (eyeliner, lashes)
    brow_thick: float
    brow_arch: float
    brow_gap: float
    nose_w: float
    nose_len: float
    mouth_w: float
    lip_u: float
    lip_l: float
    lip_colour: tuple[float, float, float]
    ear_r: float
    hair_len: int         # 0 short, 1 medium (chin), 2 long (shoulders)
    hair_curly: float     # 0 straight .. 1 afro volume
    hairline: float       # forehead top, relative to the head centre
    bangs: float
    part: float           # side-part tilt of the hairline
    grey: float           # fraction of grey hair
    wrinkles: float
    sag: float
    beard: float
    earrings: bool
    neck_w: float


@lru_cache(maxsize=4096)
def _identity(person: Person) -> _Identity:
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
    return _Identity(
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


def _cover(d: np.ndarray, aa: float) -> np.ndarray:
    """Soft coverage of a shape from its signed distance (negative inside), one pixel wide."""
    return np.clip(0.5 - d * (1.0 / aa), 0.0, 1.0)


def _ellipse_sd(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse at the origin (Quilez)."""
    px, py = x * (1.0 / rx), y * (1.0 / ry)
    k0 = np.sqrt(px * px + py * py)
    k1 = np.sqrt(px * px * (1.0 / rx**2) + py * py * (1.0 / ry**2))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _round_box_sd(x: np.ndarray, y: np.ndarray, hw: Any, hh: float, r: float) -> np.ndarray:
    """Signed distance to a box of half sizes ``hw`` x ``hh`` with corner radius ``r``."""
    qx = np.abs(x) - hw + r
    qy = np.abs(y) - hh + r
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _hair_texture(x: np.ndarray, y: np.ndarray, hair: np.ndarray, g: "_Identity", aa: float) -> np.ndarray:
    """Per-pixel hair colour ``[h, w, 3]``: soft strands (or curls), grey strands by age.

    Each pattern fades to its mean where its period drops below a few pixels (``aa`` is
    one pixel in face units), so small images show grey as a mixed tone instead of
    aliased checkerboards.
    """
    def detail(freq: float) -> float:  # 1 when a period spans >= 6 pixels, 0 below 3
        return float(np.clip((2 * math.pi / freq / aa - 3.0) / 3.0, 0.0, 1.0))

    if g.hair_curly < 0.4:
        stripes = np.sin(x * 55 + 6 * np.sin(y * 9 + g.part * 10)) * (0.12 * detail(55))
    else:
        stripes = np.sin(x * 70) * np.sin(y * 70) * (0.12 * detail(70))
    out = hair * (1.0 + stripes)[..., None]
    if g.grey > 0:
        threshold = 1 - 2.2 * g.grey
        k = detail(45)
        wave = np.sin(x * 45 + 3 * np.sin(y * 12 + g.part * 7))
        strands = np.clip((wave - threshold) * 2.5, 0, 1) * (0.6 * k)
        # The strands' mean over a period replaces the fine pattern as it fades.
        phase = np.sin(np.linspace(0, 2 * math.pi, 64, endpoint=False))
        strands += np.float32(np.clip((phase - threshold) * 2.5, 0, 1).mean() * 0.6 * (1 - k))
        out += (np.float32([0.8, 0.8, 0.78]) - out) * strands[..., None]
    return out


class _Canvas:
    """An image in float32 with a face coordinate frame and windowed painting.

    Pixel centres map to canvas coordinates in [-1, 1]; the face frame is the canvas
    frame moved by the per-image pose (``shift``, ``scale``, roll ``angle``). Shapes are
    painted only inside the pixel window that covers their face-frame bounding box, which
    is what keeps a 256-px face cheap.
    """

    def __init__(self, res: int, shift: tuple[float, float], scale: float, angle: float) -> None:
        self.res = res
        self.img = np.zeros((res, res, 3), np.float32)  # [H, W, 3]
        self.fg = np.zeros((res, res), np.float32)  # [H, W] foreground alpha (for lighting)
        c = (np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0
        cy, cx = np.meshgrid(c, c, indexing="ij")  # [H, W]
        self._shift, self._scale = shift, scale
        self._cos, self._sin = math.cos(angle), math.sin(angle)
        dx, dy = (cx - shift[0]) / scale, (cy - shift[1]) / scale
        self.x = (self._cos * dx + self._sin * dy).astype(np.float32)  # [H, W] face frame
        self.y = (-self._sin * dx + self._cos * dy).astype(np.float32)
        self.aa = 2.0 / (res * scale)  # one pixel in face units

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """Pixel rows and columns covering the face-frame box (plus a pixel of margin)."""
        xs = np.array([x0, x1, x0, x1]) * self._scale
        ys = np.array([y0, y0, y1, y1]) * self._scale
        cx = self._cos * xs - self._sin * ys + self._shift[0]
        cy = self._sin * xs + self._cos * ys + self._shift[1]
        to_px = lambda v: (v + 1.0) * 0.5 * self.res - 0.5  # noqa: E731
        c0, c1 = to_px(cx.min()), to_px(cx.max())
        r0, r1 = to_px(cy.min()), to_px(cy.max())
        clamp = lambda v: int(min(max(v, 0), self.res))  # noqa: E731
        return (
            slice(clamp(math.floor(r0) - 1), clamp(math.ceil(r1) + 2)),
            slice(clamp(math.floor(c0) - 1), clamp(math.ceil(c1) + 2)),
        )

    def paint(self, win: tuple[slice, slice], alpha: np.ndarray, colour: Any, fg: bool = True) -> None:
        """Composite ``colour`` (RGB or per-pixel ``[h, w, 3]``) over the window with ``alpha``."""
        a = alpha[..., None]
        sub = self.img[win]
        sub += (np.asarray(colour, np.float32) - sub) * a
        if fg:
            f = self.fg[win]
            f += (1.0 - f) * alpha


def _band(x: np.ndarray, y: np.ndarray, x0: float, x1: float, centre: Any, half: Any, aa: float) -> np.ndarray:
    """Coverage of a band ``|y - centre(x)| < half(x)`` for ``x0 < x < x1`` (soft ends)."""
    inside = _cover(np.abs(y - centre) - half, aa)
    ends = _cover(np.maximum(x0 - x, x - x1), aa)
    return inside * ends


def _mix(a: Any, b: Any, t: float) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


@dataclass(frozen=True, eq=False)
class _Shot:
    """The per-image state every painter shares: the pose of the features, the
    expression and the colours of this photo (face units, like :class:`_Identity`)."""

    yaw: float            # -1..1: features slide sideways, the far eye and ear narrow
    smile: float
    open_eye: float
    open_mouth: float
    gaze: tuple[float, float]
    hx: float             # head centre: the canvas centre, moved a little by yaw
    hy: float
    fx: float             # horizontal centre of the facial features
    skin: np.ndarray      # [3] float32
    hair: np.ndarray      # [3] float32, greyed by age


def _pose(g: _Identity, res: int, rng: np.random.Generator) -> tuple[_Canvas, _Shot]:
    """Draw the pose and expression of one photo: the canvas in its face frame, and the shot.

    The head fills the frame as in a face crop; the pose (shift, scale, roll, and a yaw
    that slides the features sideways) jitters around that.
    """
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    cv = _Canvas(
        res, shift=(u(-0.06, 0.06), u(-0.06, 0.04)), scale=1.22 * u(0.92, 1.06), angle=u(-0.14, 0.14)
    )
    yaw = u(-1.0, 1.0)
    smile = u(-0.01, 0.045)
    open_eye = u(0.55, 1.1) if rng.random() > 0.04 else 0.12
    open_mouth = u(0.0, 0.025) if rng.random() < 0.25 else 0.0
    gaze = (u(-0.3, 0.3), u(-0.2, 0.2))
    hx = yaw * 0.025
    shot = _Shot(
        yaw=yaw, smile=smile, open_eye=open_eye, open_mouth=open_mouth, gaze=gaze,
        hx=hx, hy=0.0, fx=hx + yaw * 0.06,
        skin=np.asarray(g.skin, np.float32), hair=_mix(g.hair, (0.78, 0.77, 0.75), g.grey * 0.9),
    )
    return cv, shot


def _paint_behind(cv: _Canvas, g: _Identity, s: _Shot, rng: np.random.Generator) -> None:
    """The background (a linear gradient between two random colours) and the hair behind
    the head and neck (medium and long styles, big curly volume)."""
    x, y, aa = cv.x, cv.y, cv.aa
    c0 = rng.uniform(0.1, 0.95, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.normal(0, 0.2, 3), 0, 1).astype(np.float32)
    sat = float(rng.uniform(0.0, 0.7))  # muted colours and studio greys are the common case
    c0 = c0 * sat + c0.mean() * (1 - sat)
    c1 = c1 * sat + c1.mean() * (1 - sat)
    ang = float(rng.uniform(0, 2 * math.pi))
    t = np.clip(0.5 + 0.5 * (x * math.cos(ang) + y * math.sin(ang)), 0, 1)[..., None]
    cv.img[:] = c0 + (c1 - c0) * t

    if not (g.hair_len > 0 or g.hair_curly > 0.4):
        return
    hx, hy, rx, ry = s.hx, s.hy, g.head_rx, g.head_ry
    vol = 0.1 * g.hair_curly
    bottom = (0.2, 0.42, 1.0)[g.hair_len]  # chin-length or shoulder-length
    win = cv.window(hx - rx - 0.35, -1.2, hx + rx + 0.35, bottom + 0.05)
    bx, by = x[win] - hx, y[win] - hy
    width = rx * (1.08 + 0.2 * g.hair_curly) + vol
    d = _ellipse_sd(bx, by + 0.06, width, ry + 0.05 + vol)
    if bottom > 0.2:  # a rounded box from the temples down to the hair's length
        flare = width * (0.92 + 0.12 * np.clip(by / bottom, 0, 1))
        d = np.minimum(d, _round_box_sd(bx, by - bottom / 2, flare, bottom / 2 + 0.05, 0.12))
    if g.hair_curly > 0.4:
        d = d + 0.02 * np.sin(np.arctan2(by, bx) * 14 + g.part * 30)
    cv.paint(win, _cover(d, aa), _hair_texture(bx, by, s.hair, g, aa) * 0.82)


def _paint_body(cv: _Canvas, g: _Identity, s: _Shot, rng: np.random.Generator) -> None:
    """The neck, with a shadow under the jaw, and the torso in clothing, with a round or
    V neckline cut out of it."""
    x, y, aa, hx = cv.x, cv.y, cv.aa, s.hx
    win = cv.window(hx - 0.35, 0.2, hx + 0.35, 1.3)
    kx, ky = x[win] - hx * 0.5, y[win]
    neck = _cover(np.maximum(np.abs(kx) - g.neck_w, 0.25 - ky), aa)
    shade = np.clip(0.7 + 0.5 * (ky - 0.45), 0.7, 0.92)[..., None]
    cv.paint(win, neck, s.skin * shade)

    win = cv.window(-1.4, 0.5, 1.4, 1.4)
    cloth = rng.uniform(0.05, 0.85, 3).astype(np.float32)
    sx, sy = x[win] - hx * 0.5, y[win]
    torso = _cover(_ellipse_sd(sx, sy - 1.3, 1.0, 0.56), aa)
    if rng.random() < 0.5:
        cut = _ellipse_sd(sx, sy - 0.74, g.neck_w + 0.06, 0.14)
    else:
        cut = np.maximum(sy - 0.95 + np.abs(sx) * 1.6, 0.74 - sy)
    torso = torso * (1 - _cover(cut, aa))
    cv.paint(win, torso, cloth)


def _paint_head(cv: _Canvas, g: _Identity, s: _Shot) -> None:
    """The ears (partly hidden by the head drawn next), the head, the sagging cheeks of
    older faces and the beard shadow."""
    x, y, aa, yaw, skin = cv.x, cv.y, cv.aa, s.yaw, s.skin
    hx, hy, rx, ry, fx = s.hx, s.hy, g.head_rx, g.head_ry, s.fx
    for side in (-1, 1):
        ex = hx + side * (rx * 0.97 - 0.005) - yaw * 0.02
        win = cv.window(ex - 0.12, g.eye_y - 0.1, ex + 0.12, g.eye_y + 0.25)
        d = _ellipse_sd(x[win] - ex, y[win] - (g.eye_y + 0.07), g.ear_r * (1 - 0.25 * side * yaw), g.ear_r * 1.6)
        cv.paint(win, _cover(d, aa), skin * 0.92)
        d2 = _ellipse_sd(x[win] - ex - side * 0.01, y[win] - (g.eye_y + 0.07), g.ear_r * 0.45, g.ear_r * 1.05)
        cv.paint(win, _cover(d2, aa) * 0.35, skin * 0.6)

    # Head: an ellipse whose lower half narrows toward the jaw; old faces sag a little.
    win = cv.window(hx - rx - 0.05, hy - ry - 0.05, hx + rx + 0.05, hy + ry + 0.08)
    lx, ly = x[win] - hx, y[win] - hy
    low = np.clip(ly / ry, 0.0, 1.0)
    taper = 1.0 - (1.0 - g.jaw) * low ** g.chin + 0.06 * g.sag * low * (1 - low) * 2
    head = _cover(_ellipse_sd(lx / taper, ly, rx, ry + 0.02 * g.sag), aa)
    cv.paint(win, head, skin)
    if g.sag > 0.2:  # soft shadows beside the mouth, down to the jowls
        for side in (-1, 1):
            cx_ = fx + side * 0.21
            w2 = cv.window(cx_ - 0.12, 0.12, cx_ + 0.12, 0.48)
            d = _ellipse_sd(x[w2] - cx_, y[w2] - 0.32, 0.05, 0.13)
            cv.paint(w2, _cover(d, 0.08) * (0.25 * g.sag), skin * 0.7)

    # Beard shadow / stubble: fades in below the nose, darkest on the chin and jaw, plus a
    # moustache; the lips stay clear.
    if g.beard > 0:
        ny0 = g.eye_y + g.nose_len
        bx, by = x[win] - fx, y[win] - hy
        region = np.clip((by - (ny0 + 0.05)) / 0.16, 0, 1) * head
        tache = _cover(_ellipse_sd(bx, by - (ny0 + 0.07), g.mouth_w * 1.05, 0.03), 0.02)
        lips = _cover(_ellipse_sd(bx, by - (ny0 + 0.12), g.mouth_w * 0.95, 0.035), aa)
        alpha = np.maximum(region, tache * 0.9) * (1 - lips) * (0.25 + 0.55 * g.beard)
        cv.paint(win, alpha, _mix(s.hair, skin, 0.35))


def _paint_wrinkles(cv: _Canvas, g: _Identity, s: _Shot) -> None:
    """Signs of age: forehead lines, nasolabial folds, crow's feet and eye bags."""
    x, y, aa, fx = cv.x, cv.y, cv.aa, s.fx
    line = max(0.006, aa * 0.6)
    dark = s.skin * 0.62
    if g.wrinkles > 0.05:
        wr = g.wrinkles
        for k in range(3):
            wy = -0.22 - 0.06 * k
            w2 = cv.window(fx - 0.25, wy - 0.05, fx + 0.25, wy + 0.05)
            xx = x[w2] - fx
            band = _band(xx, y[w2], -0.2 + 0.03 * k, 0.2 - 0.03 * k, wy + 0.25 * xx * xx, line, aa)
            cv.paint(w2, band * min(1.0, wr * 1.1 - 0.15 * k), dark)
        for side in (-1, 1):
            # Nasolabial fold: from beside the nose to beside the mouth corner.
            w2 = cv.window(fx + side * 0.03, 0.1, fx + side * 0.22, 0.42)
            xx, yy = (x[w2] - fx) * side, y[w2]
            centre_x = 0.08 + 0.05 * (yy - 0.13) / 0.25 + 0.06 * ((yy - 0.27) / 0.15) ** 2 * 0.3
            d = np.abs(xx - centre_x - g.mouth_w * 0.35) - line
            fold = _cover(d, aa) * _cover(np.maximum(0.13 - yy, yy - 0.38), aa)
            cv.paint(w2, fold * min(1.0, wr * 0.9), dark)
            # Crow's feet at the outer eye corner.
            ox = fx + side * (g.eye_dx + g.eye_rx + 0.015)
            w2 = cv.window(ox - 0.05, g.eye_y - 0.05, ox + 0.05, g.eye_y + 0.05)
            for slope in (-0.5, 0.0, 0.5):
                xx = (x[w2] - ox) * side
                band = _band(xx, y[w2], 0.0, 0.045, g.eye_y + slope * xx, line * 0.8, aa)
                cv.paint(w2, band * wr * 0.8, dark)
    if g.sag > 0.15:
        for side in (-1, 1):
            ex = fx + side * g.eye_dx
            w2 = cv.window(ex - g.eye_rx, g.eye_y, ex + g.eye_rx, g.eye_y + 0.1)
            xx = (x[w2] - ex) / g.eye_rx
            centre = g.eye_y + g.eye_ry * 1.4 + 0.02 * (1 - xx * xx)
            band = _band(x[w2] - ex, y[w2], -g.eye_rx * 0.8, g.eye_rx * 0.8, centre, max(0.007, aa * 0.6), aa)
            cv.paint(w2, band * g.sag * 0.8, s.skin * 0.6)


def _paint_eyes(cv: _Canvas, g: _Identity, s: _Shot) -> None:
    """The eyes (sclera almond, iris, pupil, catch-light, upper lid line and lashes,
    crease) and the brows above them."""
    x, y, aa, yaw, fx = cv.x, cv.y, cv.aa, s.yaw, s.fx
    for side in (-1, 1):
        ex, ey = fx + side * g.eye_dx * (1 - 0.12 * side * yaw), g.eye_y
        erx, ery = g.eye_rx * (1 - 0.15 * side * yaw), g.eye_ry * s.open_eye
        w2 = cv.window(ex - erx - 0.03, ey - 0.1, ex + erx + 0.03, ey + 0.06)
        xx, yy = x[w2] - ex, y[w2] - ey
        yy = yy + side * g.eye_tilt * xx  # tilt outer corners
        # Almond: upper arc higher than the lower one.
        t2 = np.clip(1.0 - (xx / erx) ** 2, 0.0, 1.0)
        top, bot = -ery * 1.2 * np.sqrt(t2), ery * 0.8 * t2
        d = np.maximum(np.maximum(top - yy, yy - bot), np.abs(xx) - erx)
        sclera = _cover(d, aa)
        cv.paint(w2, sclera, (0.92, 0.91, 0.88))
        ir = min(g.eye_ry * 1.05, erx * 0.5)
        ix, iy = s.gaze[0] * erx * 0.4, s.gaze[1] * ery * 0.3
        di = np.sqrt((xx - ix) ** 2 + (yy - iy) ** 2)
        cv.paint(w2, _cover(di - ir, aa) * sclera, g.iris)
        cv.paint(w2, _cover(di - ir * 0.45, aa) * sclera, (0.02, 0.02, 0.02))
        dl = np.sqrt((xx - ix + ir * 0.3) ** 2 + (yy - iy + ir * 0.35) ** 2)
        cv.paint(w2, _cover(dl - ir * 0.2, aa) * sclera * 0.9, (1.0, 1.0, 1.0))
        lid = max(0.008 * g.lid, aa * 0.7)
        lid_band = _band(xx, yy, -erx * 1.05, erx * 1.1, top, lid, aa)
        cv.paint(w2, lid_band, (0.06, 0.04, 0.04))
        # Eyelid crease above the eye (fainter for monolids).
        crease = _band(xx, yy, -erx * 0.8, erx * 0.9, top - 0.022, max(0.005, aa * 0.5), aa)
        cv.paint(w2, crease * 0.35 * min(1.0, g.eye_ry / 0.04), s.skin * 0.6)

    brow_col = _mix(s.hair, (0.08, 0.06, 0.05), 0.35)
    for side in (-1, 1):
        bx0 = fx + side * g.eye_dx * (1 - 0.12 * side * yaw)
        by0 = g.eye_y - g.brow_gap - g.eye_ry * 0.5
        w2 = cv.window(bx0 - 0.13, by0 - 0.07, bx0 + 0.13, by0 + 0.05)
        xx = (x[w2] - bx0) * side
        centre = by0 - 0.02 * g.brow_arch * (1 - (xx / 0.1) ** 2) + 0.01 * xx / 0.1
        half = g.brow_thick * (0.5 + 0.5 * np.clip(1 - (xx + 0.06) / 0.19, 0.15, 1))
        band = _band(xx, y[w2], -0.085, 0.1, centre, np.maximum(half, aa * 0.5), aa)
        cv.paint(w2, band * 0.9, brow_col)


def _paint_nose(cv: _Canvas, g: _Identity, s: _Shot) -> None:
    """The nose: bridge shadow on the far side, the shadow under it, the wings, tip
    highlight and nostrils."""
    x, y, aa, fx, skin = cv.x, cv.y, cv.aa, s.fx, s.skin
    ny0 = g.eye_y + g.nose_len
    nw = g.nose_w
    w2 = cv.window(fx - nw - 0.05, g.eye_y, fx + nw + 0.05, ny0 + 0.05)
    xx, yy = x[w2] - fx, y[w2]
    shadow_side = 1 if s.yaw >= 0 else -1
    ridge = _band(yy, xx * shadow_side, g.eye_y + 0.04, ny0 - 0.03, nw * 0.5, 0.014, 0.025)
    cv.paint(w2, ridge * 0.55, skin * 0.7)
    under = _cover(_ellipse_sd(xx, yy - (ny0 + 0.035), nw * 0.8, 0.018), 0.025)
    cv.paint(w2, under * 0.35, skin * 0.6)
    for side in (-1, 1):  # the wings of the nose: soft arcs outside the nostrils
        ring = np.abs(_ellipse_sd(xx - side * nw * 0.78, yy - (ny0 - 0.002), nw * 0.36, 0.03))
        arc = _cover(ring - 0.004, aa * 1.5) * (xx * side > nw * 0.78)
        cv.paint(w2, arc * 0.5, skin * 0.6)
    tip = _cover(_ellipse_sd(xx, yy - (ny0 - 0.01), nw * 0.9, 0.035), 0.03)
    cv.paint(w2, tip * 0.3, np.minimum(skin * 1.15, 1.0))
    for side in (-1, 1):
        d = _ellipse_sd(xx - side * nw * 0.55, yy - (ny0 + 0.012), nw * 0.38, 0.014)
        cv.paint(w2, _cover(d, aa) * 0.8, skin * 0.35)
    wing = _band(xx, yy, -nw * 1.1, nw * 1.1, ny0 + 0.01 - 0.01 * (xx / nw) ** 2, 0.006, aa * 1.5)
    cv.paint(w2, wing * 0.3, skin * 0.55)


def _paint_mouth(cv: _Canvas, g: _Identity, s: _Shot) -> None:
    """The lips between two parabolas around a centre line that curves with the smile;
    an open mouth shows its inside and the upper teeth."""
    x, y, aa, fx, smile, open_mouth = cv.x, cv.y, cv.aa, s.fx, s.smile, s.open_mouth
    my = g.eye_y + g.nose_len + 0.115
    mw = g.mouth_w * (1 + 2 * smile)
    w2 = cv.window(fx - mw - 0.03, my - 0.1, fx + mw + 0.03, my + 0.1)
    xx, yy = x[w2] - fx, y[w2] - my
    q = np.clip(1 - (xx / mw) ** 2, 0, 1)
    centre = -smile * (1 - q) * 1.2 + 0.004
    upper = centre - g.lip_u * q ** 0.6 - open_mouth * q
    lower = centre + g.lip_l * q ** 0.6 + open_mouth * q
    lips = _cover(np.maximum(np.maximum(upper - yy, yy - lower), np.abs(xx) - mw), aa)
    cv.paint(w2, lips, g.lip_colour)
    if open_mouth > 0:
        inner = _cover(np.maximum(np.abs(yy - centre) - open_mouth * q, np.abs(xx) - mw * 0.85), aa)
        cv.paint(w2, inner, (0.25, 0.08, 0.08))
        teeth = inner * _cover((centre - open_mouth * q * 0.1) - yy, aa)  # upper teeth
        cv.paint(w2, teeth, (0.9, 0.88, 0.82))
    seam = _band(xx, yy, -mw, mw, centre, max(0.005, aa * 0.5), aa)
    cv.paint(w2, seam * 0.8, _mix(g.lip_colour, (0.1, 0.03, 0.03), 0.6))


def _paint_front(cv: _Canvas, g: _Identity, s: _Shot, rng: np.random.Generator) -> None:
    """The hair in front, inside a cap a little larger than the head and above the
    hairline, and the earrings."""
    x, y, aa, yaw = cv.x, cv.y, cv.aa, s.yaw
    hx, hy, rx, ry = s.hx, s.hy, g.head_rx, g.head_ry
    vol = 0.1 * g.hair_curly
    win = cv.window(hx - rx - 0.25, hy - ry - 0.3, hx + rx + 0.25, hy + ry * 0.8)
    lx, ly = x[win] - hx, y[win] - hy
    cap_rx, cap_ry = rx * 1.06 + vol * 1.4, ry * 1.04 + vol
    cap = _ellipse_sd(lx, ly + 0.03 + vol * 0.5, cap_rx, cap_ry)
    if g.hair_curly > 0.4:
        cap = cap + 0.015 * np.sin(np.arctan2(ly, lx) * 16 + g.part * 50)
    ax = np.abs(lx - yaw * 0.04) / rx
    sides = (0.05, 0.30, 0.45)[g.hair_len]  # how far the hair comes down the sides
    side_drop = (sides - g.hairline - 0.04) * np.clip((ax - 0.62) / 0.3, 0, 1) ** 1.5
    hl = g.hairline + 0.09 * ax ** 2 + g.part * (lx / rx) * 0.3 + side_drop
    if g.bangs:
        hl = hl + 0.02 * np.sin(lx * 40 + g.part * 20) * g.bangs
    front = _cover(cap, aa) * _cover(ly - hl, aa * 1.5)
    cv.paint(win, front, _hair_texture(lx, ly, s.hair, g, aa))

    if g.earrings:
        metal = (0.85, 0.7, 0.3) if rng.random() < 0.6 else (0.8, 0.8, 0.82)
        for side in (-1, 1):
            ex = hx + side * (rx * 0.97 + 0.01) - yaw * 0.02
            ey = g.eye_y + 0.07 + g.ear_r * 1.5
            w2 = cv.window(ex - 0.04, ey - 0.04, ex + 0.04, ey + 0.04)
            d = np.sqrt((x[w2] - ex) ** 2 + (y[w2] - ey) ** 2) - 0.018
            cv.paint(w2, _cover(d, aa), metal)


def _light_and_expose(cv: _Canvas, g: _Identity, s: _Shot, rng: np.random.Generator) -> np.ndarray:
    """Light the foreground (Lambert over an ellipsoid around the head), then the camera:
    exposure, white balance and sensor grain; returns uint8 ``[H, W, 3]``."""
    x, y, hx, hy, rx, ry = cv.x, cv.y, s.hx, s.hy, g.head_rx, g.head_ry
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    la = u(0, 2 * math.pi)
    strength = u(0.1, 0.55)
    L = np.array([math.cos(la) * 0.7, math.sin(la) * 0.5 - 0.2, 0.6])
    L = L / np.linalg.norm(L)
    nx = np.clip((x - hx) / (rx * 1.6), -1, 1)
    ny = np.clip((y - hy) / (ry * 1.6), -1, 1)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    lam = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0, 1)
    shade = (1 - strength) + strength * 1.25 * lam
    cv.img *= (1 + cv.fg * (shade - 1))[..., None]

    exposure = u(0.8, 1.15)
    wb = u(-0.06, 0.06)
    cv.img *= np.float32(exposure) * np.array([1 + wb, 1, 1 - wb], np.float32)
    # Sensor grain: uniform noise of the drawn standard deviation looks the same as Gaussian
    # at these levels and costs a fifth of the time (the largest single cost at 256 px).
    sigma = u(0.004, 0.03)
    grain = rng.random(cv.img.shape, dtype=np.float32)  # [H, W, 3]
    grain -= 0.5
    grain *= np.float32(sigma * math.sqrt(12.0))
    cv.img += grain
    np.clip(cv.img, 0, 1, out=cv.img)
    cv.img *= 255
    cv.img += 0.5
    return cv.img.astype(np.uint8)


def render_face(person: Person, resolution: int, seed: int) -> np.ndarray:
    """Draw one face of ``person``: uint8 ``[resolution, resolution, 3]``.

    Identity comes from ``person``; pose, light, background, clothing, expression and
    noise come from ``seed``, so different seeds are different photos of one person.
    The painters composite back to front and draw from one generator in a fixed order.
    """
    res = int(resolution)
    if not MIN_RESOLUTION <= res <= MAX_RESOLUTION:
        raise UserError(
            f"synthetic: resolution {resolution} is out of range; "
            f"pass a value from {MIN_RESOLUTION} to {MAX_RESOLUTION}"
        )
    g = _identity(person)
    rng = np.random.default_rng(derive_seed(int(seed) & 0xFFFFFFFFFFFF, 0x5EED))
    cv, shot = _pose(g, res, rng)
    _paint_behind(cv, g, shot, rng)
    _paint_body(cv, g, shot, rng)
    _paint_head(cv, g, shot)
    _paint_wrinkles(cv, g, shot)
    _paint_eyes(cv, g, shot)
    _paint_nose(cv, g, shot)
    _paint_mouth(cv, g, shot)
    _paint_front(cv, g, shot, rng)
    return _light_and_expose(cv, g, shot, rng)


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
