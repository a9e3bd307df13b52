"""mtf-classify train under torchrun (CPU, gloo, 2 processes): DDP, sharded data, gathered evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from classify import train as T
from classify.evaluate import evaluate

from tests._settings import REPO

SMALL = ["data.input_size=32", "data.cache_size=32", "train.epochs=3"]

pytestmark = pytest.mark.slow  # torchrun: two processes


@pytest.fixture(scope="module")
def two_proc_run(tmp_path_factory, synthetic_curated):
    root = tmp_path_factory.mktemp("classify-dist")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "classify.cli", "train", "--data", str(synthetic_curated), "--task", "gender", "--model", "tiny_cnn",
           "--recipe", "demo", "--outdir", str(root / "two"), "--cache-dir", str(root / "cache"), "--no-progress",
           "--dist-timeout", "60", *[a for s in SMALL for a in ("--set", s)]]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"root": root, "run": root / "two", "stdout": res.stdout}


def test_two_process_classifier_writes_the_single_process_outputs(two_proc_run, synthetic_curated, one_thread):
    root, run = two_proc_run["root"], two_proc_run["run"]
    one = T.train(synthetic_curated, "gender", "tiny_cnn", "demo", root / "one", overrides=SMALL,
                  cache_dir=root / "cache", progress=False, echo=False)
    m2 = json.loads((run / "metrics.json").read_text())
    m1 = json.loads((root / "one" / "metrics.json").read_text())
    assert set(m2) - {"processes"} == set(m1) and m2["processes"] == 2
    assert m2["n"] == m1["n"] == one["n"]  # the gathered test split is the whole split, once
    assert [c["support"] for c in m2["per_class"]] == [c["support"] for c in m1["per_class"]]
    files = [{p.name for p in d.iterdir() if not p.name.startswith("events.out.")} for d in (run, root / "one")]
    assert files[0] == files[1]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["Progress/epoch"]["mean"] for s in stats] == [1, 2, 3]  # one line per epoch, not one per process
    assert (run / "log.txt").read_text().count("epoch   1/3") == 1
    assert two_proc_run["stdout"].count("test accuracy") == 1


def test_gathered_evaluation_equals_a_single_process_evaluation(two_proc_run, synthetic_curated, tmp_path,
                                                                 one_thread):
    """The 2-process test metrics (shards gathered in index order) are what one process
    computes with the same best.pt: nothing lost, duplicated or mismatched."""
    m2 = json.loads((two_proc_run["run"] / "metrics.json").read_text())
    again = evaluate(two_proc_run["run"] / "best.pt", synthetic_curated, tmp_path, split="test",
                     cache_dir=two_proc_run["root"] / "cache", log=lambda s: None)
    assert again["n"] == m2["n"]
    assert again["accuracy"] == pytest.approx(m2["accuracy"])
    assert again["confusion"] == m2["confusion"]
