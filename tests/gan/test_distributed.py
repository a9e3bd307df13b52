"""Data-parallel GAN training under torchrun (CPU, gloo, 2 processes) and gan/distributed.py.

The claim under test: a run's trajectory does not depend on the number of processes, so
a 2-process run matches the 1-process run with the same global batch and seed (up to the
order of float reductions), and its checkpoints resume in 1 process. One tiny 2-process
run (module fixture) and one 1-process reference serve those tests; further launches test
that a killed rank ends the job and that a hung rank hits the collective timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gan import distributed as dist
from gan.checkpoint import list_checkpoints, load_checkpoint, load_latest
from gan.layers import MinibatchStd
from gan.loss import StepRandom
from gan.run_config import check_config, load_run_config, open_dataset, resolve_config
from gan.train import train
from gan.util import UserError

from tests._settings import DEMO_GAN_CONFIG as DEMO, REPO

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
#: The resume tests' tiny network (tests/gan/test_train.py): every regularizer and ADA act
#: within a few steps of 8 images; a tick every step, so stats line 1 is step 1.
TINY = ["train.tick_kimg=0.008", "train.snap_kimg=0.032", "train.grid=[2,2]", "network.channel_base=256",
        "network.channel_max=16", "network.z_dim=16", "network.w_dim=16", "loss.pl_interval=2",
        "loss.r1_interval=3", "augment.kimg=0.5"]


def _cfg(archive: Path, kimg: float, *extra: str):
    return load_run_config(DEMO, [f"data.path={json.dumps(str(archive))}", "data.cond=true", "train.batch=8",
                                  f"train.kimg={kimg}", *TINY, *extra])


def _env() -> dict[str, str]:
    # One thread per process (2 cores); the children share the compiled-ops cache of conftest.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _cli(archive: Path, outdir: Path, kimg: float, *extra: str) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return ["-m", "gan.cli", "train", "--data", str(archive), "--outdir", str(outdir), "--config", str(DEMO),
            "--cond", "--batch", "8", "--kimg", str(kimg), "--no-progress", "--dist-timeout", "60", *sets, *extra]


def _only_run(outdir: Path) -> Path:
    runs = sorted(p for p in outdir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def runs(prepared_archive, inception_weights, tmp_path_factory) -> dict:
    """A 2-process torchrun run to 0.064 kimg and the 1-process reference to 0.096 kimg,
    both with in-training FID of 16 fakes (sharded over the 2 processes)."""
    root = tmp_path_factory.mktemp("dist")
    fid = ["--metrics", "fid16", "--inception-weights", str(inception_weights)]
    res = subprocess.run(TORCHRUN + _cli(prepared_archive, root / "two", 0.064, *fid), env=_env(), cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    before = torch.get_num_threads()
    try:
        train(_cfg(prepared_archive, 0.096, "train.metrics=[fid16]",
                   f"train.inception_weights={json.dumps(str(inception_weights))}"),
              root / "one", progress=False, console=False)
    finally:
        torch.set_num_threads(before)
    return {"two": _only_run(root / "two"), "one": root / "one", "stdout": res.stdout, "root": root}


def _assert_close_states(a: dict, b: dict, atol: float = 1e-3) -> None:
    """Same counters and ADA state; weights, Adam moments and pl_mean within float tolerance
    (the 2-process sums are ordered differently; a slicing or weighting bug is O(0.01-1))."""
    assert a["cur_nimg"] == b["cur_nimg"] and a["batch_idx"] == b["batch_idx"]
    for net in ("G", "D", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            torch.testing.assert_close(a[net][k], b[net][k], atol=atol, rtol=1e-3, msg=f"{net}.{k}")
    for opt in ("G_opt", "D_opt"):
        for i, s in a[opt]["state"].items():
            for k, v in s.items():
                torch.testing.assert_close(v, b[opt]["state"][i][k], atol=atol, rtol=1e-2, msg=f"{opt} {i}.{k}")
    torch.testing.assert_close(a["pl_mean"], b["pl_mean"], atol=1e-5, rtol=1e-4)
    assert a["augment_p"] == b["augment_p"]
    assert {k: v for k, v in a["ada_stats"].items() if k != "last_rt"} == \
        {k: v for k, v in b["ada_stats"].items() if k != "last_rt"}


@pytest.mark.slow  # torchrun: two processes
def test_two_processes_match_one_process_losses_and_weights(runs):
    one = [json.loads(x) for x in (runs["one"] / "stats.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (runs["two"] / "stats.jsonl").read_text().splitlines()]
    # Step 1 runs all four phases; the statistics are reduced over both ranks (8 samples, 4 for Greg).
    for key in ("Loss/G/main", "Loss/D/main", "Loss/D/r1", "Loss/G/pl_length", "Loss/scores/real"):
        assert two[0][key]["num"] == one[0][key]["num"], key
        assert two[0][key]["mean"] == pytest.approx(one[0][key]["mean"], rel=1e-5, abs=1e-9), key
    a = load_checkpoint(runs["one"] / "checkpoint-000000.064.pt")
    b = load_checkpoint(runs["two"] / "checkpoint-000000.064.pt")
    assert a["augment_p"] > 0  # ADA moved, so augmentation took part in the later steps
    _assert_close_states(a, b)
    torch.testing.assert_close(a["G"]["mapping.w_avg"], b["G"]["mapping.w_avg"], atol=1e-5, rtol=1e-4)
    # The comparison can fail: the 0.032 snapshot is far from the 0.064 one.
    early = load_checkpoint(runs["two"] / "checkpoint-000000.032.pt")
    w = "synthesis.block32.conv.weight"
    assert (early["G"][w] - b["G"][w]).abs().max() > 100 * (a["G"][w] - b["G"][w]).abs().max()


@pytest.mark.slow  # torchrun: two processes
def test_two_process_run_writes_one_set_of_run_files(runs):
    run = runs["two"]
    assert [k for k, _ in list_checkpoints(run)] == [0.032, 0.064]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard only
    for name in ("config.yaml", "reals.png", "fakes_init.png", "fakes-000000.064.png"):
        assert (run / name).is_file(), name
    lines = (run / "stats.jsonl").read_text().splitlines()
    assert len(lines) == 8  # one line per tick, not one per rank
    log = (run / "log.txt").read_text()
    assert log.count("tick 1 kimg 0.008") == 1 and "data parallel: 2 process(es), global batch 8" in log
    assert runs["stdout"].count("done: 0.064 kimg") == 1  # rank 0 alone reports


@pytest.mark.slow  # torchrun: two processes
def test_two_process_checkpoint_resumes_in_one_process(runs, prepared_archive):
    ckpt = runs["two"] / "checkpoint-000000.064.pt"
    out = runs["root"] / "resumed"
    before = torch.get_num_threads()
    try:
        result = train(_cfg(prepared_archive, 0.096), out, resume=ckpt, progress=False, console=False)
    finally:
        torch.set_num_threads(before)
    assert result["cur_nimg"] == 96 and "resumed from" in (out / "log.txt").read_text()
    _assert_close_states(load_checkpoint(runs["one"] / "checkpoint-000000.096.pt"),
                         load_checkpoint(out / "checkpoint-000000.096.pt"))


def test_batch_gpu_rounds_match_one_pass(prepared_archive, tmp_path, one_thread):
    """Uneven rounds (batch 12 in rounds of 8 + 4; path length 6 in 4 + 2) weight their
    gradients by their share, and pl_mean and w_avg come from the whole batch."""
    a = train(_cfg(prepared_archive, 0.036, "train.batch=12", "train.snap_kimg=0.036"), tmp_path / "a",
              progress=False, console=False)
    b = train(_cfg(prepared_archive, 0.036, "train.batch=12", "train.snap_kimg=0.036", "train.batch_gpu=8"),
              tmp_path / "b", progress=False, console=False)
    assert "2 round(s)" in (tmp_path / "b" / "log.txt").read_text()
    sa, sb = load_checkpoint(a["checkpoint"]), load_checkpoint(b["checkpoint"])
    _assert_close_states(sa, sb)
    torch.testing.assert_close(sa["G"]["mapping.w_avg"], sb["G"]["mapping.w_avg"], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------
# Batch layout (no processes needed).


@pytest.mark.parametrize("batch, group, world, batch_gpu", [
    (8, 4, 1, None), (8, 4, 2, None), (12, 4, 2, None), (12, 4, 3, 4), (24, 4, 5, 8), (16, 1, 3, 2), (6, 2, 2, None),
])
def test_shard_batch_keeps_minibatch_std_groups_whole(batch, group, world, batch_gpu):
    x = torch.randn([batch, 4, 3, 3], generator=torch.Generator().manual_seed(0))  # [N, C, H, W]
    full = MinibatchStd(group)(x)  # [N, C + 1, H, W]
    seen = []
    for r in range(world):
        plan = dist.shard_batch(batch, group, world, r, batch_gpu)
        assert len(plan.rounds) == plan.rounds_per_rank[r] >= 1
        for rows in plan.rounds:
            assert batch_gpu is None or len(rows) <= batch_gpu
            idx = torch.tensor(rows)
            torch.testing.assert_close(MinibatchStd(group)(x[idx]), full[idx], rtol=0, atol=0)
            seen += rows
    assert sorted(seen) == list(range(batch))  # every row once
    assert dist.shard_batch(batch, group, 1, 0).rows == list(range(batch))  # one process: unchanged order


def test_step_random_rows_pick_rows_of_the_global_draw():
    full = StepRandom(3, 16, "Dmain")
    part = StepRandom(3, 16, "Dmain", rows=[5, 1, 6], global_batch=8)
    assert torch.equal(part.randn("z", [8, 4]), full.randn("z", [8, 4])[[5, 1, 6]])
    assert torch.equal(part.augment_params("aug_real", 8).normal, full.augment_params("aug_real", 8).normal[[5, 1, 6]])
    assert torch.equal(part.noise("b8.conv0", 3, 4), full.noise("b8.conv0", 8, 4)[[5, 1, 6]])


def test_too_few_groups_for_the_processes_is_a_clear_error(prepared_archive):
    cfg = _cfg(prepared_archive, 0.032)
    ds = open_dataset(cfg.data)
    cfg = resolve_config(cfg, ds)
    check_config(cfg, ds, world_size=2)
    with pytest.raises(UserError, match=r"--batch 8 gives 2 minibatch-std group\(s\) of 4, fewer than the 3 "
                                        r"processes.*at least 12"):
        check_config(cfg, ds, world_size=3)
    assert dist.split_evenly(8, 3) == [3, 3, 2]


# ----------------------------------------------------------------------------
# Failures.


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def _rank_of(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for kv in env:
        if kv.startswith(b"RANK="):
            return int(kv[5:])
    return None


@pytest.mark.slow  # torchrun: two processes
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_killing_one_rank_ends_the_job_and_keeps_the_last_checkpoint(prepared_archive, tmp_path):
    out = tmp_path / "runs"
    # A long run (100 kimg) with a snapshot every 4 steps (train.snap_kimg=0.032 of TINY).
    proc = subprocess.Popen(TORCHRUN + _cli(prepared_archive, out, 100.0), env=_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("*/checkpoint-*.pt")):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        assert list(out.glob("*/checkpoint-*.pt")), "training did not reach its first snapshot"
        workers = {_rank_of(p): p for p in _children(proc.pid)}
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.time()
        output, _ = proc.communicate(timeout=120)
        elapsed = time.time() - t0
    finally:
        if proc.poll() is None:  # torchrun and its workers (their own session, started here)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, output[-3000:]
    assert elapsed < 60, elapsed  # torchrun stops the surviving rank; no wait for the 600 s default timeout
    path, state = load_latest(_only_run(out))  # the last complete checkpoint still loads
    assert state["cur_nimg"] >= 32 and path.name.startswith("checkpoint-")


_HANG_SCRIPT = r'''
import sys, time, torch
from gan import distributed as dist
out = sys.argv[1]
with dist.session("cpu", timeout_s=4) as dev:
    r = dist.rank()
    # Uneven shards with interleaved global indices come back whole and in order.
    idx = torch.tensor([0, 2, 4]) if r == 0 else torch.tensor([1, 3])
    feats = idx[:, None].float() * torch.ones(1, 3)  # [n_r, 3]: row i holds i
    full = dist.gather_features(feats, order=idx)
    assert torch.equal(full[:, 0], torch.arange(5.0)), full
    # Names reported on one rank only are reduced too.
    acc = {"a": torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)}
    if r == 1:
        acc["b"] = torch.tensor([2.0, 6.0, 20.0], dtype=torch.float64)
    red = dist.reduce_stats(acc)
    assert red["a"].tolist() == [2.0, 4.0, 8.0] and red["b"].tolist() == [2.0, 6.0, 20.0], red
    dist.barrier()
    if r == 0:
        open(out, "w").write("collectives ok\n")
        t0 = time.time()
        try:
            dist.all_reduce_(torch.ones(1))  # rank 1 never joins
        except Exception as exc:
            open(out, "a").write(f"raised after {time.time() - t0:.1f} s: {type(exc).__name__}\n")
            raise
    else:
        time.sleep(120)  # hung: no collective
'''


@pytest.mark.slow  # torchrun: two processes
def test_gather_reduce_and_collective_timeout_under_torchrun(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(_HANG_SCRIPT)
    report = tmp_path / "report.txt"
    t0 = time.time()
    res = subprocess.run(TORCHRUN + [str(script), str(report)], env=_env(), cwd=tmp_path, capture_output=True,
                         text=True, timeout=150)
    elapsed = time.time() - t0
    text = report.read_text() if report.exists() else ""
    assert text.startswith("collectives ok"), res.stdout[-2000:] + res.stderr[-3000:]
    assert "raised after" in text, text  # the timeout, not torchrun, ended rank 0's wait
    assert float(text.split("raised after ")[1].split(" s")[0]) < 30
    assert res.returncode != 0 and elapsed < 100


@pytest.mark.slow  # torchrun: two processes
def test_in_training_fid_sharded_over_two_processes_equals_one_process(runs):
    """Each rank generated and extracted half of the fakes (and of the reals, uncached at the
    first snapshot); rank 0 gathered them: same counts, and the same FID as one process up
    to the float drift of the weights (a lost or doubled shard changes FID by O(1))."""
    one = [json.loads(x) for x in (runs["one"] / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (runs["two"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in two] == [0.032, 0.064] and [r["kimg"] for r in one] == [0.032, 0.064, 0.096]
    for a, b in zip(one, two):
        assert a["metric"] == b["metric"] == "fid16" and a["n_fake"] == b["n_fake"] == 16
        assert a["n_real"] == b["n_real"] == 96
        assert b["value"] == pytest.approx(a["value"], rel=1e-3)
    assert one[0]["value"] != pytest.approx(one[1]["value"], rel=1e-3)  # the check can fail


@pytest.mark.slow  # torchrun: two processes
def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_the_run_resumes(prepared_archive, tmp_path):
    """SIGTERM to torchrun itself (what SLURM's --signal=TERM@120 reaches through srun): it forwards
    the signal to both ranks, which agree on one step, write one checkpoint of it and stop; the
    run then resumes (in one process) and ends where the uninterrupted run ends."""
    out = tmp_path / "runs"
    proc = subprocess.Popen(TORCHRUN + _cli(prepared_archive, out, 0.128, "--set", "data.workers=2"), env=_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("*/checkpoint-*.pt")):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run = _only_run(out)
    names = [p.name for _, p in list_checkpoints(run)]
    assert proc.returncode != 0 and len(names) == 2, (names, output[-3000:])
    stopped = load_checkpoint(list_checkpoints(run)[-1][1])
    assert 32 < stopped["cur_nimg"] < 128 and stopped["batch_idx"] % 4 == 0  # an agreed step, not a snapshot
    log = (run / "log.txt").read_text()
    assert log.count("stopped on SIGTERM") == 1, log[-2000:]  # rank 0 logs; both ranks stopped there

    res = subprocess.run([sys.executable] + _cli(prepared_archive, out, 0.128, "--resume", "latest"), env=_env(),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    resumed = sorted(p for p in out.iterdir() if p.name.endswith("-resume"))[0]
    ref = tmp_path / "ref"
    train(_cfg(prepared_archive, 0.128), ref, progress=False, console=False)
    _assert_close_states(load_checkpoint(list_checkpoints(ref)[-1][1]),
                         load_checkpoint(list_checkpoints(resumed)[-1][1]))
