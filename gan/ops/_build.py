"""Build manager for the compiled ops: lazy ninja builds, a shared cache, a lock, one fallback.

Why this exists: users of the published StyleGAN2-ADA ops keep hitting the same
failures -- an unreadable ninja log, a hang on a lock left by an interrupted build,
a silent fallback that retries the compile on every call, toolkit/torch CUDA
mismatches. Here:

* Nothing is built at import. The first call of an op with ``impl='cpp'`` or
  ``'cuda'`` (or ``'auto'`` where :data:`AUTO_TABLE` picks one) builds its target
  with :func:`torch.utils.cpp_extension.load` and ninja.
* Targets: ``cpp`` (CPU kernels only, g++) and ``cuda`` (CPU and CUDA kernels; the
  ``.cu`` files include no torch headers and are joined to torch by the ``.cpp``
  wrappers). One extension per target holds both ops.
* The cache lives under ``$MTF_EXTENSIONS_DIR`` (or ``$TORCH_EXTENSIONS_DIR``, or
  ``~/.cache/torch_extensions``) in a folder named by a hash of the sources, torch
  version, CUDA version, compiler flags and target architectures, so a changed
  source, a new torch or another GPU never loads a stale binary.
* Processes that build at once (torchrun ranks) serialise on our own lock file;
  the second one then loads what the first built. A lock whose owner pid is gone
  (same host) or that is older than :data:`STALE_LOCK_S` is removed, and so is a
  leftover ``lock`` file of ``cpp_extension`` in the build folder, which older torch
  releases wait on forever.
* A failure is diagnosed before or after the build into one sentence with a fix
  (no compiler, no ninja, no nvcc, CUDA version mismatch, empty arch list), warned
  once as :class:`OpsBuildWarning`, and the target is marked failed for the rest of
  the process: every later call takes the reference path without retrying.
* Each op passes its own self-test against ``ref`` (``get_plugin(target,
  verify=...)``), run on the first load of the ``cuda`` target on a GPU; a mismatch
  is warned once and sends that op to ``ref``. This module imports no op:
  :mod:`gan.ops.doctor`, which sits above the ops, runs all their self-tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from gan.util import ensure_venv_bin_on_path

OPS_DIR = Path(__file__).resolve().parent
TARGETS = ("cpp", "cuda")

#: ``impl='auto'`` on CPU tensors: (op, shape class) -> implementation. Fixed, never
#: timed at run time, so two runs always take the same path; CUDA tensors always
#: get ``cuda``. Chosen from ``benchmarks/ops.py`` (forward + backward, res-64/128
#: generator shapes, 1 thread, 2-core shared host, 2026-11-28): ``cpp`` only where
#: it was faster than ``ref`` in every run.
#:
#: * bias_act, keyed by activation: ``cpp`` for linear and lrelu (one vectorised
#:   pass instead of 3-4 torch ops: lrelu 2x256x64x64 ref 18-25 ms, cpp 4-9 ms);
#:   ``ref`` for relu (a tie: torch's relu is already one fused op) and for the
#:   transcendental ones (tanh, sigmoid, elu, selu, softplus, swish), where torch's
#:   SIMD exp/tanh beat the scalar libm calls of our kernel by 1.3-10x.
#: * upfirdn2d, keyed by ``"up"`` (up > 1), ``"down"`` (down > 1), ``"filter"``:
#:   ``cpp`` for up and down (the kernel skips the inserted zeros and the dropped
#:   outputs that ref computes: 4-5x faster); ``ref`` for filter (a tie with
#:   oneDNN's depthwise conv: 0.8-1.5x across runs).
AUTO_TABLE: dict[tuple[str, str], str] = {
    ("bias_act", "linear"): "cpp",
    ("bias_act", "lrelu"): "cpp",
    ("bias_act", "relu"): "ref",
    ("bias_act", "tanh"): "ref",
    ("bias_act", "sigmoid"): "ref",
    ("bias_act", "elu"): "ref",
    ("bias_act", "selu"): "ref",
    ("bias_act", "softplus"): "ref",
    ("bias_act", "swish"): "ref",
    ("upfirdn2d", "up"): "cpp",
    ("upfirdn2d", "down"): "cpp",
    ("upfirdn2d", "filter"): "ref",
}

#: A lock file older than this (seconds) is taken to be left by a killed build.
STALE_LOCK_S = float(os.environ.get("MTF_OPS_STALE_LOCK_S", 600))

#: Architectures compiled when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset
#: (A100 and H100, the cards this project trains on).
DEFAULT_ARCHS = "8.0;9.0"

SOURCES = {
    "cpp": ["bias_act.cpp", "upfirdn2d.cpp", "ops_bindings.cpp"],
    "cuda": ["bias_act.cpp", "upfirdn2d.cpp", "ops_bindings.cpp", "bias_act.cu", "upfirdn2d.cu"],
}
HEADERS = ["ops_common.h", "bias_act.h", "upfirdn2d.h"]


class OpsBuildWarning(RuntimeWarning):
    """A compiled target could not be built or failed its self-test; ``ref`` is used instead."""


class BuildError(RuntimeError):
    """A build failed; ``cause`` is one sentence, ``fix`` says what to do, ``log`` the full output."""

    def __init__(self, cause: str, fix: str, log: str = "") -> None:
        super().__init__(f"{cause} Fix: {fix}")
        self.cause, self.fix, self.log = cause, fix, log


#: An op's self-test: ``verify(plugin, device)`` -> the cases in which its kernels disagree with ``ref``.
Verify = Callable[[Any, torch.device], list[str]]

_lock = threading.Lock()
_plugins: dict[str, Any] = {}
_failed: dict[str, str] = {}
#: (target, an op's verify) -> None when it passed, else why it failed.
_verified: dict[tuple[str, Verify], str | None] = {}
#: Number of build attempts per target in this process (tests check there is one).
build_attempts: dict[str, int] = {t: 0 for t in TARGETS}


# ---------------------------------------------------------------------------- dispatch

def choose_impl(op: str, x: torch.Tensor, impl: str, shape_class: str = "any") -> str:
    """The implementation a call takes: explicit ``impl``, else ``$MTF_OPS``, else the table.

    ``impl='cpp'`` needs a CPU tensor and ``impl='cuda'`` a CUDA tensor (a clear
    error otherwise). ``$MTF_OPS=ref`` sends every ``'auto'`` call to the reference.
    """
    if impl == "ref":
        return "ref"
    if impl == "cpp":
        if x.device.type != "cpu":
            raise ValueError(f"{op}: impl='cpp' runs on CPU tensors; this one is on {x.device}. "
                             "Use impl='auto' or impl='cuda'.")
        return "cpp"
    if impl == "cuda":
        if x.device.type != "cuda":
            raise ValueError(f"{op}: impl='cuda' runs on CUDA tensors; this one is on {x.device}. "
                             "Use impl='auto' or impl='cpp'.")
        return "cuda"
    mode = os.environ.get("MTF_OPS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "ref"):
        raise ValueError(f"MTF_OPS={mode!r} is not understood; set it to 'ref' or 'auto' (or unset it).")
    if mode == "ref":
        return "ref"
    if x.device.type == "cuda":
        return "cuda"
    if x.device.type == "cpu":
        return AUTO_TABLE.get((op, shape_class), "ref")
    return "ref"


def get_plugin(target: str, verify: Verify | None = None) -> Any | None:
    """The loaded extension for ``target``, building it on first use; ``None`` after a failure.

    A failure is warned once (:class:`OpsBuildWarning`) and remembered, so the
    callers fall back to ``ref`` without another build attempt.

    ``verify`` is the calling op's own self-test, ``verify(plugin, device)`` -> the
    cases in which its kernels disagree with its reference (this module knows no op).
    It runs once per op on the first load of the ``cuda`` target on a GPU; an op
    whose kernels fail it is warned about once (:func:`parity_error`) and gets
    ``None`` from then on (it uses its reference), while other ops keep the target.
    """
    plugin = _plugins.get(target)
    if plugin is None:
        if target in _failed:
            return None
        with _lock:
            if target not in _plugins and target not in _failed:
                try:
                    _plugins[target] = build(target)
                except BuildError as exc:
                    _failed[target] = str(exc)
                    warnings.warn(_fallback_message(f"the {target} kernels are unavailable", exc),
                                  OpsBuildWarning, stacklevel=3)
            plugin = _plugins.get(target)
        if plugin is None:
            return None
    if verify is None or target != "cuda":
        return plugin
    key = (target, verify)
    if key not in _verified:  # checked before torch.cuda.is_available(): this runs on every op call
        if not torch.cuda.is_available():
            return plugin
        with _lock:
            if key not in _verified:
                device = torch.device("cuda")
                bad = verify(plugin, device)
                exc = parity_error(device, bad) if bad else None
                _verified[key] = None if exc is None else str(exc)
                if exc is not None:
                    warnings.warn(_fallback_message(f"the {target} kernels failed their self-test", exc),
                                  OpsBuildWarning, stacklevel=3)
    return plugin if _verified[key] is None else None


def _fallback_message(what: str, exc: BuildError) -> str:
    return (f"gan.ops: {what}: {exc.cause} Fix: {exc.fix} "
            "Using the reference ops (plain torch, slower) for the rest of this process.")


def failure(target: str) -> str | None:
    """Why ``target`` failed in this process, or ``None``."""
    return _failed.get(target)


def self_test_inputs(device: torch.device, dtype: torch.dtype = torch.float32
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The small inputs every op's self-test uses: ``x [2, 5, 9, 7]``, ``b [5]`` and the tolerance."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn([2, 5, 9, 7], generator=g).to(device=device, dtype=dtype)
    b = torch.randn([5], generator=g).to(device=device, dtype=dtype)
    tol = dict(rtol=1e-3, atol=1e-3) if dtype != torch.float16 else dict(rtol=2e-2, atol=2e-2)
    return x, b, tol


def parity_error(device: torch.device, bad: list[str]) -> BuildError:
    """What it means when compiled kernels disagree with ``ref`` on the ``bad`` cases of a self-test."""
    return BuildError(f"the compiled kernels disagree with the reference on {device}: {', '.join(bad)}.",
                      "report this with the output of `mtf-gan doctor`; MTF_OPS=ref forces the reference.")


# ---------------------------------------------------------------------------- environment

def cache_root() -> Path:
    """``$MTF_EXTENSIONS_DIR``, else ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``."""
    for var in ("MTF_EXTENSIONS_DIR", "TORCH_EXTENSIONS_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "torch_extensions"


def find_cuda_home() -> str | None:
    """``$CUDA_HOME``/``$CUDA_PATH``, else the folder above ``bin/nvcc`` that has ``include/cuda_runtime.h``."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(real.parent.parent)
    candidates += [Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    for cand in candidates:
        if (cand / "bin" / "nvcc").exists() and (cand / "include" / "cuda_runtime.h").exists():
            return str(cand)
    return None


def nvcc_version(cuda_home: str | None) -> str | None:
    """``"13.0"`` from ``nvcc --version``, or ``None`` when there is no nvcc."""
    if not cuda_home:
        return None
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def cuda_arch_list() -> str:
    """``$TORCH_CUDA_ARCH_LIST``, else the visible GPUs' capabilities, else :data:`DEFAULT_ARCHS`."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env is not None:
        return env.strip()
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{a}.{b}" for a, b in caps)
    return DEFAULT_ARCHS


def pip_cuda_include_dirs() -> list[str]:
    """The pip CUDA headers (``site-packages/nvidia/cu13/include`` etc.).

    torch's CUDA headers include ``cusparse.h`` and friends, which the pip wheels
    ship there rather than in the toolkit's ``include`` folder.
    """
    major = (torch.version.cuda or "").split(".")[0]
    out = []
    for entry in sys.path:
        for name in (f"cu{major}", "cuda_runtime", "cusparse", "cublas"):
            inc = Path(entry) / "nvidia" / name / "include"
            if major and inc.is_dir() and str(inc) not in out:
                out.append(str(inc))
    return out


def compiler() -> str:
    return os.environ.get("CXX", "c++")


@dataclass(frozen=True)
class BuildSpec:
    """Everything that determines one target's binary; ``key`` names its cache folder."""

    target: str
    sources: tuple[str, ...]
    cflags: tuple[str, ...]
    cuda_cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    include_paths: tuple[str, ...]
    archs: str
    cuda_home: str | None

    @property
    def key(self) -> str:
        h = hashlib.sha256()
        for name in sorted(set(self.sources) | set(HEADERS)):
            h.update(name.encode())
            h.update((OPS_DIR / name).read_bytes())
        meta = [self.target, torch.__version__, str(torch.version.cuda), self.archs, sys.version,
                *self.cflags, *self.cuda_cflags, *self.ldflags, compiler()]
        h.update(json.dumps(meta).encode())
        return h.hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"mtf_ops_{self.target}_{self.key}"

    @property
    def build_dir(self) -> Path:
        return cache_root() / self.name


def build_spec(target: str) -> BuildSpec:
    """Check the toolchain for ``target`` and return what to build; :class:`BuildError` if it cannot be."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    ensure_venv_bin_on_path()
    cxx = compiler()
    if shutil.which(cxx) is None:
        raise BuildError(f"no C++ compiler: {cxx!r} (from $CXX, default 'c++') is not on PATH.",
                         "install g++ (e.g. `apt-get install g++`) or point $CXX at a C++17 compiler.")
    if shutil.which("ninja") is None:
        raise BuildError("ninja is not on PATH (torch.utils.cpp_extension needs it).",
                         "`pip install ninja` into this environment.")
    # -fno-trapping-math / -fno-math-errno let g++ if-convert and vectorise the
    # per-element selects (values are unchanged: no reassociation, unlike -ffast-math).
    cflags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
    ldflags = ["-fopenmp"]
    cuda_cflags: list[str] = []
    includes: list[str] = []
    archs = ""
    cuda_home = None
    if target == "cuda":
        if torch.version.cuda is None:
            raise BuildError(f"this torch build ({torch.__version__}) has no CUDA support.",
                             "install a CUDA build of torch, or use impl='cpp'/'ref'.")
        cuda_home = find_cuda_home()
        if cuda_home is None:
            raise BuildError("no CUDA toolkit: nvcc was not found ($CUDA_HOME, PATH, /usr/local/cuda).",
                             f"install the CUDA {torch.version.cuda} toolkit and set CUDA_HOME to it.")
        nv = nvcc_version(cuda_home)
        if nv is None:
            raise BuildError(f"{cuda_home}/bin/nvcc does not run or print its version.",
                             "check the CUDA toolkit install or set CUDA_HOME to a working one.")
        if nv.split(".")[0] != torch.version.cuda.split(".")[0]:
            raise BuildError(f"CUDA version mismatch: nvcc in {cuda_home} is {nv} but torch was built "
                             f"with CUDA {torch.version.cuda}.",
                             f"install the CUDA {torch.version.cuda.split('.')[0]}.x toolkit and set "
                             "CUDA_HOME to it, or install the torch build for CUDA " + nv + ".")
        archs = cuda_arch_list()
        if not [a for a in re.split(r"[;\s]+", archs) if a]:
            raise BuildError("the CUDA arch list is empty ($TORCH_CUDA_ARCH_LIST is set but blank).",
                             "unset TORCH_CUDA_ARCH_LIST or set it, e.g. TORCH_CUDA_ARCH_LIST='8.0;9.0'.")
        cflags.append("-DMTF_WITH_CUDA")
        cuda_cflags = ["-O3", "--use_fast_math", "-DMTF_WITH_CUDA"]
        includes = pip_cuda_include_dirs()
    return BuildSpec(target, tuple(SOURCES[target]), tuple(cflags), tuple(cuda_cflags), tuple(ldflags),
                     tuple(includes), archs, cuda_home)


# ---------------------------------------------------------------------------- locking

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_is_stale(path: Path, stale_s: float | None = None) -> bool:
    """True when the lock at ``path`` was left by a dead process (same host) or is too old."""
    stale_s = STALE_LOCK_S if stale_s is None else stale_s
    try:
        info = json.loads(path.read_text())
        pid, host, created = int(info["pid"]), str(info["host"]), float(info["time"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable or half-written: judge by the file's age alone.
        try:
            return time.time() - path.stat().st_mtime > max(stale_s, 5.0)
        except FileNotFoundError:
            return False
    if host == socket.gethostname() and not _pid_alive(pid):
        return True
    return time.time() - created > stale_s


@contextlib.contextmanager
def build_lock(path: Path, timeout_s: float = 3600.0, poll_s: float = 0.25) -> Iterator[None]:
    """Hold an exclusive lock file at ``path`` (``O_EXCL``), removing a stale one instead of waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_is_stale(path):
                warnings.warn(f"gan.ops: removing the stale build lock {path} (left by a killed build).",
                              OpsBuildWarning, stacklevel=3)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if time.monotonic() > deadline:
                raise BuildError(f"timed out after {timeout_s:.0f} s waiting for the build lock {path}.",
                                 "if no other build is running, delete that file.")
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(payload)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clear_cpp_extension_lock(build_dir: Path) -> None:
    """Remove ``cpp_extension``'s own ``lock`` in ``build_dir`` if no live process holds it.

    Older torch creates it with ``O_EXCL`` and waits forever while it exists; newer
    torch ``flock``s it. We hold our own lock here, so if the file can be
    ``flock``ed it is a leftover and goes.
    """
    lock = build_dir / "lock"
    if not lock.exists():
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        with contextlib.suppress(OSError):
            lock.unlink()
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # held right now by a process outside this manager: let cpp_extension wait
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- build

def _prepare_env(spec: BuildSpec) -> None:
    """Set what ``cpp_extension`` reads from the environment for this build."""
    cuda_home = spec.cuda_home or find_cuda_home()
    if cuda_home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = cuda_home  # read once when cpp_extension is imported
    if spec.target == "cuda":
        os.environ["TORCH_CUDA_ARCH_LIST"] = spec.archs
        _import_load()
        import torch.utils.cpp_extension as cpp_ext

        # cpp_extension resolves CUDA_HOME once at import (here it would pick the
        # folder above /usr/local/bin/nvcc, /usr/local, which has no CUDA headers).
        cpp_ext.CUDA_HOME = spec.cuda_home


def _diagnose(text: str, spec: BuildSpec) -> tuple[str, str]:
    """One sentence and a fix for a failed build's output."""
    first_error = next((ln.strip() for ln in text.splitlines()
                        if re.search(r"\berror\b", ln, re.I) and "ninja: build stopped" not in ln), "")
    if re.search(r"fatal error: .*(cusparse|cublas|cuda_runtime|cudnn)\S*\.h", text):
        return (f"a CUDA header is missing ({first_error}).",
                "install the pip CUDA headers (nvidia-*-cu13 wheels) or a full CUDA toolkit.")
    if "unsupported gpu architecture" in text.lower() or "nvcc fatal" in text.lower():
        return (f"nvcc rejected the build ({first_error}).",
                f"set TORCH_CUDA_ARCH_LIST to architectures this nvcc supports (now {spec.archs!r}).")
    if "command not found" in text or ("No such file or directory" in text and "ninja" in text):
        return (f"a build tool is missing ({first_error}).", "install g++, ninja and (for cuda) nvcc.")
    return (f"the {spec.target} build failed: {first_error or text.strip().splitlines()[-1:] or 'unknown error'}",
            f"read the full log in {spec.build_dir / 'build_error.log'}; fix the toolchain or set MTF_OPS=ref.")


def _import_load():
    """``cpp_extension.load``, imported without its "No CUDA runtime is found" notice on GPU-less hosts."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        log.setLevel(level)
    return load


def build(target: str, verbose: bool = False) -> Any:
    """Build (or load from the cache) the extension for ``target``; :class:`BuildError` on failure.

    Callers normally use :func:`get_plugin`, which also remembers failures.
    """
    build_attempts[target] = build_attempts.get(target, 0) + 1
    spec = build_spec(target)
    _prepare_env(spec)
    build_dir = spec.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    load = _import_load()

    with build_lock(cache_root() / f"{spec.name}.lock"):
        _clear_cpp_extension_lock(build_dir)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # cpp_extension's compiler-version chatter
                return load(
                    name=spec.name,
                    sources=[str(OPS_DIR / s) for s in spec.sources],
                    extra_cflags=list(spec.cflags),
                    extra_cuda_cflags=list(spec.cuda_cflags) or None,
                    extra_ldflags=list(spec.ldflags),
                    extra_include_paths=[str(OPS_DIR), *spec.include_paths],
                    build_directory=str(build_dir),
                    with_cuda=target == "cuda",
                    verbose=verbose,
                )
        except Exception as exc:  # noqa: BLE001 - any failure becomes one diagnosed BuildError
            text = f"{exc}\n{getattr(exc, 'output', '') or ''}"
            with contextlib.suppress(OSError):
                (build_dir / "build_error.log").write_text(text)
            cause, fix = _diagnose(text, spec)
            raise BuildError(cause, fix, text) from None


# ---------------------------------------------------------------------------- nvcc-only check

def _gencode_flags(archs: str) -> list[str]:
    """``"8.0;9.0+PTX"`` -> nvcc ``-gencode`` flags (SASS per arch, PTX where ``+PTX``)."""
    flags = []
    for arch in [a for a in re.split(r"[;\s]+", archs) if a]:
        ptx = arch.endswith("+PTX")
        num = arch.replace("+PTX", "").replace(".", "")
        flags += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
        if ptx:
            flags += ["-gencode", f"arch=compute_{num},code=compute_{num}"]
    return flags


def compile_cuda_sources(out_dir: str | os.PathLike, archs: str | None = None) -> list[Path]:
    """Compile each ``.cu`` file to an object with nvcc alone (no GPU, no torch headers needed).

    A seconds-long check that the CUDA kernels and the shared headers compile for
    ``archs`` (default :func:`cuda_arch_list`) with the flags torch's build uses;
    the full ``cuda`` target is :func:`build`. :class:`BuildError` on failure.
    """
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise BuildError("no CUDA toolkit: nvcc was not found ($CUDA_HOME, PATH, /usr/local/cuda).",
                         "install the CUDA toolkit and set CUDA_HOME to it.")
    archs = cuda_arch_list() if archs is None else archs
    gencode = _gencode_flags(archs)
    if not gencode:
        raise BuildError("the CUDA arch list is empty.", "set TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0'.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for src in [s for s in SOURCES["cuda"] if s.endswith(".cu")]:
        obj = out_dir / (Path(src).stem + ".o")
        cmd = [str(Path(cuda_home) / "bin" / "nvcc"), "-c", str(OPS_DIR / src), "-o", str(obj), "-std=c++17",
               "-O3", "--use_fast_math", "-DMTF_WITH_CUDA", "-D__CUDA_NO_HALF_OPERATORS__",
               "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", f"-I{OPS_DIR}",
               "--compiler-options", "-fPIC", *gencode]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"nvcc could not compile {src}: "
                             f"{next((ln for ln in proc.stderr.splitlines() if 'error' in ln), proc.stderr[-300:])}",
                             "see the compiler output above; check TORCH_CUDA_ARCH_LIST and the CUDA toolkit.",
                             proc.stdout + proc.stderr)
        objects.append(obj)
    return objects
