"""``torch.distributed`` for runs launched by ``torchrun``: setup, batch sharding, reductions.

Used by both packages (``gan.train`` and ``classify.train``). We launch nothing
ourselves: ``torchrun`` starts one process per GPU (or per CPU worker) and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`session` reads them, picks ``cuda:LOCAL_RANK`` (NCCL) or the CPU (gloo) and
initializes the process group. Without those variables (or with ``WORLD_SIZE=1``)
nothing is initialized and every function here is the single-process identity, so
the training code has one path.

Failures. The process group is created with a collective timeout (``timeout_s``,
``--dist-timeout``): a rank that hangs makes the others' next collective raise after
that long, and a rank that dies closes its sockets, which gloo and NCCL report at once.
``torchrun`` then stops the remaining workers and exits non-zero (its default
``--max-restarts 0``). Checkpoints are written atomically by rank 0
(:func:`gan.checkpoint.save_checkpoint`), so the last complete one stays loadable.

Batch sharding for the GAN (:func:`shard_batch`). The minibatch-std layer of D
(Karras et al. 2018, sec. 3) groups sample ``i`` of a batch of ``N`` with the samples
``i + k N/G`` (:class:`gan.layers.MinibatchStd`), so D's output depends on which
samples share a forward pass. A rank therefore takes whole groups of the *global*
batch, laid out member-major (``[g + m K for m in range(G) for g in its groups]``,
``K = N / G``): the layer then forms on each rank exactly the groups it forms on the
whole batch in one process, and the trajectory does not depend on the world size or
on ``--batch-gpu`` (up to the order of float reductions). With one rank and one
round the layout is ``0, 1, ..., N - 1``: single-process runs are unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch
import torch.distributed as dist

from gan.util import UserError

__all__ = [
    "DEFAULT_TIMEOUT_S", "BatchPlan", "env_world", "pick_device", "session", "is_distributed", "rank", "world_size",
    "is_rank0", "barrier", "broadcast_object", "all_reduce_", "all_reduce_grads", "reduce_stats",
    "all_gather_rows", "gather_features", "split_evenly", "shard_batch", "STOP_SIGNALS", "StopSignals",
    "agree_stop", "ignore_stop_signals",
]

#: Collective timeout (seconds) when none is given: long enough for a slow snapshot or
#: FID pass on rank 0, short enough that a hung rank does not hold a node for hours.
DEFAULT_TIMEOUT_S = 600.0


# ---------------------------------------------------------------------------- setup


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank_ = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank_)))
    except ValueError as exc:
        raise UserError(f"torchrun environment: WORLD_SIZE/RANK/LOCAL_RANK must be integers ({exc}); "
                        f"launch with `torchrun --nproc_per_node=N $(which mtf-gan) train ...`") from None
    if world < 1 or not 0 <= rank_ < world:
        raise UserError(f"torchrun environment: RANK={rank_} is not in [0, WORLD_SIZE={world}); "
                        f"launch with torchrun rather than setting these variables by hand")
    return rank_, world, local


def pick_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """The one device resolver of both packages: ``auto`` (CUDA when visible, else CPU),
    ``cpu``, ``cuda`` or ``cuda:K``; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``.
    Asking for CUDA where torch sees no GPU is a :class:`UserError`, not a deep traceback."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu (slow) or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world > 1:
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise UserError(f"LOCAL_RANK={local_rank} but only {n} GPU(s) are visible on this node; "
                            f"launch at most {n} processes per node (--nproc_per_node={n})")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:K") from None


@contextlib.contextmanager
def session(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[torch.device]:
    """Join torchrun's process group (if launched by torchrun) and yield this rank's device.

    ``device``: ``auto``/``cuda``/``cpu`` (or ``cuda:K`` alone); under torchrun ``cuda``
    means ``cuda:LOCAL_RANK`` (made the current device) with NCCL, ``cpu`` uses gloo. Nested
    sessions reuse the outer group; the group is destroyed by the session that made it.
    """
    rank_, world, local = env_world()
    dev = pick_device(device, local, world)
    if world == 1 or dist.is_initialized():  # alone (the device as named), or inside an outer session
        if world > 1 and dev.type == "cuda":
            torch.cuda.set_device(dev)
        yield dev
        return
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = dev  # eager NCCL init: a missing peer fails here, not at step 1
    dist.init_process_group(backend=backend, init_method="env://", rank=rank_, world_size=world,
                            timeout=datetime.timedelta(seconds=float(timeout_s)), **kwargs)
    global _CPU_GROUP
    # A gloo group beside NCCL: small host-side agreements (stop after a signal) without a
    # device sync. Made by every rank at once, as new_group requires.
    _CPU_GROUP = dist.new_group(backend="gloo") if backend == "nccl" else None
    try:
        yield dev
    finally:
        _CPU_GROUP = None
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


_CPU_GROUP: Any = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    """True on the process that writes files (logs, TensorBoard, images, checkpoints)."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where collective buffers live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable; for paths and small messages)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ---------------------------------------------------------------------------- stop signals

#: What a scheduler or a user sends to stop a run cleanly: SIGTERM (torchrun forwards it to
#: its workers; SLURM ``--signal=TERM@120``; ``kill``), SIGUSR1 (SLURM ``--signal=USR1@120``
#: to a plain process; torchrun does not forward it) and SIGINT (Ctrl-C).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, n))


class StopSignals:
    """Trap :data:`STOP_SIGNALS` while a run trains: the first one only sets :attr:`received`
    (its name), so the loop can stop at a step boundary and write a checkpoint; a second
    SIGINT raises ``KeyboardInterrupt`` at once (checkpoints are atomic, so nothing written
    is lost either way). Handlers are restored on exit. Outside the main thread (a notebook
    worker, a test thread) nothing is trapped and ``received`` stays None."""

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def agree_stop(local: bool) -> bool:
    """True on every rank if any rank wants to stop (one CPU all-reduce of one int, over a gloo
    group also when training runs on NCCL, so no GPU sync); alone: ``local``."""
    if not is_distributed():
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_CPU_GROUP)
    return bool(flag.item())


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of data-loader workers: a scheduler that signals the whole process
    group (SLURM without ``B:``, Ctrl-C) must not kill the workers before the main process has
    written its checkpoint; the main process ends them itself."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# ---------------------------------------------------------------------------- reductions


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place over all ranks (``sum``, ``min`` or ``max``); returns ``t``. Identity alone."""
    if not is_distributed():
        return t
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    buf = t if t.device == _comm_device() else t.to(_comm_device())
    dist.all_reduce(buf, op=ops[op])
    if buf is not t:
        t.copy_(buf)
    return t


def all_reduce_grads(params: Iterable[torch.nn.Parameter], op: str = "sum") -> None:
    """Sum (``op='sum'``) or average (``'mean'``) the gradients of ``params`` over ranks.

    One flattened all-reduce for the whole list (StyleGAN2-ADA does the same, rather
    than DDP's bucket hooks, because each phase touches a different parameter subset
    and some phases run on some steps only). Parameters without ``.grad`` are left out,
    as a single-process optimizer leaves them alone; the set with gradients must be the
    same on every rank (it is when every rank runs the phase on at least one sample).
    The GAN trainer pre-scales each rank's loss by its share of the global batch and
    sums, which averages correctly when ranks hold different numbers of samples.
    """
    params = [p for p in params if p.grad is not None]
    if not is_distributed() or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])  # [sum of numels]
    all_reduce_(flat)
    if op == "mean":
        flat /= world_size()
    elif op != "sum":
        raise ValueError(f"all_reduce_grads: op must be 'sum' or 'mean', got {op!r}")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def reduce_stats(acc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum per-name moments ``{name: float64 [count, sum, sum of squares]}`` over ranks.

    The monitor's accumulators (:class:`gan.monitor.Monitor`) are such moments, so the
    reduced ones give the mean and std over the global batch. Names reported on some
    ranks only (a rank with no rows in a phase) are included with zeros elsewhere.
    Returns a new dict on the original devices; the input is left alone.
    """
    if not is_distributed():
        return acc
    names_per_rank: list[Any] = [None] * world_size()
    dist.all_gather_object(names_per_rank, sorted(acc))
    names = sorted(set().union(*names_per_rank))
    if not names:
        return {}
    dev = _comm_device()
    table = torch.zeros([len(names), 3], dtype=torch.float64, device=dev)  # [names, 3]
    for i, name in enumerate(names):
        if name in acc:
            table[i] = acc[name].to(dev, torch.float64)
    dist.all_reduce(table)
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        like = acc.get(name)
        out[name] = table[i].clone() if like is None else table[i].to(like.device)
    return out


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``[n_r, ...]`` of every rank in rank order; ``n_r`` may differ per rank.

    Rows are padded to the largest count for the collective and trimmed afterwards.
    Returned on ``x``'s device.
    """
    if not is_distributed():
        return x
    dev = _comm_device()
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=dev)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    counts_ = [int(c) for c in counts]
    width = max(counts_)
    buf = torch.zeros([width, *x.shape[1:]], dtype=x.dtype, device=dev)  # [max n_r, ...]
    buf[:x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(buf) for _ in counts_]
    dist.all_gather(parts, buf)
    return torch.cat([p[:c] for p, c in zip(parts, counts_)]).to(x.device)


def gather_features(features: torch.Tensor, order: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Features extracted from shards on every rank -> the features of the whole set.

    Sharded FID: each rank runs :func:`gan.extractors.extract_features` on its share of
    the images (e.g. fakes of seeds ``rank, rank + W, ...``) and calls this with
    ``features`` ``[n_r, D]`` and, optionally, the global indices ``order`` ``[n_r]`` of
    its rows; every rank gets ``[N, D]`` in index order (rank order without ``order``).
    FID is then computed once from the full set, so it does not depend on the world size.
    """
    feats = all_gather_rows(features)  # [N, D]
    if order is None:
        return feats
    idx = all_gather_rows(order.to(torch.int64).reshape(-1))  # [N]
    out = torch.empty_like(feats)
    out[idx.to(feats.device)] = feats
    return out


# ---------------------------------------------------------------------------- GAN batch plan


def split_evenly(n: int, parts: int) -> list[int]:
    """``n`` items over ``parts``: the first ``n % parts`` get one more (``[3, 3, 2]`` for 8, 3)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class BatchPlan:
    """Which rows of a global batch this rank computes, in which forward passes ("rounds").

    ``rounds[k]`` is a list of global row indices (one forward/backward pass each; the
    rank's data order is their concatenation). ``global_batch`` is the batch the rows
    index into; ``rounds_per_rank`` is the number of rounds of every rank (all ranks
    know it, so collectives inside a round can be used only when it is 1 everywhere).
    """

    global_batch: int
    rounds: tuple[tuple[int, ...], ...]
    rounds_per_rank: tuple[int, ...]

    @property
    def rows(self) -> list[int]:
        return [i for r in self.rounds for i in r]


def shard_batch(global_batch: int, group: int, world: int, rank_: int, batch_gpu: Optional[int] = None,
                what: str = "--batch") -> BatchPlan:
    """The rows of ``global_batch`` for ``rank_`` of ``world``, in rounds of ``batch_gpu``.

    ``group`` is the effective minibatch-std group size (1 when the network has no such
    layer, or for G-only phases): ranks and rounds take whole groups, laid out so that
    :class:`gan.layers.MinibatchStd` forms the groups of the one-process batch (module
    docstring). Groups are split as evenly as possible, so any number of processes works
    as long as each gets at least one group; ``batch_gpu`` (a multiple of ``group``)
    caps the rows of one forward pass.
    """
    n, g = global_batch, group
    assert n % g == 0, (n, g)
    k = n // g  # number of groups
    if k < world and g == 1:
        raise UserError(f"{what} {n} is smaller than the {world} processes: every process needs at least one "
                        f"sample; raise it to at least {world} or run fewer processes")
    if k < world:
        raise UserError(
            f"{what} {n} gives {k} minibatch-std group(s) of {g}, fewer than the {world} processes; "
            f"every process needs at least one group: raise {what} to at least {world * g}"
            + (" or lower network.mbstd_group_size" if g > 1 else "") + f", or run fewer processes")
    if batch_gpu is not None and (batch_gpu < g or batch_gpu % g):
        raise UserError(f"--batch-gpu {batch_gpu} must be a multiple of the minibatch-std group size {g} "
                        f"(each forward pass holds whole groups); use e.g. --batch-gpu {max(g, batch_gpu // g * g)}")
    per_rank = split_evenly(k, world)
    per_round = k if batch_gpu is None else batch_gpu // g

    def rounds_of(r: int) -> list[tuple[int, ...]]:
        g0 = sum(per_rank[:r])
        out = []
        for a in range(g0, g0 + per_rank[r], per_round):
            b = min(a + per_round, g0 + per_rank[r])
            out.append(tuple(gi + m * k for m in range(g) for gi in range(a, b)))
        return out

    counts = tuple(len(rounds_of(r)) for r in range(world))
    return BatchPlan(global_batch=n, rounds=tuple(rounds_of(rank_)), rounds_per_rank=counts)
