"""Session fixtures shared by every issue's tests.

Synthetic MTF trees in both layouts and a prepared training archive are built once per
test run (a few seconds at 32 px) and reused; tests must treat them as read-only and
write into their own ``tmp_path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._settings import (  # noqa: F401  (constants live in tests/_settings.py)
    CURATED_PER_PERSON, CURATED_PEOPLE, DEMO_GAN_CONFIG, DEMO_GAN_KIMG, NONCURATED_PER_PERSON, NONCURATED_PEOPLE,
    REPO, SYNTH_RES,
)

# Plots are written to files; never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")
# One cache for the compiled ops across the whole run (and later local runs: the folder is
# git-ignored and keyed by source hash), so the C++ extension is built once, not per module.
os.environ.setdefault("MTF_EXTENSIONS_DIR", str(REPO / ".cache" / "extensions"))


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: tiny tensors gain nothing from a second
    thread, OpenMP spinning on a busy 2-core box makes them several times slower, and
    bit-exact comparisons (resume) need a fixed reduction order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_noncurated(tmp_path_factory) -> Path:
    """``<root>/<person>/*.jpg`` + ``attributes.csv`` (file, person, race, gender, age)."""
    from gan.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "noncurated"
    write_synthetic(
        root, layout="noncurated", people=NONCURATED_PEOPLE, per_person=NONCURATED_PER_PERSON,
        resolution=SYNTH_RES, seed=0,
    )
    return root


@pytest.fixture(scope="session")
def synthetic_curated(tmp_path_factory) -> Path:
    """``<root>/{face_recognition,race,gender,age}/{train,val,test}/<class>/*.png``."""
    from gan.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "curated"
    write_synthetic(
        root, layout="curated", people=CURATED_PEOPLE, per_person=CURATED_PER_PERSON,
        resolution=SYNTH_RES, seed=1,
    )
    return root


@pytest.fixture(scope="session")
def prepared_archive(synthetic_noncurated, tmp_path_factory) -> Path:
    """The non-curated tree prepared at 32 px, labelled by gender (for conditional runs)."""
    from gan.prepare import prepare

    dest = tmp_path_factory.mktemp("archive") / "mtf-32.zip"
    prepare(
        synthetic_noncurated, dest, resolution=SYNTH_RES,
        labels=synthetic_noncurated / "attributes.csv", label_columns=("gender",), progress=False,
    )
    return dest


@pytest.fixture(scope="session")
def ext_dir() -> str:
    """The compiled-ops cache folder shared by every test (``$MTF_EXTENSIONS_DIR``)."""
    return os.environ["MTF_EXTENSIONS_DIR"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, prepared_archive) -> dict:
    """The demo GAN preset trained once per session on ``prepared_archive``, conditional on
    gender: ``{"run_dir", "checkpoint", "cfg", "archive"}``. Read-only for tests."""
    import json

    from gan.run_config import load_run_config
    from gan.train import train

    run_dir = tmp_path_factory.mktemp("demo-run") / "00000-demo"
    cfg = load_run_config(DEMO_GAN_CONFIG, [f"data.path={json.dumps(str(prepared_archive))}", "data.cond=true"])
    assert cfg.train.kimg == DEMO_GAN_KIMG and cfg.train.snap_kimg == 1.0 and cfg.train.tick_kimg == 0.2
    assert cfg.train.threads == 1  # the preset runs on one thread, as resume exactness needs
    result = train(cfg, run_dir, progress=False, console=False)
    return {"run_dir": run_dir, "checkpoint": result["checkpoint"], "cfg": cfg, "archive": prepared_archive}


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """A random-weight Inception file (He init) with torch-fidelity's keys. Default init gives
    features ~0, which makes every metric degenerate; He init keeps activations alive.
    The file is named as the real one, so the real loading code is exercised."""
    from gan.metrics import INCEPTION_FILE
    from gan.extractors import make_random_inception

    return make_random_inception(tmp_path_factory.mktemp("weights") / INCEPTION_FILE)


@pytest.fixture(scope="session")
def trained_classifiers(tmp_path_factory, synthetic_curated) -> dict:
    """The demo recipe's tiny CNN trained once per session on ``synthetic_curated`` for each
    task: ``{task: Path to best.pt}`` (``metrics.json`` with the test confusion matrix sits
    beside each). Read-only for tests."""
    import torch

    from classify import train as T

    out = tmp_path_factory.mktemp("classifiers")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = {}
        for task in ("gender", "race", "age", "face_recognition"):
            m = T.train(synthetic_curated, task, "tiny_cnn", "demo", out / task, cache_dir=out / "cache",
                        progress=False, echo=False)
            paths[task] = Path(m["run_dir"]) / "best.pt"
    finally:
        torch.set_num_threads(before)
    return paths
