"""Checkpoints: plain data, atomic writes that survive SIGKILL, newest-loadable selection, run folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gan.checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    load_generator,
    load_latest,
    new_run_dir,
    resolve_resume,
    save_checkpoint,
)
from gan.util import UserError

REPO = Path(__file__).resolve().parents[2]


def _state(value: float) -> dict:
    return {"config": {"network": {}}, "cur_nimg": int(value * 1000), "G_ema": {"w": torch.full([3], value)},
            "stats": {"Loss/G/main": value}}


def test_run_folders_are_numbered_past_the_highest_and_never_reused(tmp_path):
    assert new_run_dir(tmp_path, "mtf-64 cond").name == "00000-mtf-64-cond"
    (tmp_path / "00007-old").mkdir()
    (tmp_path / "notes").mkdir()
    assert new_run_dir(tmp_path, "x").name == "00008-x"
    assert new_run_dir(tmp_path, "x").name == "00009-x"


def test_checkpoint_names_sort_by_kimg(tmp_path):
    assert checkpoint_name(400_000) == "checkpoint-000400.pt"
    assert checkpoint_name(96) == "checkpoint-000000.096.pt"
    for nimg in (96, 2000, 10_504, 1000):
        save_checkpoint(tmp_path / checkpoint_name(nimg), _state(nimg / 1000))
    (tmp_path / ".checkpoint-000020.pt.tmp-abc").write_bytes(b"partial")  # an interrupted write
    assert [k for k, _ in list_checkpoints(tmp_path)] == [0.096, 1.0, 2.0, 10.504]


def test_save_load_round_trip_is_plain_data(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint-000001.pt", _state(1.0))
    state = load_checkpoint(path)
    assert state["format"] == 1 and state["cur_nimg"] == 1000
    assert torch.equal(state["G_ema"]["w"], torch.full([3], 1.0))
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary was renamed, not left behind


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "checkpoint-000001.pt"
    torch.save({"config": {}, "G_ema": {}, "evil": Path("/")}, path)  # an arbitrary class: not weights-only
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)


def test_load_latest_skips_a_damaged_newest_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoint-000001.pt", _state(1.0))
    save_checkpoint(tmp_path / "checkpoint-000002.pt", _state(2.0))
    data = (tmp_path / "checkpoint-000002.pt").read_bytes()
    (tmp_path / "checkpoint-000002.pt").write_bytes(data[: len(data) // 2])  # e.g. a half-done copy
    path, state = load_latest(tmp_path)
    assert path.name == "checkpoint-000001.pt" and state["cur_nimg"] == 1000
    assert load_latest(tmp_path / "empty") is None


def test_resolve_resume_latest_picks_the_newest_run_with_a_checkpoint(tmp_path):
    a, b = new_run_dir(tmp_path, "a"), new_run_dir(tmp_path, "b")
    save_checkpoint(a / "checkpoint-000001.pt", _state(1.0))
    save_checkpoint(b / "checkpoint-000001.pt", _state(1.0))
    save_checkpoint(b / "checkpoint-000002.pt", _state(2.0))
    new_run_dir(tmp_path, "c")  # started, nothing saved yet
    assert resolve_resume("latest", tmp_path) == b / "checkpoint-000002.pt"
    assert resolve_resume(str(a), tmp_path) == a / "checkpoint-000001.pt"
    with pytest.raises(UserError, match="no such file or folder"):
        resolve_resume(str(tmp_path / "nope.pt"), tmp_path)


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    """A child process starts writing checkpoint 2 (a large one), is SIGKILLed half-way
    through the bytes; checkpoint 1 must still be the newest loadable one."""
    save_checkpoint(tmp_path / "checkpoint-000001.pt", _state(1.0))
    child = textwrap.dedent(f"""
        import sys, time, torch
        import gan.checkpoint as ck
        real_save = torch.save
        def slow_save(obj, f):
            import io
            buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
            f.write(data[: len(data) // 2]); f.flush()  # checkpoints are written through a file object
            print("HALF", flush=True)
            time.sleep(60)
            f.write(data[len(data) // 2:])
        torch.save = slow_save
        state = {{"config": {{}}, "cur_nimg": 2000, "G_ema": {{"w": torch.zeros(1_000_000)}}}}
        ck.save_checkpoint({str(tmp_path / "checkpoint-000002.pt")!r}, state)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert proc.stdout.readline().strip() == "HALF"
        assert list(tmp_path.glob(".checkpoint-000002.pt.tmp-*"))  # the write is under way
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "checkpoint-000002.pt").exists()
    path, state = load_latest(tmp_path)
    assert path.name == "checkpoint-000001.pt" and state["cur_nimg"] == 1000


def test_load_generator_gives_the_ema_generator_ready_for_inference(demo_run):
    demo = demo_run
    G = load_generator(demo["checkpoint"])
    state = load_checkpoint(demo["checkpoint"])
    assert not G.training and all(not p.requires_grad for p in G.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in G.parameters())
    assert all(torch.equal(v, state["G_ema"][k]) for k, v in G.state_dict().items())
    assert G.class_names == ["Female", "Male"] and G.c_dim == 2
    z = torch.randn([2, G.z_dim])
    c = torch.eye(2)
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_prune_keeps_the_newest_and_never_the_one_just_written_or_other_files(tmp_path):
    from gan.checkpoint import prune_checkpoints

    for kimg in (0, 200, 400, 600):
        save_checkpoint(tmp_path / checkpoint_name(kimg * 1000), {"config": {}, "G_ema": {}})
    (tmp_path / "fakes-000200.png").write_bytes(b"png")
    (tmp_path / ".checkpoint-000800.pt.tmp-x").write_bytes(b"partial")
    gone = prune_checkpoints(tmp_path, 2, tmp_path / "checkpoint-000600.pt")
    assert sorted(p.name for p in gone) == ["checkpoint-000000.pt", "checkpoint-000200.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".checkpoint-000800.pt.tmp-x", "checkpoint-000400.pt", "checkpoint-000600.pt", "fakes-000200.png"]
    # The checkpoint just written stays even where it is not among the newest (a resumed older kimg).
    save_checkpoint(tmp_path / checkpoint_name(100_000), {"config": {}, "G_ema": {}})
    prune_checkpoints(tmp_path, 1, tmp_path / "checkpoint-000100.pt")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000100.pt", "checkpoint-000600.pt"]
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, 0, tmp_path / "checkpoint-000600.pt")
