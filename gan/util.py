"""Small helpers shared by every stage: user-facing errors (``UserError``, ``MissingWeights``),
atomic writes, the one cache root ``cache_root`` (both packages' caches live below it), the one
seed mixer ``derive_seed``, PATH for ninja, and ``to_device`` (host tensors to the GPU without a sync)."""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


class UserError(Exception):
    """Bad input the user can fix (a missing file, an option out of range).

    Its message names the file or option and says what to do; the CLIs print it
    without a traceback and exit non-zero.
    """


class MissingWeights(UserError):
    """A pretrained weights file (Inception, VGG16, an ImageNet classifier, a published
    network) is not on this machine. Nothing is downloaded at run time: the message is one
    paragraph naming the file, where it goes and where to get it, and every CLI exits with
    status 2 (``exit_code``) through its one error handler."""

    exit_code = 2


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    ``overwrite=False``: the temporary is hard-linked to ``path`` instead, which fails with
    ``FileExistsError`` if something appeared under that name meanwhile (never replaced).

    A crash, an exception or Ctrl-C mid-way leaves no half-written file under the
    final name (the temporary is removed, or at worst left as ``.<name>.tmp-*``).
    ``os.replace`` is atomic on POSIX when both names are on one file system,
    which holds because the temporary lives in the same folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:  # on disk before it gets the final name (a node crash
            os.fsync(f.fileno())        # must not leave an empty file there while older ones are pruned)
        if overwrite:
            os.replace(tmp_path, path)
        else:
            os.link(tmp_path, path)
            tmp_path.unlink()
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_path`, written through a Python
    file object: a full disk then raises ``OSError`` (ENOSPC) with its errno, where a path
    given to ``torch.save`` raises a ``RuntimeError`` from its zip writer."""
    import torch

    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def cache_root() -> Path:
    """The folder every cache of mtf-faces lives below: ``$MTF_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/mtf-faces``, else ``~/.cache/mtf-faces``.

    Each user keeps one folder in it: ``stats/`` the metrics' real-side features
    (:func:`gan.metrics.default_stats_cache`), ``weights-sha256.json`` the weights files'
    SHA-256 (:func:`gan.extractors.sha256_file`), ``classify/`` the classifiers' decoded images
    (:func:`classify.dataset.default_cache_dir`). One variable moves them all, e.g. to a
    cluster's scratch space. Read at call time, so a test can point it elsewhere. (The compiled
    ops keep theirs apart, ``$MTF_EXTENSIONS_DIR``: :func:`gan.ops._build.cache_root`.)
    """
    if os.environ.get("MTF_CACHE_DIR"):
        return Path(os.environ["MTF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mtf-faces"


def ensure_venv_bin_on_path() -> None:
    """Prepend ``sys.prefix/bin`` to PATH so the venv's ``ninja`` is found.

    Console scripts run with the venv's interpreter even when the venv is not
    activated; ``torch.utils.cpp_extension`` looks for ``ninja`` on PATH only.
    """
    bindir = str(Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin"))
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bindir not in parts:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p])


def derive_seed(*keys: int | str, bits: int | None = None) -> int:
    """The one seed mixer: the seed of one random stream, from the keys that name it.

    Each key becomes 32-bit words, in order. A non-negative int gives its base-2**32
    digits, least significant first (0 gives the one word 0); a str stands for the int
    made of the first 8 bytes, little-endian, of the SHA-256 of its UTF-8 text (the same in
    every process and Python version, unlike the salted ``hash``). These words are the
    entropy NumPy's ``SeedSequence`` hashes (O'Neill's ``seed_seq``, 2015), so int keys
    give what ``SeedSequence(list(keys))`` gives.

    Without ``bits``: the int whose base-2**32 digits are those words. NumPy seeds every
    generator through ``SeedSequence``, so ``np.random.default_rng(derive_seed(*keys))`` is
    ``np.random.default_rng(np.random.SeedSequence(list(keys)))`` whenever the keys give
    at most four words (the size of its pool, which pads with zeros) or the last word is
    not 0 (an int carries no trailing zero word). One str key gives its 64-bit hash itself.
    As in ``SeedSequence``, the words are not marked per key (``(2**32,)`` and ``(0, 1)`` give
    one seed), so each stream passes keys of fixed widths (masked seeds) and its own tag.

    With ``bits=n`` (1 to 64): the low ``n`` bits of the first 64-bit word that
    ``SeedSequence`` draws from those words (for ``n <= 32``, its first 32-bit word). Use it
    where the consumer takes the seed as it is: torch's CPU generator keeps only the low 32
    bits of its seed, so the unhashed int of ``(seed, epoch)`` would repeat one stream for
    every epoch there.
    """
    if not keys:
        raise TypeError("derive_seed: pass at least one key")
    words: list[int] = []
    for key in keys:
        if isinstance(key, str):
            key = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
        elif isinstance(key, bool) or not hasattr(key, "__index__"):
            raise TypeError(f"derive_seed: keys are ints or strings, got {key!r}")
        key = operator.index(key)
        if key < 0:
            raise ValueError(f"derive_seed: int keys must be non-negative, got {key}")
        words.append(key & 0xFFFFFFFF)
        while key > 0xFFFFFFFF:
            key >>= 32
            words.append(key & 0xFFFFFFFF)
    if bits is None:
        return sum(word << (32 * i) for i, word in enumerate(words))
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"derive_seed: bits must be an int from 1 to 64, got {bits!r}")
    import numpy as np  # only here: the rest of this module stays free of numpy at import

    state = np.random.SeedSequence(np.array(words, dtype=np.uint32)).generate_state(1, np.uint64)
    return int(state[0]) & ((1 << bits) - 1)


def to_device(tensors, device):
    """CPU tensor(s) -> ``device`` without a host-device sync; one tensor or a list of them.

    A plain ``.to('cuda')`` of pageable host memory blocks the host until the GPU has run
    everything queued before it (the copy goes through a staging buffer and waits), which
    stalls a training step that should only queue kernels. On CUDA the tensors are packed
    into one pinned (page-locked) buffer and sent with *one* ``non_blocking`` copy; the
    returned tensors are views of it on the device. The pinned block comes from torch's
    caching host allocator, which records the copy on the stream and reuses the block only
    once the copy has run, so dropping it at once is safe. Elsewhere (CPU, or another device
    type): a plain ``.to(device)`` per tensor (a CPU tensor already on the CPU is returned as is).

    Values, dtypes and shapes are those of the inputs; each result is contiguous on CUDA.
    """
    import torch

    device = torch.device(device)
    single = isinstance(tensors, torch.Tensor)
    items = [tensors] if single else list(tensors)
    if not items:
        return []
    if device.type != "cuda" or any(t.device.type != "cpu" for t in items):
        out = [t.to(device) for t in items]  # nothing to stage: a plain copy (or none)
    else:
        buf, layout = _pack(items, pin=True)  # uint8 [total bytes], pinned
        out = _unpack(buf.to(device, non_blocking=True), layout)
    return out[0] if single else out


_ALIGN = 16  # bytes: every packed tensor starts aligned for any dtype's view


def _pack(items, pin: bool = False):
    """Tensors -> (one uint8 buffer holding their bytes, the layout :func:`_unpack` needs)."""
    import torch

    layout, total = [], 0
    for t in items:
        if t.device.type != "cpu":
            raise ValueError(f"to_device: expected CPU tensors, got one on {t.device}")
        nbytes = t.numel() * t.element_size()
        layout.append((total, nbytes, t.dtype, tuple(t.shape)))
        total += -(-nbytes // _ALIGN) * _ALIGN
    buf = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
    for t, (offset, nbytes, dtype, shape) in zip(items, layout):
        buf[offset:offset + nbytes].view(dtype).view(shape).copy_(t)
    return buf, layout


def _unpack(buf, layout) -> list:
    """The tensors :func:`_pack` put in ``buf`` (views of it, on ``buf``'s device)."""
    return [buf[offset:offset + nbytes].view(dtype).view(shape) for offset, nbytes, dtype, shape in layout]
