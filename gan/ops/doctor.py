"""``mtf-gan doctor``: what the compiled ops need, whether each target builds, and parity.

One line per check with OK / FAIL / SKIP / INFO and, for each FAIL, the fix. The
process exits non-zero on any FAIL so CI and the GPU check script can gate on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import torch

from gan.ops import _build
from gan.ops.bias_act import self_test as bias_act_self_test
from gan.ops.upfirdn2d import TILED_ENV, tiled, tiled_enabled
from gan.ops.upfirdn2d import self_test as upfirdn2d_self_test
from gan.util import ensure_venv_bin_on_path

#: Every op's self-test, in the order its mismatches are listed.
SELF_TESTS = (bias_act_self_test, upfirdn2d_self_test)


@dataclass(frozen=True)
class Check:
    """One doctor line."""

    name: str
    status: str  # OK | FAIL | SKIP | INFO
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<22} {self.detail}"
        if self.status == "FAIL" and self.fix:
            text += f"\n      fix: {self.fix}"
        return text


def _version_of(cmd: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else (out.stdout + out.stderr).strip().splitlines()[0] if out.stdout else None


def environment_checks() -> list[Check]:
    """Versions and tools: torch, CUDA runtime, nvcc, compiler, ninja, GPU, arch list, cache."""
    ensure_venv_bin_on_path()
    checks = [Check("torch", "INFO", torch.__version__)]
    checks.append(Check("CUDA runtime (torch)", "INFO", torch.version.cuda or "none (CPU-only torch build)"))
    cuda_home = _build.find_cuda_home()
    nv = _build.nvcc_version(cuda_home)
    gpu = torch.cuda.is_available()
    if nv:
        mismatch = torch.version.cuda and nv.split(".")[0] != torch.version.cuda.split(".")[0]
        checks.append(Check("nvcc", "FAIL" if mismatch else "OK", f"{nv} in {cuda_home}",
                            f"install the CUDA {torch.version.cuda} toolkit and set CUDA_HOME to it"))
    else:
        checks.append(Check("nvcc", "FAIL" if gpu else "SKIP", "not found ($CUDA_HOME, PATH, /usr/local/cuda)",
                            "install the CUDA toolkit matching torch and set CUDA_HOME"))
    cxx = _build.compiler()
    cxx_path = shutil.which(cxx)
    if cxx_path:
        checks.append(Check("compiler", "OK", f"{cxx} = {_version_of([cxx_path, '--version'], r'(.*)') or cxx_path}"))
    else:
        checks.append(Check("compiler", "FAIL", f"{cxx!r} not on PATH", "install g++ or set $CXX to a C++17 compiler"))
    ninja = shutil.which("ninja")
    if ninja:
        version = _version_of([ninja, "--version"], r"(\d+(?:\.\d+)*)")
        checks.append(Check("ninja", "OK", f"{version} at {ninja}"))
    else:
        checks.append(Check("ninja", "FAIL", "not on PATH", "pip install ninja"))
    if gpu:
        names = [f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                 for i in range(torch.cuda.device_count())]
        checks.append(Check("GPU", "INFO", "; ".join(names)))
    else:
        checks.append(Check("GPU", "INFO", "none visible (the cuda target is checked compile-only)"))
    if torch.version.cuda:
        checks.append(Check("CUDA arch list", "INFO", _build.cuda_arch_list()))
    root = _build.cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    checks.append(Check("extension cache", "OK" if writable else "FAIL", str(root),
                        "set MTF_EXTENSIONS_DIR to a writable folder"))
    try:
        kernel = "tiled" if tiled_enabled() else f"per-pixel ({TILED_ENV}=1 selects the tiled kernel)"
        checks.append(Check("upfirdn2d CUDA kernel", "INFO", kernel))
    except ValueError as exc:
        checks.append(Check("upfirdn2d CUDA kernel", "FAIL", str(exc), f"set {TILED_ENV} to 0 or 1"))
    return checks


def tiled_check(target: str, plugin, device: torch.device, dtype: torch.dtype) -> Check:
    """The upfirdn2d self-test through the tiled kernel (its CPU emulation on ``cpp``).

    A mismatch FAILs only where the tiled kernel is in use (``$MTF_OPS_CUDA_TILED=1`` on
    ``cuda``); otherwise it is reported, since that kernel waits behind the switch.
    """
    name = f"{target} tiled {str(dtype).split('.')[-1]}"
    what = "tiled kernel" if target == "cuda" else "tiled kernel's CPU emulation"
    bad = upfirdn2d_self_test(tiled(plugin), device, dtype)
    if not bad:
        return Check(name, "OK", f"upfirdn2d through the {what} matches ref")
    in_use = target == "cuda" and tiled_enabled()
    return Check(name, "FAIL" if in_use else "INFO", f"the {what} disagrees with ref: {', '.join(bad)}"
                 + ("" if in_use else " (not in use)"), f"unset {TILED_ENV} and report this")


def self_test(plugin, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
    """Every op's self-test on ``plugin``; one :class:`gan.ops._build.BuildError` naming all mismatches."""
    bad = [case for test in SELF_TESTS for case in test(plugin, device, dtype)]
    if bad:
        raise _build.parity_error(device, bad)


def target_checks(target: str) -> list[Check]:
    """Build ``target`` (or load it from the cache) and run the parity self-test where it can run."""
    if target == "cuda" and torch.version.cuda is None:
        return [Check("cuda build", "SKIP", "this torch build has no CUDA")]
    if target == "cuda" and not torch.cuda.is_available() and _build.find_cuda_home() is None:
        return [Check("cuda build", "SKIP", "no GPU and no nvcc")]
    start = time.monotonic()
    try:
        plugin = _build.build(target)
    except _build.BuildError as exc:
        return [Check(f"{target} build", "FAIL", exc.cause, exc.fix)]
    took = time.monotonic() - start
    checks = []
    if target == "cuda" and not torch.cuda.is_available():
        checks.append(Check("cuda build", "OK", f"compiled and linked in {took:.0f} s (compile-only: no GPU here)"))
        try:
            objs = _build.compile_cuda_sources(_build.cache_root() / "nvcc-check")
            checks.append(Check("cuda nvcc objects", "OK", ", ".join(o.name for o in objs)))
        except _build.BuildError as exc:
            checks.append(Check("cuda nvcc objects", "FAIL", exc.cause, exc.fix))
        checks.append(Check("cuda parity", "SKIP", "needs a GPU"))
        return checks
    checks.append(Check(f"{target} build", "OK", f"built or loaded in {took:.0f} s"))
    device = torch.device("cuda" if target == "cuda" else "cpu")
    dtypes = (torch.float32, torch.float16) if target == "cuda" else (torch.float32, torch.float64)
    for dtype in dtypes:
        try:
            self_test(plugin, device=device, dtype=dtype)
            checks.append(Check(f"{target} parity {str(dtype).split('.')[-1]}", "OK",
                                "bias_act (9 activations) and upfirdn2d (up/down/filter) match ref"))
        except _build.BuildError as exc:
            checks.append(Check(f"{target} parity {str(dtype).split('.')[-1]}", "FAIL", exc.cause, exc.fix))
        if target != "cuda" or tiled_enabled():  # never run an unverified CUDA kernel unasked
            checks.append(tiled_check(target, plugin, device, dtype))
    return checks


def doctor(targets: tuple[str, ...] = _build.TARGETS, echo=print) -> bool:
    """Run every check, printing each line through ``echo``; True when nothing FAILed."""
    ok = True
    for check in environment_checks():
        echo(check.line())
        ok &= check.status != "FAIL"
    for target in targets:
        for check in target_checks(target):
            echo(check.line())
            ok &= check.status != "FAIL"
    echo("doctor: all checks passed" if ok else "doctor: some checks FAILED (see the fix lines above)")
    return ok
