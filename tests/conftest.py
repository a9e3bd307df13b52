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
    CURATED_PER_PERSON, CURATED_PEOPLE, CURATED_SEED, DEMO_GAN_CONFIG, DEMO_GAN_KIMG, NONCURATED_PER_PERSON, NONCURATED_PEOPLE,
    REPO, SYNTH_RES,
)

#: The session fixtures that take most of a run (see :func:`_workers_build_the_heavy_fixtures`).
HEAVY_FIXTURES = ("demo_run", "trained_classifiers")


def pytest_collection_modifyitems(config, items):
    """Files whose tests use a heavy fixture run last (in their order; files stay whole), so
    under pytest-xdist (``--dist worksteal``) the other workers have other tests to run while
    the heavy fixtures are built."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    heavy = {f for f, its in files.items() if any(n in it.fixturenames for it in its for n in HEAVY_FIXTURES)}
    items[:] = [it for f in sorted(files, key=lambda f: f in heavy) for it in files[f]]


# Plots are written to files; never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")
# One cache for the compiled ops across the whole run (and later local runs: the folder is
# git-ignored and keyed by source hash), so the C++ extension is built once, not per module.
os.environ.setdefault("MTF_EXTENSIONS_DIR", str(REPO / ".cache" / "extensions"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one torch thread each, or OpenMP threads fight over the cores.
    import torch

    torch.set_num_threads(1)


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
        resolution=SYNTH_RES, seed=CURATED_SEED,
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


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test run, also across pytest-xdist
    workers (``make test`` runs two): the first worker to ask builds it under a file lock in
    the run's shared temporary folder, the others wait for it and reuse it (the pattern of
    pytest-xdist's documentation for session fixtures that must run once)."""
    import fcntl
    import shutil

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers
    folder, done = root / f"once-{name}", root / f"once-{name}.done"
    with open(root / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.write_text("ok")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _cache_root_in_a_temporary_folder(tmp_path_factory):
    """``$MTF_CACHE_DIR`` (:func:`gan.util.cache_root`: the metrics' real features, the weights'
    SHA-256 memo, the classifiers' decoded images) points into this run's temporary folder, for
    this process and the ones it starts (torchrun, CLIs), so ``make test`` writes nothing under
    the home folder, whatever the caller's environment says. A test that counts files in the
    cache points the variable at its own ``tmp_path`` (monkeypatch.setenv)."""
    before = os.environ.get("MTF_CACHE_DIR")
    os.environ["MTF_CACHE_DIR"] = str(tmp_path_factory.mktemp("mtf-cache"))
    yield
    if before is None:
        os.environ.pop("MTF_CACHE_DIR", None)
    else:
        os.environ["MTF_CACHE_DIR"] = before


@pytest.fixture(scope="session", autouse=True)
def _workers_build_the_heavy_fixtures(request, _cache_root_in_a_temporary_folder):
    """Under pytest-xdist, worker ``gw<i>`` builds heavy fixture ``i`` (the demo GAN run on
    gw0, the demo classifiers on gw1) before its first test, while the other worker runs
    tests that need neither (their files come last); a worker that needs one sooner waits
    for it (:func:`_built_once`). Only fixtures that some collected test uses; never
    without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    used = {name for item in request.session.items for name in item.fixturenames}
    for i, name in enumerate(HEAVY_FIXTURES):
        if name in used and i % count == int(worker[2:]):
            request.getfixturevalue(name)


@pytest.fixture(scope="session")
def built_once(tmp_path_factory):
    """``built_once(name, build) -> folder``: :func:`_built_once` for a test module's own
    expensive fixture, so that two workers running tests of one module build it once."""
    return lambda name, build: _built_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, prepared_archive) -> dict:
    """The demo GAN preset trained once per run on ``prepared_archive``, conditional on
    gender: ``{"run_dir", "checkpoint", "cfg", "archive"}``. Read-only for tests."""
    import json

    from gan.checkpoint import list_checkpoints
    from gan.run_config import load_run_config
    from gan.train import train

    cfg = load_run_config(DEMO_GAN_CONFIG, [f"data.path={json.dumps(str(prepared_archive))}", "data.cond=true"])
    assert cfg.train.kimg == DEMO_GAN_KIMG and cfg.train.snap_kimg == 1.0 and cfg.train.tick_kimg == 0.2
    assert cfg.train.threads == 1  # the preset runs on one thread, as resume exactness needs
    folder = _built_once(tmp_path_factory, "demo-run",
                         lambda f: train(cfg, f / "00000-demo", progress=False, console=False))
    run_dir = folder / "00000-demo"
    return {"run_dir": run_dir, "checkpoint": list_checkpoints(run_dir)[-1][1], "cfg": cfg,
            "archive": prepared_archive}


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """A random-weight Inception file (He init) with torch-fidelity's keys. Default init gives
    features ~0, which makes every metric degenerate; He init keeps activations alive.
    The file is named as the real one, so the real loading code is exercised."""
    from gan.extractors import INCEPTION_FILE, make_random_inception

    return make_random_inception(tmp_path_factory.mktemp("weights") / INCEPTION_FILE)


@pytest.fixture(scope="session")
def trained_classifiers(tmp_path_factory, synthetic_curated) -> dict:
    """The demo recipe's tiny CNN trained once per run on ``synthetic_curated`` for each
    task: ``{task: Path to best.pt}`` (``metrics.json`` with the test confusion matrix sits
    beside each). Read-only for tests."""
    import torch

    from classify import train as T

    tasks = ("gender", "race", "age", "face_recognition")

    def build(out: Path) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for task in tasks:
                T.train(synthetic_curated, task, "tiny_cnn", "demo", out / task, cache_dir=out / "cache",
                        progress=False, echo=False)
        finally:
            torch.set_num_threads(before)

    out = _built_once(tmp_path_factory, "classifiers", build)
    return {task: out / task / "best.pt" for task in tasks}


@pytest.fixture()
def interrupt_at_epoch(monkeypatch):
    """``interrupt(epoch)``: from now on a classifier run raises ``KeyboardInterrupt`` when its
    stats row of ``epoch`` is flushed (the row comes before that epoch's checkpoints), as a
    Ctrl-C there would; ``interrupt(None)`` lets runs finish again."""
    from gan.monitor import Monitor

    original = Monitor.flush

    def interrupt(epoch):
        if epoch is None:
            monkeypatch.setattr(Monitor, "flush", original)
            return

        def flush(self, step, walltime=None):
            if step == epoch:
                raise KeyboardInterrupt
            return original(self, step, walltime)

        monkeypatch.setattr(Monitor, "flush", flush)

    return interrupt

