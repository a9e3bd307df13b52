"""What a training run tells the world: scalars through ``report()``, text through ``logging``.

Two kinds of log, kept apart (house rule 10):

* **Scalars** go through one sink, :func:`report` (or :meth:`Monitor.report`), under
  hierarchical names (``Loss/G/main``, ``Loss/D/r1``, ``Progress/kimg``,
  ``Timing/sec_per_kimg``). Values are accumulated as detached tensors where they live
  (no GPU sync per step) and reduced once per tick by :meth:`Monitor.flush`, which
  writes one JSON line per tick to ``stats.jsonl`` (``{name: {"num", "mean", "std"}}``,
  the published StyleGAN2-ADA layout, plus ``timestamp``) and the means to TensorBoard.
  Images (fakes grids) go to TensorBoard with :meth:`Monitor.image`.
* **Text** goes through a ``logging`` logger (``"gan"``; ``classify`` trains with its own
  ``"classify"``): rank 0 logs to the console and to ``log.txt``; other ranks get a null
  logger, so code never asks "am I rank 0?".

Both packages write ``stats.jsonl`` through :class:`Monitor`, so its rows have one layout:
one JSON object per flush (a GAN tick, a classifier epoch), ``{name: {"num", "mean", "std"},
..., "timestamp": unix seconds}``; the progress counter is a name like any other
(``Progress/kimg`` for the GAN, ``Progress/epoch`` for the classifiers). Under torchrun the
GAN trainer sums the accumulators over ranks before a flush with :meth:`Monitor.reduce`;
the classifier reports values it has already reduced.

The module-level :func:`report` forwards to the monitor opened most recently with
``with Monitor(...)``, and does nothing when none is open (so the loss can report
from a notebook or a test without any setup). It is the only module-level state here
and it is reset when the ``with`` block ends.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from gan.util import to_device

__all__ = ["Monitor", "report", "setup_logging", "close_logging", "LOGGER_NAME", "peak_rss_mb", "format_time"]

LOGGER_NAME = "gan"

_active: list["Monitor"] = []  # stack of open monitors; report() writes to the top one


def report(name: str, value: Any) -> None:
    """Add ``value`` (a number or a tensor of any shape: each element counts) under ``name``.

    Forwards to the innermost open :class:`Monitor`; a no-op when none is open.
    """
    if _active:
        _active[-1].report(name, value)


# ----------------------------------------------------------------------------
# Text logging.


def setup_logging(run_dir: Optional[str | Path], rank: int = 0, console: bool = True, name: str = LOGGER_NAME,
                  stream: Any = None) -> logging.Logger:
    """Configure the logger ``name``: console + ``run_dir/log.txt`` on rank 0, nothing elsewhere.

    Handlers from a previous run in the same process are removed first, so a notebook or
    a test that trains twice does not log twice. ``stream`` is the console (default
    ``sys.stdout``; ``mtf-classify`` logs to ``sys.stderr`` and prints its results to stdout).
    """
    logger = logging.getLogger(name)
    close_logging(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if rank != 0:
        logger.addHandler(logging.NullHandler())
        return logger
    if console:
        sh = logging.StreamHandler(sys.stdout if stream is None else stream)
        sh.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(sh)
    if run_dir is not None:
        fh = logging.FileHandler(Path(run_dir) / "log.txt", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(fh)
    return logger


def close_logging(name: str = LOGGER_NAME) -> None:
    """Remove (and close) every handler of the logger ``name``."""
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


# ----------------------------------------------------------------------------
# Scalars and images.


class Monitor:
    """Per-tick scalar statistics -> ``stats.jsonl`` + TensorBoard; images -> TensorBoard.

    Args:
        run_dir: folder for ``stats.jsonl`` and the ``events.out.tfevents.*`` files; None
            keeps statistics in memory only (``flush`` still returns them).
        rank: only rank 0 writes files; other ranks accumulate and return.
        tensorboard: write TensorBoard events (needs the ``tensorboard`` package).
    """

    def __init__(self, run_dir: Optional[str | Path] = None, rank: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rank = rank
        self._pending: dict[str, list[torch.Tensor]] = {}  # name -> float64 values not summed yet
        self._acc: dict[str, torch.Tensor] = {}  # name -> float64 [2]: sum, sum of squares (where they live)
        self._count: dict[str, float] = {}       # name -> how many elements, on the host
        self._writer = None
        self._jsonl = None
        if self.run_dir is not None and rank == 0:
            self._jsonl = open(self.run_dir / "stats.jsonl", "a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir))

    # -- context: make report() write here
    def __enter__(self) -> "Monitor":
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _active:
            _active.remove(self)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    # -- accumulation
    #: Pending values of one name folded into its moments once this many have been reported
    #: (bounds the memory a long tick holds; the fold costs a handful of kernels per so many reports).
    FOLD_EVERY = 64

    def report(self, name: str, value: Any) -> None:
        """Add ``value``'s elements under ``name`` (no host sync, one kernel for a tensor).

        The value is kept as a detached float64 copy (a copy: a tensor the caller updates in
        place later, like ``pl_mean``, must not change what was reported) and its element
        count on the host; sums are formed when the name is folded (every
        :data:`FOLD_EVERY` reports, and at :meth:`reduce` / :meth:`flush`). Python numbers are
        taken in float64, so a reported float is written exactly as given.
        """
        if isinstance(value, torch.Tensor):
            t = value.detach().flatten().to(torch.float64, copy=True)
        else:
            t = torch.as_tensor(value, dtype=torch.float64).flatten()
        if t.numel() == 0:
            return
        pending = self._pending.setdefault(name, [])
        pending.append(t)
        self._count[name] = self._count.get(name, 0.0) + t.numel()
        if len(pending) >= self.FOLD_EVERY:
            self._fold(name)

    def _fold(self, name: str) -> None:
        """Pending values of ``name`` -> its float64 ``[sum, sum of squares]`` (on their device)."""
        pending = self._pending.pop(name, [])
        if not pending:
            return
        acc = self._acc.get(name)
        dev = acc.device if acc is not None else pending[-1].device
        x = torch.cat([to_device(v, dev) if v.device != dev else v for v in pending])  # [elements]
        moments = torch.stack([x.sum(), x.square().sum()])
        self._acc[name] = moments if acc is None else acc + moments

    def _moments(self) -> dict[str, torch.Tensor]:
        """Everything reported since the last flush: ``{name: float64 [count, sum, sum of squares]}``."""
        for name in list(self._pending):
            self._fold(name)
        return {name: torch.cat([acc.new_full([1], self._count[name]), acc]) for name, acc in self._acc.items()}

    def reduce(self, fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
        """Replace what was reported since the last flush by ``fn(moments)``.

        ``moments`` is ``{name: float64 [count, sum, sum of squares]}``; under torchrun the
        trainer passes :func:`gan.distributed.reduce_stats` before :meth:`flush`, so the
        statistics cover the global batch, not rank 0's share.
        """
        reduced = dict(fn(self._moments()))
        counts = torch.stack([m[0].cpu() for m in reduced.values()]).tolist() if reduced else []  # at ticks only
        self._acc = {name: m[1:] for name, m in reduced.items()}
        self._count = dict(zip(reduced, counts))

    def flush(self, step: int, walltime: Optional[float] = None) -> dict[str, dict[str, float]]:
        """Reduce what was reported since the last flush, write it, and start afresh.

        ``step`` is the TensorBoard step (the trainer passes ``cur_nimg``). Returns
        ``{name: {"num", "mean", "std"}}``; non-finite means are kept as NaN/inf (the
        trainer's guard looks at them), and written to JSON as ``null``. One host read per
        device the values live on, at the tick.
        """
        moments = self._moments()
        self._acc, self._count = {}, {}
        values: dict[str, list[float]] = {}
        for dev in {m.device for m in moments.values()}:
            names = [k for k, m in moments.items() if m.device == dev]
            values.update(zip(names, torch.stack([moments[k] for k in names]).tolist()))
        stats: dict[str, dict[str, float]] = {}
        for name in sorted(values):
            n, s, sq = values[name]
            mean = s / n
            var = max(sq / n - mean * mean, 0.0) if math.isfinite(mean) else float("nan")
            stats[name] = {"num": n, "mean": mean, "std": math.sqrt(var) if math.isfinite(var) else float("nan")}
        walltime = time.time() if walltime is None else walltime
        if self._jsonl is not None:
            line = {k: {kk: (vv if math.isfinite(vv) else None) for kk, vv in v.items()} for k, v in stats.items()}
            line["timestamp"] = walltime
            self._jsonl.write(json.dumps(line) + "\n")
            self._jsonl.flush()
        if self._writer is not None:
            for name, v in stats.items():
                self._writer.add_scalar(name, v["mean"], global_step=step, walltime=walltime)
            self._writer.flush()
        return stats

    def scalar(self, name: str, value: float, step: int) -> None:
        """Write one scalar to TensorBoard now (metrics computed at snapshots, not per tick)."""
        if self._writer is not None:
            self._writer.add_scalar(name, value, global_step=step)
            self._writer.flush()

    def image(self, name: str, grid: np.ndarray, step: int) -> None:
        """Add a ``uint8 [H, W, C]`` image (a fakes grid) to TensorBoard under ``name``."""
        if self._writer is not None:
            self._writer.add_image(name, grid, global_step=step, dataformats="HWC")
            self._writer.flush()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_time(seconds: float) -> str:
    """``1h 02m 03s`` or ``2m 03s``: the log's elapsed-time format."""
    s = int(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"
