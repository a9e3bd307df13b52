"""Rank-0 logging and the scalar monitor (``stats.jsonl`` + TensorBoard)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


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
