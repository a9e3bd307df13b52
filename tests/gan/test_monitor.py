"""Rank-0 logging and the scalar monitor (``stats.jsonl`` + TensorBoard), its public reduce hook,
exact floats, and a named logger on a chosen stream (what classify trains with)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from gan import monitor


def test_monitor_reduces_per_tick_and_writes_jsonl(tmp_path):
    from gan import monitor

    monitor.report("Loss/G/main", 1.0)  # no monitor open: a no-op, not an error
    with monitor.Monitor(tmp_path, tensorboard=False) as mon:
        monitor.report("Loss/G/main", torch.tensor([1.0, 3.0]))
        monitor.report("Loss/G/main", 5.0)
        monitor.report("Loss/D/r1", float("nan"))
        first = mon.flush(step=8)
        monitor.report("Progress/kimg", 0.016)
        second = mon.flush(step=16)
    monitor.report("Loss/G/main", 1.0)  # closed again
    assert first["Loss/G/main"] == {"num": 3.0, "mean": 3.0, "std": pytest.approx(np.std([1, 3, 5]))}
    assert set(second) == {"Progress/kimg"}  # a flush starts afresh
    lines = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["Loss/D/r1"]["mean"] is None  # NaN is written as null
    assert "timestamp" in lines[0]


def test_logging_goes_to_log_txt_on_rank_0_only(tmp_path):
    from gan import monitor

    (tmp_path / "r0").mkdir()
    (tmp_path / "r1").mkdir()
    log = monitor.setup_logging(tmp_path / "r0", rank=0, console=False)
    log.info("hello from rank 0")
    monitor.setup_logging(tmp_path / "r1", rank=1).info("hello from rank 1")
    monitor.close_logging()
    assert "hello from rank 0" in (tmp_path / "r0" / "log.txt").read_text()
    assert not (tmp_path / "r1" / "log.txt").exists()
    with monitor.Monitor(tmp_path / "r1", rank=1) as mon:
        monitor.report("x", 1.0)
        assert mon.flush(0)["x"]["mean"] == 1.0  # other ranks still reduce
    assert not (tmp_path / "r1" / "stats.jsonl").exists()


def test_reduce_hook_replaces_the_moments_before_flush(tmp_path):
    with monitor.Monitor(tmp_path, tensorboard=False) as mon:
        mon.report("Loss/G/main", torch.tensor([1.0, 3.0]))
        seen = {}

        def double(acc):  # what reduce_stats does with two ranks that reported alike
            seen.update(acc)
            return {k: v * 2 for k, v in acc.items()}

        mon.reduce(double)
        stats = mon.flush(step=1)
    assert seen["Loss/G/main"].tolist() == [2.0, 4.0, 10.0]  # count, sum, sum of squares
    assert stats["Loss/G/main"]["num"] == 4.0 and stats["Loss/G/main"]["mean"] == 2.0


def test_python_floats_are_written_exactly(tmp_path):
    with monitor.Monitor(tmp_path, tensorboard=False) as mon:
        mon.report("Progress/lr", 1e-5)
        mon.report("Progress/kimg", 25000.016)
        mon.flush(step=1)
    row = json.loads((tmp_path / "stats.jsonl").read_text())
    assert row["Progress/lr"] == {"num": 1.0, "mean": 1e-5, "std": 0.0}
    assert row["Progress/kimg"]["mean"] == 25000.016 and set(row) == {"Progress/lr", "Progress/kimg", "timestamp"}


def test_named_logger_writes_log_txt_and_the_given_stream(tmp_path):
    stream = io.StringIO()
    log = monitor.setup_logging(tmp_path, rank=0, name="classify-test", stream=stream)
    log.info("epoch 1")
    monitor.close_logging("classify-test")
    assert stream.getvalue() == "epoch 1\n"
    assert "epoch 1" in (tmp_path / "log.txt").read_text()
    assert not log.handlers


def test_values_are_copied_counted_on_the_host_and_folded_without_changing_the_statistics(monkeypatch):
    """A report keeps a float64 copy (a tensor updated in place later does not change what was
    reported) and the count on the host; folding every few reports gives the statistics of
    all values at once."""
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(int(n), generator=g, dtype=torch.float64) for n in torch.randint(1, 9, (20,), generator=g)]
    stats = {}
    for fold_every in (1000, 3):
        monkeypatch.setattr(monitor.Monitor, "FOLD_EVERY", fold_every)
        mon = monitor.Monitor()
        state = torch.zeros(3)
        for v in values:
            mon.report("x", v)
            state.copy_(v[:1].float().expand(3))
            mon.report("state", state)
            state.add_(100.0)  # later in-place updates are not what was reported
        assert mon._count["x"] == sum(v.numel() for v in values)  # a host float, no device tensor
        stats[fold_every] = mon.flush(step=0)
    allv, states = torch.cat(values), torch.cat([v[:1] for v in values]).float()
    assert stats[3]["x"]["num"] == allv.numel()
    for fold_every in stats:
        assert stats[fold_every]["x"]["mean"] == pytest.approx(allv.mean().item(), rel=1e-12)
        assert stats[fold_every]["x"]["std"] == pytest.approx(allv.std(unbiased=False).item(), rel=1e-9)
        assert stats[fold_every]["state"]["mean"] == pytest.approx(states.mean().item(), rel=1e-6)


def test_reports_after_a_reduce_add_to_the_reduced_moments():
    mon = monitor.Monitor()
    mon.report("x", torch.tensor([1.0, 3.0]))
    mon.reduce(lambda acc: {k: v * 2 for k, v in acc.items()})  # two ranks that reported alike
    mon.report("x", 5.0)
    assert mon.flush(step=0)["x"] == {"num": 5.0, "mean": 13.0 / 5, "std": pytest.approx(np.std([1, 3, 1, 3, 5]))}
