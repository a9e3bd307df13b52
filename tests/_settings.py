"""Constants shared by the tests (``conftest.py`` holds fixtures only, and no test imports it).

Sizes of the shared synthetic sets: small enough for CPU tests, large enough that every class
of every attribute is present and a tiny CNN has something to learn.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SYNTH_RES = 32
NONCURATED_PEOPLE, NONCURATED_PER_PERSON = 12, 8
CURATED_PEOPLE, CURATED_PER_PERSON = 16, 10
#: Seed of the shared curated set (``synthetic_curated``): its people are also the ones the
#: stand-in generator (tests/_standin.py) draws, so the fixture classifiers know them.
CURATED_SEED = 1
#: The GAN demo preset and its length (500 steps of 8, about a minute on one CPU thread).
DEMO_GAN_CONFIG = REPO / "configs" / "gan" / "demo.yaml"
DEMO_GAN_KIMG = 4.0


def shared_dir() -> Path:
    """``../shared`` beside the repository (CI lays a copy there), or ``$MTF_SHARED_DIR``."""
    return Path(os.environ.get("MTF_SHARED_DIR", REPO.parent / "shared"))


def shared_fixture(name: str) -> Path:
    """``../shared/fixtures/<name>``. Absent: a skip on a developer's machine, but a failure
    under ``CI=true``, where the parity tests must run rather than pass by skipping."""
    import pytest

    path = shared_dir() / "fixtures" / name
    if not path.is_file():
        msg = f"parity fixture {path} is absent (set MTF_SHARED_DIR to the folder holding fixtures/)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + "; under CI=true a missing fixture is a failure", pytrace=False)
        pytest.skip(msg)
    return path
