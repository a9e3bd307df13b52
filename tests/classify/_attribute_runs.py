"""Direction files fitted once per test run and shared by ``test_directions.py`` and
``test_edit.py`` (through the ``built_once`` fixture of ``tests/conftest.py``, so two pytest-xdist
workers fit them once). Read-only for tests.

The stand-in's faces are labelled by the session's demo classifiers (``trained_classifiers``),
which are weak on them: measured on 400 stand-in faces (new people to the classifiers, who
learnt 16), gender 61%, age 74%, race 55% correct. Their age classifier also calls White faces
older (mean P(Young) 0.30 against 0.42 to 0.54 for the other races), so the age direction it
yields leans along the stand-in's race axis, ``w[2]``.
"""

from __future__ import annotations

from pathlib import Path

#: Faces the stand-in's directions are fitted on (rendering runs at ~150-300 img/s here).
STANDIN_NUM = 600
DEMO_NUM = 64


def _quiet(_line: str) -> None:
    pass


def _one_thread(build):
    def wrapped(folder: Path) -> None:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            build(folder)
        finally:
            torch.set_num_threads(before)

    return wrapped


def standin_directions(built_once, classifiers: dict) -> Path:
    """``directions.pt`` of the stand-in generator, gender and age directions from the demo classifiers."""
    from classify.directions import DirectionsOptions, directions
    from tests._standin import StandInGenerator

    def build(folder: Path) -> None:
        directions(DirectionsOptions(StandInGenerator(), [classifiers["gender"], classifiers["age"]], folder / "run",
                                     num=STANDIN_NUM, progress=False), echo=_quiet)

    return built_once("standin-directions", _one_thread(build)) / "run" / "directions.pt"


def demo_directions(built_once, demo_run: dict, classifiers: dict) -> Path:
    """``directions.pt`` of the demo GAN (conditional on gender) for gender, age and race."""
    from classify.directions import DirectionsOptions, directions

    def build(folder: Path) -> None:
        directions(DirectionsOptions(demo_run["checkpoint"], [classifiers[t] for t in ("gender", "age", "race")],
                                     folder / "run", num=DEMO_NUM, progress=False), echo=_quiet)

    return built_once("demo-directions", _one_thread(build)) / "run" / "directions.pt"
