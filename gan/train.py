"""The StyleGAN2-ADA training loop: phases, EMA, ADA, ticks, snapshots, resume.

``train(cfg, run_dir)`` is a plain function (a test or a notebook calls it directly);
``mtf-gan train`` is a thin shell around it. One training *step* consumes one global
batch of reals and runs the phases of :mod:`gan.loss` (``Gmain`` every step, ``Greg``
every ``pl_interval``, ``Dmain`` every step, ``Dreg`` every ``r1_interval``), each
followed by ``nan_to_num`` on the gradients and an Adam step; then the EMA generator
is updated and the ADA controller counts the step (Karras et al. 2020, ADA, sec. 3).

Progress is counted in images (``cur_nimg``; ticks and snapshots in kimg). Every tick
(``tick_kimg``) the statistics are flushed to ``stats.jsonl`` and TensorBoard and the
losses are checked for non-finite values (only then: a check every step would force a
GPU sync); every ``snap_kimg``, and at the end, ``fakes-<kimg>.png`` and
``checkpoint-<kimg>.pt`` are written.

Data parallel (``torchrun``, :mod:`gan.distributed`). ``train.batch`` is the global
batch; each rank computes its rows (:func:`gan.distributed.shard_batch`: whole
minibatch-std groups, split as evenly as the groups allow, any number of ranks), in
rounds of at most ``train.batch_gpu`` rows. Each call's loss is scaled by its share of
the global batch and the gradients of a phase are summed over ranks with one flattened
all-reduce, so every rank takes the same Adam step. Path-length means, ``w_avg``, ADA's
sign statistics, the non-finite guard and the tick statistics are reduced over ranks
too; only rank 0 writes files. The trajectory equals the one-process run with the same
global batch up to the order of float reductions, so a checkpoint resumes on any
number of ranks.

Exact resume. Nothing random depends on RNG state carried from step to step: every
draw is a function of ``(seed, cur_nimg, phase)`` (:class:`gan.loss.StepRandom`) and
the data order comes from :class:`InfiniteSampler` started at ``cur_nimg``. A
checkpoint holds the networks, both optimizers' moments, the EMA generator, the ADA
controller, ``pl_mean`` and the counters, so a run resumed from a snapshot continues
bit-identically on the same device and thread count (``tests/gan/test_train.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import numpy as np
import torch

from gan import distributed as dist
from gan import monitor
from gan.augment import AdaController, AugmentConfig, AugmentPipe
from gan.checkpoint import checkpoint_name, load_checkpoint, save_checkpoint
from gan.config import ConfigError, dump_config, from_dict, save_config, to_dict
from gan.loss import LossConfig, StepRandom, StyleGAN2Loss, lazy_adam, nan_to_num_grads
from gan.networks import NetworkConfig, build_discriminator, build_generator, num_parameters
from gan.util import UserError, atomic_path

__all__ = [
    "DataConfig", "OptimConfig", "TrainConfig", "RunConfig", "InfiniteSampler",
    "open_dataset", "resolve_config", "check_config", "describe", "dry_run", "train", "pick_device",
    "images_to_uint8", "make_grid", "TrainingDiverged", "auto_settings", "load_run_config", "batch_plans",
]

log = logging.getLogger(monitor.LOGGER_NAME)


# ----------------------------------------------------------------------------
# Config.


@dataclass(frozen=True)
class DataConfig:
    """The training archive (``mtf-gan prepare`` output) and how it is read."""

    path: str = ""          # --data: the prepared zip (or its unzipped folder)
    cond: bool = False      # --cond: condition G and D on the archive's labels
    mirror: bool = False    # --mirror: add x-flipped copies (doubles the set)
    workers: int = 2        # DataLoader worker processes; 0 loads in the main process

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"data.workers={self.workers} must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """Adam for G and D (StyleGAN2-ADA: lr 0.0025, betas (0, 0.99), eps 1e-8), before the
    lazy-regularization correction of :func:`gan.loss.lazy_adam`."""

    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not (self.g_lr > 0 and self.d_lr > 0):
            raise ValueError(f"optim: learning rates must be > 0, got g_lr={self.g_lr}, d_lr={self.d_lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas={list(self.betas)} must lie in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """The loop: batch, length, schedule of ticks and snapshots, EMA, seed, device."""

    batch: int = 32                     # --batch: global batch (images per step)
    kimg: float = 25000.0               # --kimg: train until this many thousand real images
    tick_kimg: float = 4.0              # log, report and check losses every N kimg
    snap_kimg: float = 200.0            # --snap: fakes grid + checkpoint every N kimg (and at the end)
    ema_kimg: float = 10.0              # EMA half-life in kimg (published rule: batch * 10 / 32)
    ema_rampup: Optional[float] = 0.05  # half-life at most this fraction of cur_nimg early on; null = off
    seed: int = 0                       # --seed: initialisation and every random draw
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tf32: bool = False                  # allow TF32 matmuls/convs on Ampere+ GPUs (published: off)
    threads: Optional[int] = None       # torch CPU threads; null = torch's default (one per core)
    batch_gpu: Optional[int] = None     # --batch-gpu: at most this many rows per forward pass
                                        # (gradient accumulation); null = a rank's whole share
    grid: tuple[int, int] = (8, 4)      # fakes grid: columns, rows
    metrics: tuple[str, ...] = ()       # --metrics: fid<N>k / kid<N>k of G_ema at every snapshot
    inception_weights: Optional[str] = None  # Inception file for metrics (null: torch's hub cache)
    metrics_cache: Optional[str] = None      # real-feature cache (null: <outdir>/.metrics-cache)

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"train.batch={self.batch} must be >= 1")
        for k in ("kimg", "tick_kimg", "snap_kimg"):
            if not getattr(self, k) > 0:
                raise ValueError(f"train.{k}={getattr(self, k)} must be > 0")
        if self.ema_kimg < 0:
            raise ValueError(f"train.ema_kimg={self.ema_kimg} must be >= 0")
        if self.seed < 0:
            raise ValueError(f"train.seed={self.seed} must be >= 0")
        if self.batch_gpu is not None and self.batch_gpu < 1:
            raise ValueError(f"train.batch_gpu={self.batch_gpu} must be >= 1 (or null for a rank's whole share)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"train.threads={self.threads} must be >= 1 (or null for torch's default)")
        if min(self.grid) < 1:
            raise ValueError(f"train.grid={list(self.grid)} needs at least one column and row")
        from gan.metrics import parse_training_metrics

        try:
            parse_training_metrics(self.metrics)
        except UserError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved as ``config.yaml`` and in every checkpoint.

    ``network.img_resolution``, ``img_channels`` and ``c_dim`` follow the data set
    (:func:`resolve_config`); the values in a preset are placeholders.
    """

    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the message names the phase and the kimg."""


# ----------------------------------------------------------------------------
# Data.


class InfiniteSampler(torch.utils.data.Sampler):
    """Dataset indices for global image positions ``start, start + 1, ...``, forever.

    Position ``i`` is element ``i % n`` of a permutation seeded by ``(seed, i // n)``
    (a fresh shuffle per epoch), so the data order is a function of the position alone:
    a run resumed at ``cur_nimg`` reads the images the uninterrupted run would have. With
    several ranks, rank ``r`` takes rows ``[r b, (r + 1) b)`` of each global batch of
    ``b * world_size`` positions, or, when ``rows`` is given, those rows of each global
    batch of ``batch`` positions in that order (the trainer's
    :func:`gan.distributed.shard_batch` layout).
    """

    def __init__(self, n: int, seed: int, start: int = 0, batch: int = 1, rank: int = 0, world_size: int = 1,
                 rows: Optional[list[int]] = None):
        assert n > 0 and (rows is not None or batch % world_size == 0)
        self.n, self.seed, self.start = n, seed, start
        self.batch, self.rank, self.world_size = batch, rank, world_size
        self.rows = None if rows is None else list(rows)
        self._perm: tuple[int, Optional[torch.Tensor]] = (-1, None)

    def _index(self, pos: int) -> int:
        epoch = pos // self.n
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) & ((1 << 63) - 1))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][pos % self.n])

    def __iter__(self) -> Iterator[int]:
        local = self.batch // self.world_size
        rows = self.rows if self.rows is not None else range(self.rank * local, (self.rank + 1) * local)
        base = self.start
        while True:
            for j in rows:
                yield self._index(base + j)
            base += self.batch


def open_dataset(data: DataConfig):
    """The :class:`gan.dataset.ImageDataset` of ``data``, with errors that say what to pass."""
    from gan.dataset import ImageDataset

    if not data.path:
        raise UserError("no training data: pass --data ARCHIVE.zip (made by `mtf-gan prepare`)")
    return ImageDataset(data.path, mirror=data.mirror, use_labels=data.cond)


def resolve_config(cfg: RunConfig, dataset) -> RunConfig:
    """Set ``network.img_resolution``, ``img_channels`` and ``c_dim`` from the data set."""
    res = dataset.resolution
    if res < 4 or res & (res - 1) or dataset.image_shape[1] != dataset.image_shape[2]:
        raise UserError(f"dataset {cfg.data.path}: images are {dataset.image_shape[1]}x{dataset.image_shape[2]}; "
                        f"training needs square images whose side is a power of two >= 4: "
                        f"prepare it again with `mtf-gan prepare --resolution 64` (or 128, 256)")
    try:
        net = dataclasses.replace(cfg.network, img_resolution=res, img_channels=dataset.num_channels,
                                  c_dim=dataset.label_dim if cfg.data.cond else 0)
    except (ConfigError, ValueError) as exc:
        raise UserError(f"network config does not fit the data set {cfg.data.path}: {exc}") from None
    return dataclasses.replace(cfg, network=net)


def batch_plans(cfg: RunConfig, world_size: int = 1, rank: int = 0) -> tuple[dist.BatchPlan, dist.BatchPlan]:
    """This rank's rows of the main phases' global batch (whole minibatch-std groups) and
    of the path-length batch ``batch / pl_batch_shrink``, in rounds of ``batch_gpu``.

    Raises :class:`UserError` when the batch cannot give every rank a share.
    """
    t, net = cfg.train, cfg.network
    group = min(net.mbstd_group_size, t.batch) if net.mbstd_num_channels > 0 else 1
    main = dist.shard_batch(t.batch, group, world_size, rank, t.batch_gpu, what="--batch")
    gb = max(t.batch // cfg.loss.pl_batch_shrink, 1) if cfg.loss.pl_weight > 0 else t.batch
    greg_gpu = None if t.batch_gpu is None else max(t.batch_gpu // cfg.loss.pl_batch_shrink, 1)
    greg = dist.shard_batch(gb, 1, world_size, rank, greg_gpu, what="--batch / loss.pl_batch_shrink")
    return main, greg


def check_config(cfg: RunConfig, dataset, world_size: int = 1) -> None:
    """Guards that fail fast, before any network is built or any file is written
    (``world_size``: the torchrun processes that will share each batch)."""
    t, lc = cfg.train, cfg.loss
    if cfg.data.cond and not dataset.has_labels:
        raise UserError(f"--cond: {cfg.data.path} has no labels; prepare it with --labels (e.g. "
                        f"`mtf-gan prepare SRC DEST --labels attributes.csv --label-column gender`) "
                        f"or train without --cond")
    if len(dataset) < t.batch:
        raise UserError(f"dataset {cfg.data.path} has {len(dataset)} images, fewer than --batch {t.batch}; "
                        f"lower --batch (or add --mirror to double the set)")
    group = min(cfg.network.mbstd_group_size, t.batch)
    if t.batch % group:
        raise UserError(f"--batch {t.batch} is not divisible by the minibatch-std group size {group}; "
                        f"use a multiple of {group} or --set network.mbstd_group_size=<divisor of the batch>")
    if lc.pl_weight > 0 and t.batch % lc.pl_batch_shrink:
        raise UserError(f"--batch {t.batch} is not divisible by loss.pl_batch_shrink={lc.pl_batch_shrink}; "
                        f"use an even batch or --set loss.pl_batch_shrink=1")
    if lc.pl_weight > 0:
        pl_batch = t.batch // lc.pl_batch_shrink
        if pl_batch < 1:
            raise UserError(f"--batch {t.batch} is smaller than loss.pl_batch_shrink={lc.pl_batch_shrink}")
    batch_plans(cfg, world_size)  # every rank gets a share (raises with the fix otherwise)
    if t.metrics:
        from gan.metrics import resolve_inception_weights

        resolve_inception_weights(t.inception_weights)  # a missing file stops here, not after hours


def describe(cfg: RunConfig, dataset_name: str) -> str:
    """Run-folder description, e.g. ``mtf-32-cond-batch16-gamma0.0064``."""
    parts = [dataset_name, "cond" if cfg.data.cond else None, "mirror" if cfg.data.mirror else None,
             f"batch{cfg.train.batch}", f"gamma{cfg.loss.r1_gamma:g}"]
    return "-".join(p for p in parts if p)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (slow) or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------
# Images.


def images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """float ``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, C, H, W]`` (the published mapping)."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, cols: int, rows: int) -> np.ndarray:
    """uint8 ``[cols * rows, C, H, W]`` -> uint8 ``[rows H, cols W, 3]`` (grayscale repeated)."""
    n, c, h, w = images.shape
    assert n == cols * rows, (n, cols, rows)
    x = images.cpu().reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    if c == 1:
        x = x.repeat(1, 1, 3)
    return x.numpy()


def _save_png(path: Path, grid: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grid, "RGB").save(tmp, format="PNG")


def _grid_setup(dataset, cfg: RunConfig, device: torch.device):
    """Reals for ``reals.png`` and the fixed z, c of every fakes grid.

    Conditional runs give each row one label (cycling through the distinct labels of the
    data), so the grid shows what each class looks like.
    """
    cols, rows = cfg.train.grid
    n = cols * rows
    labels = dataset.labels if cfg.data.cond else torch.zeros(len(dataset.names), 0)  # [n_img, c_dim]
    g = torch.Generator().manual_seed(cfg.train.seed)
    # A seeded shuffle: archives are sorted by source path, so the first images are often
    # all of one person; a random sample shows the data's variety.
    order = torch.randperm(len(dataset.names), generator=g)  # [n_img]
    if cfg.data.cond:
        uniq, inverse = torch.unique(labels, dim=0, return_inverse=True)
        groups = [order[inverse[order] == k].tolist() for k in range(len(uniq))]
        idx = []
        for r in range(rows):  # row r: class r % K, the next unused images of that class
            grp = groups[r % len(groups)]
            idx += [grp[((r // len(groups)) * cols + col) % len(grp)] for col in range(cols)]
    else:
        idx = [int(order[i % len(order)]) for i in range(n)]
    reals = torch.stack([dataset[i][0] for i in idx])  # [n, C, H, W] uint8
    c = labels[idx].to(device)  # [n, c_dim]
    z = torch.randn([n, cfg.network.z_dim], generator=g).to(device)  # [n, z_dim]
    return reals, z, c


@torch.no_grad()
def _fakes(G_ema: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """uint8 ``[n, C, H, W]`` from the EMA generator with constant noise (comparable over time)."""
    out = [images_to_uint8(G_ema(zz, cc, noise_mode="const")) for zz, cc in zip(z.split(chunk), c.split(chunk))]
    return torch.cat(out)


# ----------------------------------------------------------------------------
# Dry run.


def dry_run(cfg: RunConfig) -> str:
    """The resolved config as YAML plus G and D parameter counts (nothing is written)."""
    dataset = open_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    check_config(cfg, dataset)
    with torch.random.fork_rng(devices=[]):  # sizes only; leave the caller's RNG alone
        G, D = build_generator(cfg.network), build_discriminator(cfg.network)
    return (dump_config(cfg)
            + f"# dataset: {len(dataset)} images{' (with mirror copies)' if cfg.data.mirror else ''}, "
            f"{dataset.resolution}x{dataset.resolution}, label_dim {dataset.label_dim}\n"
            + f"# G parameters: {num_parameters(G):,}\n# D parameters: {num_parameters(D):,}\n")


# ----------------------------------------------------------------------------
# The loop.


@dataclass
class _Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _format_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def train(cfg: RunConfig, run_dir: str | Path, resume: Optional[str | Path] = None, progress: bool = True,
          console: bool = True, dist_timeout: float = dist.DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Train per ``cfg`` into the existing folder ``run_dir``; returns a summary dict.

    ``resume``: a checkpoint to continue from (its network config must equal ``cfg``'s;
    counters, optimizers, EMA, ADA state and ``pl_mean`` come from it). ``progress``
    shows a tqdm bar; ``console`` logs to stdout besides ``log.txt``.

    Raises :class:`gan.util.UserError` for bad input (before anything heavy starts) and
    :class:`TrainingDiverged` when a loss turns non-finite (checked at tick boundaries;
    the last good checkpoint is kept).

    Under ``torchrun`` every rank calls this with the same arguments (``run_dir`` is
    written by rank 0 only); ``dist_timeout`` (seconds) bounds every collective, so a
    hung rank ends the job. Without torchrun it is a plain single-process run.
    """
    with dist.session(cfg.train.device, dist_timeout) as device:
        return _train_on(cfg, Path(run_dir), device, resume, progress, console)


def _train_on(cfg: RunConfig, run_dir: Path, device: torch.device, resume: Optional[str | Path], progress: bool,
              console: bool) -> dict[str, Any]:
    rank0 = dist.is_rank0()
    dataset = open_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    check_config(cfg, dataset, dist.world_size())
    state = load_checkpoint(resume) if resume is not None else None
    if state is not None:
        saved = from_dict(RunConfig, state["config"]).network
        if saved != cfg.network:
            diff = [f"{f.name} {getattr(saved, f.name)!r} (checkpoint) vs {getattr(cfg.network, f.name)!r}"
                    for f in dataclasses.fields(NetworkConfig) if getattr(saved, f.name) != getattr(cfg.network, f.name)]
            raise UserError(f"--resume {resume}: the network differs from this run's: {'; '.join(diff)}; "
                            f"resume with the checkpoint's config (omit --config) or start a new run")

    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    monitor.setup_logging(run_dir, rank=dist.rank(), console=console)
    threads = torch.get_num_threads()
    if cfg.train.threads is not None:
        # Small networks on a busy CPU: one thread is often fastest; several threads on
        # oversubscribed cores can be tens of times slower (OpenMP barriers wait on
        # descheduled threads).
        torch.set_num_threads(cfg.train.threads)
    try:
        with monitor.Monitor(run_dir, rank=dist.rank()) as mon:
            return _train(cfg, run_dir, device, dataset, state, resume, mon, progress and rank0)
    finally:
        torch.set_num_threads(threads)
        monitor.close_logging()


def _train(cfg: RunConfig, run_dir: Path, device: torch.device, dataset, state: Optional[dict],
           resume: Any, mon: monitor.Monitor, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    t, seed = cfg.train, cfg.train.seed
    start_time = time.time()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
    log.info("run folder: %s", run_dir)
    log.info("device: %s%s; torch %s, %d threads", device,
             f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else " (float32)",
             torch.__version__, torch.get_num_threads())
    rank0, world = dist.is_rank0(), dist.world_size()
    main_plan, greg_plan = batch_plans(cfg, world, dist.rank())
    if world > 1 or len(main_plan.rounds) > 1:
        log.info("data parallel: %d process(es), global batch %d; rank 0 computes %d rows in %d round(s)",
                 world, t.batch, len(main_plan.rows), len(main_plan.rounds))
    log.info("dataset: %r", dataset)

    # Networks: initialisation is a function of the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = build_generator(cfg.network).train().requires_grad_(False).to(device)
        D = build_discriminator(cfg.network).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    log.info("G: %s parameters; D: %s parameters", f"{sum(p.numel() for p in G.parameters()):,}",
             f"{sum(p.numel() for p in D.parameters()):,}")

    pipe = None
    if cfg.augment.mode != "none":
        pipe = AugmentPipe.from_config(cfg.augment).train().requires_grad_(False).to(device)
    ada = AdaController(cfg.augment)
    loss = StyleGAN2Loss(G, D, cfg.loss, augment_pipe=pipe, device=device)

    lc, oc = cfg.loss, cfg.optim
    g_reg = lc.pl_interval if lc.pl_weight > 0 else None
    d_reg = lc.r1_interval if lc.r1_gamma > 0 else None
    G_opt = lazy_adam(G.parameters(), oc.g_lr, oc.betas, oc.eps, g_reg)
    D_opt = lazy_adam(D.parameters(), oc.d_lr, oc.betas, oc.eps, d_reg)
    phases = [_Phase("Gmain", G, G_opt, 1)]
    if g_reg:
        phases.append(_Phase("Greg", G, G_opt, g_reg))
    phases.append(_Phase("Dmain", D, D_opt, 1))
    if d_reg:
        phases.append(_Phase("Dreg", D, D_opt, d_reg))

    cur_nimg, batch_idx, tick = 0, 0, 0
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        G_opt.load_state_dict(state["G_opt"])
        D_opt.load_state_dict(state["D_opt"])
        # ADA's sign statistics are saved reduced over ranks: rank 0 resumes with them.
        ada.load_state_dict(state["ada_stats"] if rank0 else {**state["ada_stats"], "signs_sum": 0.0,
                                                               "signs_count": 0.0})
        loss.pl_mean.copy_(state["pl_mean"].to(device))
        cur_nimg, batch_idx = int(state["cur_nimg"]), int(state["batch_idx"])
        tick = int(state.get("tick", 0))
        log.info("resumed from %s at kimg %.3f", resume, cur_nimg / 1000)
    if pipe is not None:
        pipe.p = ada.p

    label_table = (dataset.labels if cfg.data.cond else torch.zeros(len(dataset.names), 0)).to(device)
    grid_reals, grid_z, grid_c = _grid_setup(dataset, cfg, device)
    cols, rows = t.grid
    if state is None and rank0:
        _save_png(run_dir / "reals.png", make_grid(grid_reals, cols, rows))
        init = make_grid(_fakes(G_ema, grid_z, grid_c), cols, rows)
        _save_png(run_dir / "fakes_init.png", init)
        mon.image("Fakes", init, 0)

    # In-training metrics: every rank generates and extracts its share of the fakes (and of
    # the uncached reals); rank 0 computes the values and writes them.
    evaluator = _metric_evaluator(cfg, run_dir, device, mon) if t.metrics else None

    sampler = InfiniteSampler(len(dataset), seed, start=cur_nimg, batch=t.batch, rows=main_plan.rows)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=len(main_plan.rows), sampler=sampler, num_workers=cfg.data.workers,
        pin_memory=device.type == "cuda", prefetch_factor=2 if cfg.data.workers > 0 else None,
        persistent_workers=False)
    data_iter = iter(loader)

    total_nimg = int(round(t.kimg * 1000))
    tick_nimg, snap_nimg = max(int(t.tick_kimg * 1000), 1), max(int(t.snap_kimg * 1000), 1)
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    # Non-finite guard: per phase, the first cur_nimg with a non-finite loss (-1 = none), on device.
    first_bad = {p.name: torch.full([], -1, dtype=torch.int64, device=device) for p in phases}
    last_stats: dict[str, Any] = {}
    last_ckpt: Optional[Path] = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info("training from kimg %.3f to %.3f (batch %d, tick %g kimg, snapshot %g kimg)",
             cur_nimg / 1000, total_nimg / 1000, t.batch, t.tick_kimg, t.snap_kimg)
    bar = tqdm(total=total_nimg, initial=cur_nimg, unit="img", unit_scale=True, dynamic_ncols=True,
               disable=not progress, file=sys.stderr, desc="train")

    done = cur_nimg >= total_nimg
    while not done:
        real_u8, real_c = next(data_iter)  # [b, C, H, W] uint8, [b, c_dim]: this rank's rows
        real_img = real_u8.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1  # [b, C, H, W] in [-1, 1]
        real_c = real_c.to(device, non_blocking=True)

        for ph in phases:
            if batch_idx % ph.interval != 0:
                continue
            _run_phase(ph, loss, greg_plan if ph.name == "Greg" else main_plan, real_img, real_c, label_table,
                       seed, cur_nimg, device, t.batch, ada, first_bad[ph.name])

        # EMA of G (Karras et al. 2018, appendix; half-life ema_kimg, ramped up early in training).
        with torch.no_grad():
            ema_nimg = t.ema_kimg * 1000
            if t.ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * t.ema_rampup)
            beta = 0.5 ** (t.batch / max(ema_nimg, 1e-8))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        cur_nimg += t.batch
        batch_idx += 1
        if ada.step(t.batch, all_reduce=dist.all_reduce_ if world > 1 else None) and pipe is not None:
            pipe.p = ada.p
        bar.update(t.batch)

        done = cur_nimg >= total_nimg
        snapshot = done or (cur_nimg // snap_nimg) > ((cur_nimg - t.batch) // snap_nimg)
        if not (snapshot or cur_nimg >= tick_start_nimg + tick_nimg):
            continue

        # ---- tick
        tick += 1
        if world > 1:  # every rank stops together, at the earliest bad step of any rank
            fbs = torch.stack(list(first_bad.values()))  # [phases] int64
            fbs = dist.all_reduce_(torch.where(fbs < 0, torch.full_like(fbs, 1 << 62), fbs), "min")
            for fb, v in zip(first_bad.values(), torch.where(fbs == 1 << 62, torch.full_like(fbs, -1), fbs)):
                fb.copy_(v)
        bad = {name: int(v) for name, v in first_bad.items() if int(v) >= 0}
        if bad:
            name, at = min(bad.items(), key=lambda kv: kv[1])
            bar.close()
            where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else (
                "no checkpoint of this run was written" if resume is None else f"resume from {resume} again")
            raise TrainingDiverged(
                f"training diverged: a non-finite loss in phase {name} at kimg {at / 1000:.3f} "
                f"(tick {tick}, checked at kimg {cur_nimg / 1000:.3f}); {where}. Lower the learning rate "
                f"(--set optim.g_lr=..., optim.d_lr=...) or raise --gamma, then --resume")
        now = time.time()
        tick_time = now - tick_start_time
        tick_kimg_done = (cur_nimg - tick_start_nimg) / 1000
        monitor.report("Progress/tick", tick)
        monitor.report("Progress/kimg", cur_nimg / 1000)
        monitor.report("Progress/augment_p", ada.p)
        monitor.report("Progress/pl_mean", loss.pl_mean)
        if math.isfinite(ada.last_rt):
            monitor.report("Progress/ada_rt", ada.last_rt)
        monitor.report("Timing/sec_per_tick", tick_time)
        monitor.report("Timing/sec_per_kimg", tick_time / max(tick_kimg_done, 1e-9))
        monitor.report("Timing/images_per_s", tick_kimg_done * 1000 / max(tick_time, 1e-9))
        monitor.report("Timing/total_hours", (now - start_time) / 3600)
        monitor.report("Resources/peak_rss_mb", _peak_rss_mb())
        if device.type == "cuda":
            monitor.report("Resources/peak_gpu_mem_gb", torch.cuda.max_memory_allocated(device) / 2 ** 30)
            torch.cuda.reset_peak_memory_stats(device)
        if world > 1:  # the monitor's per-name moments, summed over ranks (gan.distributed.reduce_stats)
            mon._acc = dist.reduce_stats(mon._acc)
        stats = mon.flush(cur_nimg)
        last_stats = {k: v["mean"] for k, v in stats.items()}

        def s(name: str) -> str:
            v = last_stats.get(name)
            return "-" if v is None else f"{v:.3f}"

        log.info("tick %d kimg %.3f time %s sec/kimg %.2f img/s %.1f augment %.3f | G %s pl %s | D %s r1 %s | rss %d MB",
                 tick, cur_nimg / 1000, _format_time(now - start_time), last_stats["Timing/sec_per_kimg"],
                 last_stats["Timing/images_per_s"], ada.p, s("Loss/G/main"), s("Loss/G/pl_length"),
                 s("Loss/D/main"), s("Loss/D/r1_penalty"), _peak_rss_mb())

        if snapshot:
            name = checkpoint_name(cur_nimg)[len("checkpoint-"):-len(".pt")]
            ada_state = ada.state_dict()
            if world > 1:  # save the sign statistics of all ranks (a resume on any world size continues them)
                signs = torch.tensor([ada_state["signs_sum"], ada_state["signs_count"]], dtype=torch.float64)
                ada_state["signs_sum"], ada_state["signs_count"] = dist.all_reduce_(signs).tolist()
            last_ckpt = run_dir / checkpoint_name(cur_nimg)
        if snapshot and rank0:
            grid = make_grid(_fakes(G_ema, grid_z, grid_c), cols, rows)
            _save_png(run_dir / f"fakes-{name}.png", grid)
            mon.image("Fakes", grid, cur_nimg)
            last_ckpt = save_checkpoint(run_dir / checkpoint_name(cur_nimg), {
                "config": to_dict(cfg),
                "cur_nimg": cur_nimg,
                "batch_idx": batch_idx,
                "tick": tick,
                "class_names": _class_names(dataset, cfg),
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                "G_opt": G_opt.state_dict(), "D_opt": D_opt.state_dict(),
                "augment_p": ada.p, "ada_stats": ada_state,
                "pl_mean": loss.pl_mean.detach().cpu().clone(),
                "stats": last_stats,
            })
            log.info("wrote %s and fakes-%s.png", last_ckpt.name, name)
        if snapshot and evaluator is not None:
            evaluator(G_ema, cur_nimg, last_ckpt)
        tick_start_nimg, tick_start_time = cur_nimg, time.time()

    bar.close()
    log.info("done: kimg %.3f in %s", cur_nimg / 1000, _format_time(time.time() - start_time))
    return {"run_dir": run_dir, "cur_nimg": cur_nimg, "checkpoint": last_ckpt, "stats": last_stats,
            "G": G, "D": D, "G_ema": G_ema}


def _metric_evaluator(cfg: RunConfig, run_dir: Path, device: torch.device, mon: monitor.Monitor):
    """``evaluate(G_ema, cur_nimg, checkpoint)`` for ``train.metrics``: each ``fid<N>k`` /
    ``kid<N>k`` of G_ema against the full training archive (the metrics protocol of
    :mod:`gan.metrics`), one row per metric appended to ``metrics.jsonl`` and the value
    sent to TensorBoard as ``Metrics/<name>`` at step ``cur_nimg``. Inception is loaded
    once; the real features are extracted once and cached in ``train.metrics_cache``."""
    import json

    from gan import metrics as M

    t = cfg.train
    wanted = M.parse_training_metrics(t.metrics)
    ex = M._load_extractors(tuple(sorted({kind for _, kind, _ in wanted})), device, t.inception_weights, None)
    cache = Path(t.metrics_cache) if t.metrics_cache else run_dir.parent / ".metrics-cache"

    def evaluate(G_ema: torch.nn.Module, cur_nimg: int, checkpoint: Path) -> dict[str, float]:
        values: dict[str, float] = {}
        for num in sorted({n for _, _, n in wanted}):  # one set of fakes per count, shared by fid and kid
            same = [(name, kind) for name, kind, n in wanted if n == num]
            res = M.evaluate_generator(G_ema, cfg.data.path, tuple(kind for _, kind in same), num=num, batch=64,
                                       device=device, cache_dir=cache, extractors=ex, sharded=True)
            if not res:  # not rank 0: its share is done, rank 0 writes
                continue
            info = {k: v for k, v in res.items() if k not in ("fid", "kid", "kid_std")}
            for name, kind in same:
                row = {"metric": name, "value": res[kind], **({"std": res["kid_std"]} if kind == "kid" else {}),
                       **info, "kimg": cur_nimg / 1000, "checkpoint": checkpoint.name}
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                mon.scalar(f"Metrics/{name}", res[kind], cur_nimg)
                log.info("metric %s %.4g at kimg %.3f (%d fakes vs %d reals, %.1f s)", name, res[kind],
                         cur_nimg / 1000, res["n_fake"], res["n_real"], res["seconds"])
                values[name] = res[kind]
        return values

    return evaluate


def _run_phase(ph: _Phase, loss: StyleGAN2Loss, plan: dist.BatchPlan, real_img: torch.Tensor, real_c: torch.Tensor,
               label_table: torch.Tensor, seed: int, cur_nimg: int, device: torch.device, batch: int,
               ada: AdaController, first_bad: torch.Tensor) -> None:
    """One phase on this rank's rows (``plan``, in rounds), gradients summed over ranks, one Adam step.

    Each round's loss is weighted by its share of the global batch, so the summed
    gradient is that of the global mean. What one process computes from the whole batch
    is rebuilt from reduced sums: the path-length mean (one all-reduce inside the round
    when every rank has one round; otherwise a first pass that measures the lengths)
    and the ``w_avg`` update (:class:`gan.networks.MappingNetwork` updates it from its
    own rows; the global mean replaces that). A single process with one round takes
    none of these detours and computes exactly what it always did.
    """
    world = dist.world_size()
    split = world > 1 or max(plan.rounds_per_rank) > 1
    mapping = loss.G.mapping
    w_avg = getattr(mapping, "w_avg", None)
    w_sync = split and w_avg is not None and getattr(mapping, "w_avg_beta", None) is not None
    w0 = w_avg.detach().clone() if w_sync else None
    loss.w_sum = torch.zeros([w_avg.numel() + 1], dtype=torch.float64, device=device) if w_sync else None

    ph.module.requires_grad_(True)
    ph.opt.zero_grad(set_to_none=True)
    pl0 = None
    if ph.name == "Greg" and split:
        pl0 = loss.pl_mean.detach().clone()
        if max(plan.rounds_per_rank) == 1:
            def pl_batch_mean(lengths: torch.Tensor) -> torch.Tensor:  # [m] -> mean over the global batch
                n = lengths.new_tensor(float(lengths.numel()), dtype=torch.float64)
                moments = torch.stack([lengths.sum().double(), n])
                dist.all_reduce_(moments)
                return (moments[0] / moments[1]).to(lengths.dtype)
        else:
            moments = torch.zeros([2], dtype=torch.float64, device=device)
            for rows in plan.rounds:
                rnd = StepRandom(seed, cur_nimg, ph.name, device=device, rows=rows, global_batch=plan.global_batch)
                _, _, lengths = loss.path_lengths(label_table, rnd, batch, create_graph=False, update_w_avg=False)
                moments += torch.stack([lengths.detach().sum().double(), moments.new_tensor(float(len(rows)))])
            dist.all_reduce_(moments)
            mean = (moments[0] / moments[1]).float()

            def pl_batch_mean(lengths: torch.Tensor) -> torch.Tensor:
                return mean
        loss.pl_batch_mean = pl_batch_mean

    offset = 0
    try:
        for rows in plan.rounds:
            if pl0 is not None:
                loss.pl_mean.copy_(pl0)  # every round moves pl_mean from the same value, once
            rnd = StepRandom(seed, cur_nimg, ph.name, device=device, rows=rows, global_batch=plan.global_batch)
            sl = slice(offset, offset + len(rows)) if ph.name != "Greg" else slice(None)
            offset += len(rows)
            terms = loss.accumulate_gradients(ph.name, real_img[sl], real_c[sl], label_table, rnd, batch,
                                              gain=ph.interval, weight=len(rows) / plan.global_batch)
            real_logits = terms.pop("real_logits", None)
            if real_logits is not None:
                ada.accumulate(real_logits)
            finite = torch.stack([torch.isfinite(v).all() for v in terms.values()]).all()
            first_bad.copy_(torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, cur_nimg), first_bad))
    finally:
        loss.pl_batch_mean = None
    ph.module.requires_grad_(False)
    if world > 1:
        dist.all_reduce_grads(ph.module.parameters())
    nan_to_num_grads(ph.module)
    ph.opt.step()

    if w_sync:
        moments = dist.all_reduce_(loss.w_sum)  # [w_dim + 1]: sum of w, count
        if moments[-1] > 0:
            with torch.no_grad():
                w_avg.copy_((moments[:-1] / moments[-1]).to(w_avg.dtype).lerp(w0, mapping.w_avg_beta))
        loss.w_sum = None


def _class_names(dataset, cfg: RunConfig) -> Optional[list[str]]:
    """Names of the label vector's entries (``column=value`` for several CSV columns), or None."""
    if not cfg.data.cond:
        return None
    if dataset.label_groups:
        return [f"{g['column']}={c}" for g in dataset.label_groups for c in g["classes"]]
    if isinstance(dataset.class_names, list):
        return [str(c) for c in dataset.class_names]
    return [str(i) for i in range(dataset.label_dim)]


def auto_settings(resolution: int) -> dict[str, Any]:
    """The published StyleGAN2-ADA ``auto`` rule for one GPU, as a config dict.

    batch = min(4096 / res, 32), gamma = 0.0002 res^2 / batch, EMA half-life = batch * 10 / 32
    kimg (ADA, appendix D; ``train.py --cfg=auto``). The presets ``configs/gan/mtf*.yaml``
    state these values; this is what a run without ``--config`` uses.
    """
    batch = max(min(4096 // resolution, 32), 1)
    return {"train": {"batch": batch, "ema_kimg": batch * 10 / 32},
            "loss": {"r1_gamma": 0.0002 * resolution ** 2 / batch}}


def load_run_config(path: Optional[str | Path], overrides: list[str], base: Optional[dict] = None) -> RunConfig:
    """Defaults <- ``base`` (a checkpoint's config when resuming) <- YAML preset ``path`` (a file,
    or a preset name such as ``mtf64``) <- overrides."""
    from gan.config import find_preset, load_config

    return load_config(RunConfig, find_preset("gan", path) if path is not None else None, overrides, base=base)
