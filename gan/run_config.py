"""The run config of ``mtf-gan train`` and the one place it is resolved and checked.

A run is described by one frozen :class:`RunConfig` (data, network, augment, loss, optim,
train), built from defaults <- a checkpoint's config (``--resume``) <- a YAML preset <- the
CLI's flags (typed values) <- ``--set`` strings (:func:`load_run_config`). Without a preset
the published StyleGAN2-ADA ``auto`` rule fills batch, gamma and EMA from the data's
resolution (:func:`auto_settings`, :func:`with_auto`). :func:`prepare_run` opens the archive
once, copies the data's resolution, channels and label size into the network config and
runs every guard that must fail before a folder is made or a network is built; the CLI and
:func:`gan.train.train` both go through it, and each does it once, inside
:func:`gan.transfer.prepare`, which first applies ``train.init`` (SRC's network and the
transfer conventions) and afterwards checks what a transfer and ``train.freeze_d`` need.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import torch

from gan import distributed as dist
from gan.augment import AugmentConfig
from gan.config import ConfigError, apply_values, dump_config, find_preset, from_dict, load_config, override_keys, to_dict
from gan.dataset import ImageDataset
from gan.loss import LossConfig
from gan.extractors import parse_training_metrics, resolve_inception_weights
from gan.networks import NetworkConfig, build_discriminator, build_generator, num_parameters
from gan.util import UserError

__all__ = [
    "DataConfig", "OptimConfig", "TrainConfig", "RunConfig", "open_dataset", "resolve_config", "check_config",
    "batch_plans", "describe", "dry_run", "auto_settings", "with_auto", "load_run_config", "prepare_run", "explicit_keys",
]


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
    metrics_cache: Optional[str] = None      # real-feature cache (null: $MTF_CACHE_DIR/stats)
    init: Optional[str] = None          # --init: the network this run started from (a .pkl or checkpoint;
                                        # recorded, applied only when the run starts: gan.transfer)
    freeze_d: int = 0                   # --freeze-d: freeze D's first N layers (Mo et al. 2020; as --freezed)
    keep: Optional[int] = None          # --keep: keep only the newest N checkpoints of the run; null = all

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
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"train.keep={self.keep} must be >= 1 (the newest checkpoint always stays), or null")
        if self.freeze_d < 0:
            raise ValueError(f"train.freeze_d={self.freeze_d} must be >= 0 (0 = train every layer of D)")
        if self.init is not None and not self.init.strip():
            raise ValueError("train.init is empty; pass --init SRC.pkl|checkpoint.pt or leave it null")
        if min(self.grid) < 1:
            raise ValueError(f"train.grid={list(self.grid)} needs at least one column and row")
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


# ---------------------------------------------------------------------------- resolve and check


def open_dataset(data: DataConfig) -> ImageDataset:
    """The :class:`gan.dataset.ImageDataset` of ``data``, with errors that say what to pass."""
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
    group = min(cfg.network.mbstd_group_size, t.batch) if cfg.network.mbstd_num_channels > 0 else 1
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
        resolve_inception_weights(t.inception_weights)  # a missing file stops here, not after hours


def describe(cfg: RunConfig, dataset_name: str) -> str:
    """Run-folder description, e.g. ``mtf-32-cond-batch16-gamma0.0064`` (``-init``, ``-freezed10``
    for a run started from another network, with Freeze-D)."""
    parts = [dataset_name, "cond" if cfg.data.cond else None, "mirror" if cfg.data.mirror else None,
             f"batch{cfg.train.batch}", f"gamma{cfg.loss.r1_gamma:g}", "init" if cfg.train.init else None,
             f"freezed{cfg.train.freeze_d}" if cfg.train.freeze_d else None]
    return "-".join(p for p in parts if p)


def dry_run(cfg: RunConfig, dataset: Optional[ImageDataset] = None) -> str:
    """The resolved config as YAML plus G and D parameter counts (nothing is written).
    ``dataset``: the archive :func:`prepare_run` already opened for this ``cfg``."""
    if dataset is None:
        cfg, dataset = prepare_run(cfg)
    with torch.random.fork_rng(devices=[]):  # sizes only; leave the caller's RNG alone
        G, D = build_generator(cfg.network), build_discriminator(cfg.network)
    return (dump_config(cfg)
            + f"# dataset: {len(dataset)} images{' (with mirror copies)' if cfg.data.mirror else ''}, "
            f"{dataset.resolution}x{dataset.resolution}, label_dim {dataset.label_dim}\n"
            + f"# G parameters: {num_parameters(G):,}\n# D parameters: {num_parameters(D):,}\n")


# ---------------------------------------------------------------------------- loading


def auto_settings(resolution: int) -> dict[str, Any]:
    """The published StyleGAN2-ADA ``auto`` rule for one GPU, as a config dict.

    batch = min(4096 / res, 32), gamma = 0.0002 res^2 / batch, EMA half-life = batch * 10 / 32
    kimg (ADA, appendix D; ``train.py --cfg=auto``). The presets ``configs/gan/mtf*.yaml``
    state these values; this is what a run without ``--config`` uses.
    """
    batch = max(min(4096 // resolution, 32), 1)
    return {"train": {"batch": batch, "ema_kimg": batch * 10 / 32},
            "loss": {"r1_gamma": 0.0002 * resolution ** 2 / batch}}


def load_run_config(path: Optional[str | Path], overrides: Iterable[str] = (), base: Optional[dict] = None,
                    values: Optional[dict[str, Any]] = None) -> RunConfig:
    """Defaults <- ``base`` (a checkpoint's config when resuming) <- YAML preset ``path`` (a file,
    or a preset name such as ``mtf64``) <- ``values`` (dotted keys to typed values: the CLI's
    flags) <- ``overrides`` (``--set`` strings)."""
    return load_config(RunConfig, find_preset("gan", path) if path is not None else None, list(overrides),
                       base=base, values=values)


def with_auto(cfg: RunConfig, resolution: int, explicit: Iterable[str] = ()) -> RunConfig:
    """``cfg`` with the :func:`auto_settings` of ``resolution`` for every key the user did not
    set (``explicit``: dotted keys given as flags or ``--set``). The same result as loading
    with the auto values as the base, without loading the config twice."""
    given = set(explicit)
    auto = {f"{group}.{k}": v for group, kv in auto_settings(resolution).items() for k, v in kv.items()}
    keep = {k: v for k, v in auto.items() if k not in given}
    if not keep:
        return cfg

    return from_dict(RunConfig, apply_values(RunConfig, to_dict(cfg), keep))


def prepare_run(cfg: RunConfig, world_size: Optional[int] = None, dataset: Optional[ImageDataset] = None
                ) -> tuple[RunConfig, ImageDataset]:
    """``(resolved cfg, dataset)``: open the archive (unless given), take the network's
    resolution, channels and label size from it, and run every guard of
    :func:`check_config` for ``world_size`` processes (default: torchrun's environment).
    Call it once per run: its result is what :func:`gan.train.train` and :func:`dry_run` take.
    Runs go through :func:`gan.transfer.prepare`, which wraps this with ``--init`` and ``--freeze-d``."""
    if dataset is None:
        dataset = open_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    check_config(cfg, dataset, dist.env_world()[1] if world_size is None else world_size)
    return cfg, dataset


def explicit_keys(values: dict[str, Any], overrides: Iterable[str]) -> list[str]:
    """Dotted keys the user set: flags given (not None) and ``--set`` keys."""
    return [k for k, v in values.items() if v is not None] + override_keys(overrides)
