"""Regenerate ``docs/synthetic_grid.png``: sample faces from ``gan.synthetic`` for the README.

One column per person (every race x gender, half of them old), four photos each (rows),
with the person's labels under the column. Deterministic: rerunning gives the same file.

    .venv/bin/python docs/make_grid.py [--out docs/synthetic_grid.png] [--resolution 96]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gan.synthetic import GENDERS, RACES, make_people, render_face

SHORT = {"Asian_Chinese_Korean": "E. Asian", "Asian_Indian": "Indian", "Black": "Black", "White": "White"}


def pick_people(seed: int = 0) -> list:
    """One person per race x gender, ages alternating so that half are old."""
    pool = make_people(64, seed)
    chosen = []
    for i, (race, gender) in enumerate((r, g) for r in RACES for g in GENDERS):
        age = ("Old", "Young")[(i + i // 2) % 2]
        chosen.append(next(p for p in pool if (p.race, p.gender, p.age) == (race, gender, age)))
    return chosen


def make_grid(resolution: int = 96, images: int = 4, seed: int = 0) -> Image.Image:
    people = pick_people(seed)
    label_h = 14
    grid = Image.new("RGB", (resolution * len(people), resolution * images + label_h), "white")
    draw = ImageDraw.Draw(grid)
    for col, person in enumerate(people):
        for row in range(images):
            img = render_face(person, resolution, seed=1000 * col + row)
            grid.paste(Image.fromarray(img), (col * resolution, row * resolution))
        text = f"{SHORT[person.race]} {person.gender[0]} {person.age}"
        draw.text((col * resolution + 3, resolution * images + 2), text, fill=(0, 0, 0))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("synthetic_grid.png"))
    parser.add_argument("--resolution", type=int, default=96)
    args = parser.parse_args()
    # A 256-colour palette keeps the file small (the sensor noise defeats PNG's filters).
    make_grid(args.resolution).quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
