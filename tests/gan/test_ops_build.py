"""The build manager: stale locks, failures that fall back once, toolchain diagnoses, nvcc.

Uses the same extension cache as ``test_ops.py`` (``$MTF_EXTENSIONS_DIR`` or the
pytest base temp folder), so the ``cpp`` target is compiled at most once per run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from gan.ops import _build, bias_act, setup_filter, upfirdn2d
from gan.ops._build import BuildError, OpsBuildWarning


@pytest.fixture
def fresh_state(monkeypatch):
    """Run a test with no loaded or failed targets, restoring the process state afterwards."""
    monkeypatch.setattr(_build, "_plugins", {})
    monkeypatch.setattr(_build, "_failed", {})
    monkeypatch.setattr(_build, "_verified", {})
    monkeypatch.setattr(_build, "build_attempts", {t: 0 for t in _build.TARGETS})


def _write_lock(path, pid, age_s=0.0):
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time() - age_s}))


def test_build_proceeds_past_locks_left_by_a_killed_build(ext_dir, fresh_state):
    # What a build killed mid-way leaves: our lock naming a dead pid, and the
    # `lock` file of cpp_extension in the build folder (older torch waits on it forever).
    spec = _build.build_spec("cpp")
    spec.build_dir.mkdir(parents=True, exist_ok=True)
    our_lock = _build.cache_root() / f"{spec.name}.lock"
    # A "build" that takes our lock and is then SIGKILLed (no cleanup runs).
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from gan.ops._build import build_lock\n"
         "with build_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)\n", str(our_lock)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert our_lock.exists()
    (spec.build_dir / "lock").write_text("")
    start = time.monotonic()
    with pytest.warns(OpsBuildWarning, match="stale build lock"):
        plugin = _build.get_plugin("cpp")
    assert plugin is not None, _build.failure("cpp")
    assert not our_lock.exists()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(bias_act(x, None, act="lrelu", impl="cpp"), bias_act(x, None, act="lrelu", impl="ref"))
    assert time.monotonic() - start < 600


def test_leftover_cpp_extension_lock_is_removed_unless_a_live_process_holds_it(tmp_path):
    leftover = tmp_path / "lock"
    leftover.write_text("")
    _build._clear_cpp_extension_lock(tmp_path)
    assert not leftover.exists()
    leftover.write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(leftover)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _build._clear_cpp_extension_lock(tmp_path)
        assert leftover.exists()
    finally:
        holder.kill()
        holder.wait()


def test_old_lock_of_a_live_process_is_stale_but_a_fresh_one_is_waited_for(tmp_path):
    lock = tmp_path / "x.lock"
    _write_lock(lock, os.getpid(), age_s=3600)
    assert _build.lock_is_stale(lock, stale_s=600)
    _write_lock(lock, os.getpid())
    assert not _build.lock_is_stale(lock, stale_s=600)
    with pytest.raises(BuildError, match="waiting for the build lock"):
        with _build.build_lock(lock, timeout_s=0.3, poll_s=0.05):
            pass
    assert lock.exists()  # someone else's live lock is left alone


def test_build_lock_serialises_two_processes(tmp_path):
    lock, log = tmp_path / "b.lock", tmp_path / "log.txt"
    code = (
        "import sys, time; from pathlib import Path; from gan.ops._build import build_lock\n"
        f"with build_lock(Path({str(lock)!r}), poll_s=0.02):\n"
        f"    open({str(log)!r}, 'a').write('in '); time.sleep(0.5); open({str(log)!r}, 'a').write('out ')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert log.read_text().split() == ["in", "out", "in", "out"]
    assert not lock.exists()


def test_missing_compiler_warns_once_and_falls_back_to_ref(ext_dir, fresh_state, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    x = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = bias_act(x, None, act="lrelu", impl="cpp")
        y2 = bias_act(x, None, act="lrelu", impl="cpp")
        y3 = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl="cpp")
    ours = [w for w in caught if issubclass(w.category, OpsBuildWarning)]
    assert len(ours) == 1
    assert "no C++ compiler" in str(ours[0].message) and "Fix:" in str(ours[0].message)
    assert _build.build_attempts["cpp"] == 1
    torch.testing.assert_close(y1, bias_act(x, None, act="lrelu", impl="ref"))
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(y3, upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl="ref"))


def test_missing_ninja_is_named(monkeypatch):
    monkeypatch.setattr(_build.shutil, "which", lambda name: None if name == "ninja" else "/usr/bin/" + name)
    with pytest.raises(BuildError, match="ninja is not on PATH") as info:
        _build.build_spec("cpp")
    assert "pip install ninja" in info.value.fix


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch build")
def test_cuda_toolchain_problems_are_named(monkeypatch):
    monkeypatch.setenv("CUDA_HOME", "/nonexistent/cuda")
    with pytest.raises(BuildError, match="nvcc does not run"):
        _build.build_spec("cuda")
    monkeypatch.delenv("CUDA_HOME")
    monkeypatch.delenv("CUDA_PATH", raising=False)
    if _build.find_cuda_home() is None:
        pytest.skip("no CUDA toolkit here")
    monkeypatch.setattr(_build, "nvcc_version", lambda home: "11.8")
    with pytest.raises(BuildError, match="CUDA version mismatch"):
        _build.build_spec("cuda")
    monkeypatch.setattr(_build, "nvcc_version", lambda home: torch.version.cuda)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", " ")
    with pytest.raises(BuildError, match="arch list is empty"):
        _build.build_spec("cuda")


def test_cache_key_changes_with_the_target_architectures(monkeypatch, ext_dir):
    if torch.version.cuda is None or _build.find_cuda_home() is None:
        pytest.skip("needs a CUDA toolkit")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    a = _build.build_spec("cuda")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    b = _build.build_spec("cuda")
    assert a.build_dir != b.build_dir and a.build_dir.parent == b.build_dir.parent == _build.cache_root()
    assert _build.build_spec("cpp").build_dir != a.build_dir


def test_cuda_sources_compile_with_nvcc_without_a_gpu(tmp_path):
    if _build.find_cuda_home() is None:
        pytest.skip("no nvcc here")
    objects = _build.compile_cuda_sources(tmp_path, archs="8.0;9.0")
    assert [o.name for o in objects] == ["bias_act.o", "upfirdn2d.o"]
    assert all(o.stat().st_size > 1000 for o in objects)


def test_bias_act_without_bias_on_a_1d_input(ext_dir):
    x = torch.randn(7)
    torch.testing.assert_close(bias_act(x, None, act="lrelu", impl="cpp"), bias_act(x, None, act="lrelu", impl="ref"))


def test_unknown_mtf_ops_value_is_an_error_that_says_what_to_set(monkeypatch):
    monkeypatch.setenv("MTF_OPS", "fast")
    with pytest.raises(ValueError, match="set it to 'ref' or 'auto'"):
        bias_act(torch.zeros(2, 3), act="lrelu")


def test_an_op_failing_its_own_self_test_on_the_gpu_falls_back_alone(fresh_state, monkeypatch):
    # The cuda target's self-test runs per op (its `verify`), on the first load on a GPU.
    fake = object()
    monkeypatch.setattr(_build.torch.cuda, "is_available", lambda: True)
    _build._plugins["cuda"] = fake
    seen = []

    def bad(plugin, device):
        seen.append((plugin, device.type))
        return ["bias_act act=lrelu"]

    def good(plugin, device):
        return []

    with pytest.warns(OpsBuildWarning, match="failed their self-test.*disagree with the reference.*act=lrelu"):
        assert _build.get_plugin("cuda", verify=bad) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build.get_plugin("cuda", verify=bad) is None  # remembered: no second test, no second warning
        assert _build.get_plugin("cuda", verify=good) is fake  # another op keeps the target
        assert _build.get_plugin("cuda") is fake
    assert seen == [(fake, "cuda")]
