"""How to train a classifier, whatever the model and task: the recipe, its schedule, its optimizer.

A **recipe** (:class:`Recipe`, YAML presets in ``configs/classify/``) composes three frozen
dataclasses, one per concern (:class:`DataConfig`, :class:`OptimConfig`,
:class:`TrainConfig`):

* ``notebook`` is the MTF authors' published recipe, as committed: ``Resize(224)``,
  ``ToTensor()``, no normalization, no augmentation, batch 16, cross-entropy, Adam lr 1e-5
  without weight decay, ``StepLR(step_size=20, gamma=0.001)`` stepped per epoch, up to
  1000 epochs, early stopping with patience 5 **on the training loss** (the notebook's
  message says validation, but it compares training losses), ImageNet weights for
  ConvNeXt-Base only. One difference: images are resized from our decoded cache (Lanczos
  to 256 px, then antialiased bilinear to 224) instead of from the JPEG.
* ``improved``: ImageNet weights for all, ImageNet normalization, random resized crop,
  flip and colour jitter, AdamW with linear warm-up and cosine decay (Loshchilov & Hutter
  2017, 2019), label smoothing 0.1 (Szegedy et al. 2016), early stopping on validation
  accuracy, AMP and channels-last on CUDA.
* ``demo``: ``tiny_cnn`` at 48 px from random weights, 15 epochs, for CPUs (about 8 s a task on
  2 cores for the 24-person synthetic tree of ``make demo``).

The learning rate is a function of the optimizer step (:func:`lr_factor`), so a resumed run
continues the schedule exactly where it stopped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from classify.models import MODELS
from gan.config import ConfigError, find_preset, from_dict, load_config
from gan.util import UserError

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "Recipe",
    "RunConfig",
    "resolve_recipe",
    "load_recipe",
    "recipe_from_dict",
    "lr_factor",
    "make_optimizer",
]


@dataclass(frozen=True)
class DataConfig:
    """Input pipeline: cache size, input size, normalization, augmentation, val carving."""

    input_size: int = 224          # side of the square the model sees
    cache_size: int = 256          # side of the decoded cache (>= input_size; 256 leaves room to crop)
    normalize: Literal["none", "imagenet"] = "none"
    random_resized_crop: bool = False
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area range of RandomResizedCrop
    hflip: bool = False
    color_jitter: float = 0.0      # brightness/contrast/saturation strength (0: off)
    val_fraction: float = 0.2      # share of each class carved from train when val/ is missing
    workers: int = 0               # processes for per-image augmentation (0: main process; unused without it)
    strict: bool = False           # stop at an unreadable image instead of skipping it

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"data.input_size {self.input_size} must be at least 8")
        if self.cache_size < self.input_size:
            raise ValueError(f"data.cache_size {self.cache_size} must be >= data.input_size {self.input_size}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"data.crop_scale {list(self.crop_scale)} must satisfy 0 < low <= high <= 1")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (a function of the step, see :func:`lr_factor`)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    momentum: float = 0.9          # sgd only
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_size: int = 20            # step: multiply by gamma every step_size epochs (StepLR)
    gamma: float = 0.001
    warmup_epochs: float = 0.0     # linear warm-up from 0 (cosine and constant)
    min_lr_ratio: float = 0.0      # cosine: final lr as a share of lr

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr {self.lr} must be positive")
        if self.step_size < 1:
            raise ValueError(f"optim.step_size {self.step_size} must be at least 1")


@dataclass(frozen=True)
class TrainConfig:
    """Epochs, batch, early stopping, loss and precision."""

    epochs: int = 1000
    batch_size: int = 16
    eval_batch_size: int = 64
    early_stop: Literal["train_loss", "val_loss", "val_acc", "none"] = "train_loss"
    patience: int = 5              # epochs without improvement before stopping
    min_delta: float = 0.0         # an improvement must beat the best by more than this
    label_smoothing: float = 0.0
    amp: bool = False              # mixed precision (CUDA only; bf16 where supported)
    channels_last: bool = False    # memory format (CUDA only)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("train.epochs, train.batch_size and train.eval_batch_size must be at least 1")
        if self.patience < 1:
            raise ValueError(f"train.patience {self.patience} must be at least 1")


@dataclass(frozen=True)
class Recipe:
    """How to train, whatever the model and task (``configs/classify/<name>.yaml``)."""

    name: str = "custom"
    #: models that start from ImageNet weights; ``all`` for every model that has them.
    pretrained: tuple[str, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        bad = [m for m in self.pretrained if m != "all" and m not in MODELS]
        if bad:
            raise ValueError(f"pretrained names unknown models {bad}; use 'all' or names from {list(MODELS)}")

    def uses_pretrained(self, model: str) -> bool:
        return MODELS[model].weights is not None and ("all" in self.pretrained or model in self.pretrained)


@dataclass(frozen=True)
class RunConfig:
    """What ``config.yaml`` in a run folder holds: the task, model, data and resolved recipe."""

    task: str
    model: str
    data: str
    recipe: Recipe = field(default_factory=Recipe)


def resolve_recipe(recipe: str | os.PathLike) -> Path:
    """A preset name (``notebook``, ``improved``, ``demo``) or a YAML path -> the YAML file
    (presets: the checkout's ``configs/classify`` or the installed copy)."""
    try:
        return find_preset("classify", recipe)
    except ConfigError as exc:
        raise UserError(f"recipe: {exc}") from None


def load_recipe(recipe: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Recipe defaults <- preset/YAML <- ``--set`` overrides (unknown keys are errors)."""
    return load_config(Recipe, resolve_recipe(recipe), overrides)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """The :class:`Recipe` stored as a plain dict in a checkpoint."""
    return from_dict(Recipe, d)


def lr_factor(o: OptimConfig, step: int, steps_per_epoch: int, total_epochs: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    ``step``: ``gamma ** (epoch // step_size)``, i.e. torch's StepLR stepped once per epoch;
    ``cosine``: linear warm-up over ``warmup_epochs``, then half a cosine from 1 down to
    ``min_lr_ratio`` at the end of ``total_epochs`` (Loshchilov & Hutter 2017, eq. 5);
    ``constant``: warm-up, then 1.
    """
    epoch = step // max(steps_per_epoch, 1)
    if o.schedule == "step":
        return o.gamma ** (epoch // o.step_size)
    warm = o.warmup_epochs * steps_per_epoch
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if o.schedule == "constant":
        return 1.0
    total = max(total_epochs * steps_per_epoch - warm, 1)
    t = min(max(step - warm, 0) / total, 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(o: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s trainable parameters (SGD with Nesterov momentum)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
