"""Small helpers shared by every stage: user-facing errors, atomic writes, PATH for ninja."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator


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
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

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
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_venv_bin_on_path() -> None:
    """Prepend ``sys.prefix/bin`` to PATH so the venv's ``ninja`` is found.

    Console scripts run with the venv's interpreter even when the venv is not
    activated; ``torch.utils.cpp_extension`` looks for ``ninja`` on PATH only.
    """
    bindir = str(Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin"))
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bindir not in parts:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p])
