"""Train one classifier on one curated MTF task (a recipe), and the models x tasks ``baselines`` grid.

A **recipe** (:class:`Recipe`, YAML presets in ``configs/classify/``) says how to train
whatever the model and task:

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

:func:`train` writes one run folder::

    config.yaml  log.txt  stats.jsonl  events.out.tfevents.*  best.pt  last.pt
    metrics.json  per_class.csv  confusion.png

``best.pt``/``last.pt`` are plain data (state dicts, class names, recipe, input size and
normalization, epoch, early-stopping state; ``last.pt`` adds the optimizer), written
atomically and read with ``torch.load(weights_only=True)``. ``resume=True`` continues
from ``last.pt``: each epoch's shuffling and augmentation are seeded by ``(seed, epoch)``
and the learning rate is a function of the step, so a resumed run repeats the epochs an
uninterrupted run would have done (up to nondeterministic kernels). The test split is
evaluated with ``best.pt``.

:func:`baselines` trains every cell of a models x tasks grid into ``<outdir>/<task>/<model>``,
skips cells that already hold ``metrics.json``, resumes cells that hold ``last.pt``, and
writes ``results.csv`` and ``results.md`` with the paper's reported ConvNeXt-Base row.

Several processes (``torchrun --nproc_per_node=N $(which mtf-classify) train ...``,
:mod:`gan.distributed`): the model is wrapped in ``DistributedDataParallel`` and each
process reads its share of every epoch through a ``DistributedSampler`` (seeded by
``(seed, epoch)``), ``ceil(batch_size / N)`` images per step, so ``train.batch_size``
stays the global batch (rounded up to a multiple of N). Training loss and accuracy
are summed over processes and validation and test predictions are gathered, so every
process takes the same early-stopping decision and the metrics cover the whole split;
rank 0 alone decodes the image cache first and writes every file. Checkpoints are
read back from the run folder, so multi-node runs need a shared file system.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from torch import nn

from classify import dataset as D
from classify.evaluate import classification_metrics, format_metrics, predict, write_metrics
from classify.models import MODELS, PAPER_MODELS, WeightsMissing, create_model, weights_file
from gan import distributed as dist
from gan.config import ConfigError, from_dict, load_config, save_config, to_dict
from gan.util import UserError, atomic_path, atomic_write_text

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "Recipe",
    "RunConfig",
    "RECIPES_DIR",
    "PAPER_ACCURACY",
    "resolve_recipe",
    "load_recipe",
    "recipe_from_dict",
    "resolve_device",
    "scan_for",
    "make_loader",
    "batch_prep",
    "lr_factor",
    "load_checkpoint",
    "model_from_checkpoint",
    "train",
    "write_results",
    "baselines",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "mtf-classify/1"
#: ``configs/classify`` of this checkout (the package is installed editable).
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "classify"
#: ConvNeXt-Base test accuracies (%) on curated MTF reported by Haffar et al. (IEEE Access
#: 13:63827, 2025; arXiv 2311.11882v2 abstract).
PAPER_ACCURACY = {"gender": 98.88, "race": 95.77, "age": 97.60, "face_recognition": 79.87}


# ---------------------------------------------------------------------------- recipe


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
    from gan.config import find_preset

    try:
        return find_preset("classify", recipe)
    except ConfigError as exc:
        raise UserError(f"recipe: {exc}") from None


def load_recipe(recipe: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Recipe defaults <- preset/YAML <- ``--set`` overrides (unknown keys are errors)."""
    return load_config(Recipe, resolve_recipe(recipe), overrides)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    return from_dict(Recipe, d)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; pass --device cpu or auto")
    return dev


# ---------------------------------------------------------------------------- data


def scan_for(data: str | os.PathLike, task: str, recipe: Recipe, classes: Sequence[str] | None = None) -> D.TaskData:
    return D.scan_task(data, task, val_fraction=recipe.data.val_fraction, seed=recipe.train.seed, classes=classes)


def _transform(recipe: Recipe, train: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Per-image augmentation of uint8 ``[3, S, S]`` (None when there is none).

    A random resized crop outputs ``input_size`` directly; without one the plain resize is
    left to :func:`batch_prep`, which does it per batch on the device.
    """
    from torchvision.transforms import v2

    d = recipe.data
    ops: list[Any] = []
    if train and d.random_resized_crop:
        ops.append(v2.RandomResizedCrop(d.input_size, scale=tuple(d.crop_scale), antialias=True))
    if train and d.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if train and d.color_jitter > 0:
        ops.append(v2.ColorJitter(brightness=d.color_jitter, contrast=d.color_jitter, saturation=d.color_jitter))
    return v2.Compose(ops) if ops else None


def make_loader(task_data: D.TaskData, split: str, recipe: Recipe, cache_dir: str | os.PathLike | None,
                train: bool, batch_size: int | None = None, epoch: int = 0, progress: bool = False,
                log: Callable[[str], None] = print) -> Any:
    """Batches ``(uint8 [B, 3, S', S'], int64 [B])`` over the decoded cache.

    ``S'`` is the input size after a random resized crop, else the cache size (resized
    per batch by :func:`batch_prep`). Training batches are shuffled by a generator seeded
    with ``(seed, epoch)``. Without per-image augmentation the batches are read straight
    from the memory map (:class:`classify.dataset.CachedBatches`, no workers needed);
    with it, a ``DataLoader`` with ``data.workers`` processes runs the augmentation.
    """
    items = task_data.splits[split]
    cached = D.cached_split(items, recipe.data.cache_size, cache_dir or D.default_cache_dir(),
                            name=f"{task_data.task}-{split}", strict=recipe.data.strict, progress=progress, log=log)
    gen = torch.Generator().manual_seed(recipe.train.seed * 100_003 + epoch)
    bs = batch_size or (recipe.train.batch_size if train else recipe.train.eval_batch_size)
    transform = _transform(recipe, train)
    if transform is None:
        return D.CachedBatches(cached, bs, shuffle=train, generator=gen, drop_last_single=train)
    ds = D.CachedImageDataset(cached, transform)
    return torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=train, generator=gen, num_workers=recipe.data.workers,
        drop_last=train and len(ds) > bs and len(ds) % bs == 1,  # a batch of 1 breaks BatchNorm
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
    )


def batch_prep(recipe: Recipe, device: torch.device, channels_last: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[B, 3, H, W]`` on ``device`` -> float ``[B, 3, input, input]`` in [0, 1] (ToTensor),
    resized (bilinear, antialiased, like torchvision's ``Resize``) and normalized if asked.

    Done per batch on the device: the loader moves 4x fewer bytes than float images and
    does no per-image work, so an epoch costs little more than the model's steps.
    """
    size = recipe.data.input_size
    mean = std = None
    if recipe.data.normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def prep(x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3, (x.dtype, x.shape)
        x = x.float().div_(255.0)  # [B, 3, H, W]
        if x.shape[-1] != size or x.shape[-2] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False).clamp_(0.0, 1.0)  # [B, 3, size, size]
        if mean is not None:
            x = (x - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    return prep


def _normalization(recipe: Recipe) -> dict[str, Any] | None:
    if recipe.data.normalize == "imagenet":
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return None


# ---------------------------------------------------------------------------- schedule


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


def _optimizer(o: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)


# ---------------------------------------------------------------------------- checkpoints, logs


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``best.pt``/``last.pt`` as plain data (``torch.load(weights_only=True)``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); "
                        "pass a best.pt or last.pt written by mtf-classify train") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} was not written by mtf-classify train ({CHECKPOINT_FORMAT})")
    return ckpt


def load_for_inference(path: str | os.PathLike, device: torch.device) -> tuple[dict[str, Any], nn.Module, Recipe]:
    """``(checkpoint, model in eval mode on device, recipe)`` of a ``best.pt``/``last.pt``:
    what evaluation and scoring both need to run a trained classifier."""
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt).to(device), recipe_from_dict(ckpt["recipe"])


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """The trained classifier of a checkpoint, in eval mode (no ImageNet weights needed)."""
    model = create_model(ckpt["model_name"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


class _Stats:
    """Scalars to ``stats.jsonl`` (one JSON object per epoch) and TensorBoard."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "stats.jsonl"
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir))

    def report(self, epoch: int, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"epoch": epoch, **values}) + "\n")
        for k, v in values.items():
            self.tb.add_scalar(k, v, epoch)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


class _NullStats:
    """What ranks other than 0 report to: nothing is written."""

    def report(self, epoch: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _null_logger() -> logging.Logger:
    log = logging.getLogger("classify.run.null")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def _logger(run_dir: Path, echo: bool) -> logging.Logger:
    log = logging.getLogger(f"classify.run.{run_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fh = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(fh)
    if echo:
        sh = logging.StreamHandler()
        sh.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(sh)
    return log


def _close_logger(log: logging.Logger) -> None:
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


# ---------------------------------------------------------------------------- training


def _improved(mode: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    if mode == "val_acc":
        return value > best + min_delta
    return value < best - min_delta


def train(
    data: str | os.PathLike,
    task: str,
    model: str,
    recipe: Recipe | str = "demo",
    outdir: str | os.PathLike = "runs/classify",
    overrides: Sequence[str] = (),
    device: str = "auto",
    resume: bool = False,
    weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    echo: bool = True,
    dist_timeout: float = dist.DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Train ``model`` on ``task`` of the curated tree ``data`` into the run folder ``outdir``.

    ``recipe`` is a :class:`Recipe` or a preset name / YAML path (with ``overrides``).
    Returns the test metrics (also in ``metrics.json``) plus ``run_dir``. Under torchrun
    every process calls this alike (``dist_timeout`` bounds each collective, in seconds).
    """
    resolve_device(device)  # this package's message for a missing GPU
    with dist.session(device, dist_timeout) as dev:
        return _train_checked(data, task, model, recipe, outdir, overrides, dev, resume, weights, cache_dir,
                              progress, echo)


def _train_checked(data: str | os.PathLike, task: str, model: str, recipe: Recipe | str,
                   outdir: str | os.PathLike, overrides: Sequence[str], dev: torch.device, resume: bool,
                   weights: str | os.PathLike | None, cache_dir: str | os.PathLike | None, progress: bool,
                   echo: bool) -> dict[str, Any]:
    task = D.canonical_task(task)
    if model not in MODELS:
        raise UserError(f"train: unknown --model {model!r}; pass one of {', '.join(MODELS)}")
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = load_config(Recipe, None, overrides, base=to_dict(recipe))
    run_dir = Path(outdir)
    cfg = RunConfig(task=task, model=model, data=str(Path(data)), recipe=recipe)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    if resume:
        if not last_path.is_file():
            raise UserError(f"train: --resume, but {run_dir} holds no last.pt; drop --resume to start a new run")
        saved = load_config(RunConfig, run_dir / "config.yaml")
        if (saved.task, saved.model, to_dict(saved.recipe)) != (task, model, to_dict(recipe)):
            raise UserError(
                f"train: --resume, but {run_dir}/config.yaml was made with another task, model or recipe "
                f"({saved.task}, {saved.model}, recipe {saved.recipe.name}); pass the same options or a new --outdir"
            )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"train: --outdir {run_dir} is not empty (it may hold a run); pass --resume to continue "
                        "it or a new --outdir (nothing is overwritten)")
    spec = MODELS[model]
    if recipe.data.input_size < spec.min_input:
        raise UserError(f"train: {model} needs inputs of at least {spec.min_input} px; "
                        f"--set data.input_size={spec.min_input} or more")
    pretrained = recipe.uses_pretrained(model) or weights is not None
    if pretrained:  # fail before scanning or decoding anything
        wf = Path(weights) if weights is not None else weights_file(model)
        if wf is None or not wf.is_file():
            create_model(model, 2, pretrained=True, weights=weights)  # raises WeightsMissing with the paragraph

    dist.barrier()  # every process has checked the folder before rank 0 writes into it
    rank0 = dist.is_rank0()
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    log = _logger(run_dir, echo) if rank0 else _null_logger()
    stats = _Stats(run_dir) if rank0 else _NullStats()
    try:
        return _train(cfg, run_dir, dev, resume, pretrained, weights, cache_dir, progress, log, stats)
    finally:
        stats.close()
        _close_logger(log)


def _train(cfg: RunConfig, run_dir: Path, dev: torch.device, resume: bool, pretrained: bool,
           weights: str | os.PathLike | None, cache_dir: str | os.PathLike | None, progress: bool,
           log: logging.Logger, stats: _Stats) -> dict[str, Any]:
    from tqdm import tqdm

    r, t, o = cfg.recipe, cfg.recipe.train, cfg.recipe.optim
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    ckpt = load_checkpoint(last_path) if resume else None
    classes = ckpt["classes"] if ckpt else None
    task_data = scan_for(cfg.data, cfg.task, r, classes=classes)
    for note in task_data.notes:
        log.info(note)
    world, rank0 = dist.world_size(), dist.is_rank0()
    if world > 1:  # rank 0 decodes the image cache; the others then read it
        if rank0:
            for split in ("train", "val", "test"):
                D.cached_split(task_data.splits[split], r.data.cache_size, cache_dir or D.default_cache_dir(),
                               name=f"{task_data.task}-{split}", strict=r.data.strict, progress=progress, log=log.info)
        dist.barrier()
    counts = {s: len(v) for s, v in task_data.splits.items()}
    log.info(f"train: {cfg.model} on {cfg.task} ({len(task_data.classes)} classes) from {task_data.root}; "
             f"images train {counts['train']:,}, val {counts['val']:,}, test {counts['test']:,}; "
             f"recipe {r.name}; device {dev}; {'ImageNet weights' if pretrained else 'random init'}")

    torch.manual_seed(t.seed)
    net = create_model(cfg.model, len(task_data.classes), pretrained=pretrained, weights=weights)
    channels_last = t.channels_last and dev.type == "cuda"
    net = net.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model = net
    if world > 1:  # gradients averaged over processes in DDP's buckets, overlapped with backward
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)
    opt = _optimizer(o, net)
    amp = t.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    prep = batch_prep(r, dev, channels_last)

    start_epoch, best, best_epoch, bad, finished = 0, None, -1, 0, False
    train_seconds = 0.0
    if ckpt:
        net.load_state_dict(ckpt["model"])  # every process loads it: the replicas start equal
        opt.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        es = ckpt["early_stop"]
        start_epoch, best, best_epoch, bad, finished = ckpt["epoch"] + 1, es["best"], es["best_epoch"], es["bad"], es["finished"]
        train_seconds = ckpt.get("train_seconds", 0.0)
        log.info(f"train: resumed from {last_path} after epoch {ckpt['epoch'] + 1}")

    base = {
        "format": CHECKPOINT_FORMAT, "model_name": cfg.model, "task": cfg.task, "classes": list(task_data.classes),
        "recipe": to_dict(r), "input_size": r.data.input_size, "normalization": _normalization(r),
        "data": cfg.data,
    }
    val_loader = _eval_loader(task_data, "val", r, cache_dir, progress, log)
    epoch = start_epoch
    while not finished and epoch < t.epochs:
        t0 = time.perf_counter()
        torch.manual_seed(t.seed * 100_003 + epoch + 1_000_003 * dist.rank())  # augmentation draws of this epoch
        loader = (make_loader(task_data, "train", r, cache_dir, train=True, epoch=epoch, progress=progress,
                              log=log.info) if world == 1 else _sharded_train_loader(task_data, r, cache_dir, epoch))
        steps = len(loader)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False,
                   disable=not (progress and rank0))
        for i, (x, y) in enumerate(bar):
            for g in opt.param_groups:
                g["lr"] = o.lr * lr_factor(o, epoch * steps + i, steps, t.epochs)
            x, y = prep(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True)  # [B, 3, H, W], [B]
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                logits = model(x)  # [B, K]
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        if world > 1:  # every process takes the same early-stopping decision
            tot = dist.all_reduce_(torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64))
            loss_sum, correct, seen = tot[0].item(), int(tot[1]), int(tot[2])
        train_loss, train_acc = loss_sum / max(seen, 1), correct / max(seen, 1)
        yv, pv, val_loss = _predict(net, val_loader, dev, prep)
        val_acc = float((yv == pv).mean()) if len(yv) else 0.0
        seconds = time.perf_counter() - t0
        train_seconds += seconds

        monitored = {"train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc}.get(t.early_stop, -epoch)
        improved = t.early_stop == "none" or _improved(t.early_stop, monitored, best, t.min_delta)
        if improved:
            best, best_epoch, bad = monitored, epoch, 0
        else:
            bad += 1
        finished = (t.early_stop != "none" and bad >= t.patience) or epoch + 1 >= t.epochs
        stats.report(epoch + 1, {
            "Loss/train": train_loss, "Loss/val": val_loss, "Accuracy/train": train_acc, "Accuracy/val": val_acc,
            "Progress/lr": opt.param_groups[0]["lr"], "Timing/epoch_s": seconds,
        })
        log.info(f"epoch {epoch + 1:>3}/{t.epochs}  train loss {train_loss:.4f} acc {train_acc:.1%}  "
                 f"val loss {val_loss:.4f} acc {val_acc:.1%}  lr {opt.param_groups[0]['lr']:.2e}  {seconds:.1f} s"
                 + ("  *" if improved else f"  (no {t.early_stop} improvement {bad}/{t.patience})"))
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        es = {"mode": t.early_stop, "best": best, "best_epoch": best_epoch, "bad": bad, "finished": finished}
        common = {**base, "epoch": epoch, "model": state, "early_stop": es, "train_seconds": train_seconds,
                  "val_accuracy": val_acc, "train_loss": train_loss}
        if improved and rank0:
            _save(common, best_path)
        if rank0:
            _save({**common, "optimizer": opt.state_dict(),
                   **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})}, last_path)
        epoch += 1
        if finished and bad >= t.patience and t.early_stop != "none":
            log.info(f"train: early stop after epoch {epoch}: no {t.early_stop} improvement for {t.patience} epochs "
                     f"(best at epoch {best_epoch + 1})")

    dist.barrier()  # rank 0 has written best.pt
    best_ckpt = load_checkpoint(best_path)
    net.load_state_dict(best_ckpt["model"])
    test_loader = _eval_loader(task_data, "test", r, cache_dir, progress, log)
    t0 = time.perf_counter()
    y_true, y_pred, _ = _predict(net, test_loader, dev, prep)
    test_seconds = time.perf_counter() - t0
    metrics = classification_metrics(y_true, y_pred, task_data.classes)
    metrics.update({
        "task": cfg.task, "model": cfg.model, "recipe": r.name, "split": "test", "checkpoint": str(best_path),
        "epoch": best_ckpt["epoch"] + 1, "epochs_trained": epoch, "train_seconds": round(train_seconds, 2),
        "test_seconds": round(test_seconds, 3), "val_carved": task_data.val_carved, "device": str(dev),
        "pretrained": pretrained,
    })
    if world > 1:
        metrics["processes"] = world
    if rank0:
        write_metrics(metrics, run_dir, title=f"{cfg.model} / {cfg.task} (test, epoch {best_ckpt['epoch'] + 1})")
    log.info(f"{cfg.task} / {cfg.model}: " + format_metrics(metrics))
    log.info(f"train: wrote {run_dir}/{{config.yaml, log.txt, stats.jsonl, best.pt, last.pt, metrics.json, "
             "per_class.csv, confusion.png}")
    return {**metrics, "run_dir": str(run_dir)}


# ---------------------------------------------------------------------------- several processes


def _sharded_train_loader(task_data: D.TaskData, recipe: Recipe, cache_dir: str | os.PathLike | None,
                          epoch: int) -> Any:
    """This process's share of an epoch: a ``DistributedSampler`` over the cached split,
    shuffled by ``(seed, epoch)`` alike on every process, ``ceil(batch_size / N)`` per step."""
    from torch.utils.data.distributed import DistributedSampler

    cached = D.cached_split(task_data.splits["train"], recipe.data.cache_size, cache_dir or D.default_cache_dir(),
                            name=f"{task_data.task}-train", strict=recipe.data.strict)
    ds = D.CachedImageDataset(cached, _transform(recipe, True))
    sampler = DistributedSampler(ds, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True,
                                 seed=recipe.train.seed)
    sampler.set_epoch(epoch)
    bs = -(-recipe.train.batch_size // dist.world_size())
    share = len(sampler)
    return torch.utils.data.DataLoader(
        ds, batch_size=bs, sampler=sampler, num_workers=recipe.data.workers,
        drop_last=share > bs and share % bs == 1,  # a batch of 1 breaks BatchNorm
        pin_memory=torch.cuda.is_available(), persistent_workers=False)


def _eval_loader(task_data: D.TaskData, split: str, recipe: Recipe, cache_dir: str | os.PathLike | None,
                 progress: bool, log: logging.Logger) -> Any:
    """The whole split alone; with several processes, images ``rank, rank + N, ...`` with their indices."""
    if dist.world_size() == 1:
        return make_loader(task_data, split, recipe, cache_dir, train=False, progress=progress, log=log.info)
    cached = D.cached_split(task_data.splits[split], recipe.data.cache_size, cache_dir or D.default_cache_dir(),
                            name=f"{task_data.task}-{split}", strict=recipe.data.strict)
    ds = D.CachedImageDataset(cached)
    idx = list(range(dist.rank(), len(ds), dist.world_size()))
    return _IndexedShard(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx),
                                                     batch_size=recipe.train.eval_batch_size), idx)


class _IndexedShard:
    """A loader of one process's evaluation shard, with the shard's indices in the split."""

    def __init__(self, loader: Any, indices: list[int]) -> None:
        self.loader, self.indices = loader, indices

    def __iter__(self):
        return iter(self.loader)


def _predict(net: nn.Module, loader: Any, dev: torch.device, prep: Callable[[torch.Tensor], torch.Tensor]):
    """:func:`classify.evaluate.predict` over the whole split, gathered from every process's shard."""
    import numpy as np

    if not isinstance(loader, _IndexedShard):
        return predict(net, loader, dev, prep)
    y, p, mean_loss = predict(net, loader.loader, dev, prep)
    n = len(y)
    rows = torch.stack([torch.as_tensor(loader.indices, dtype=torch.int64), torch.as_tensor(y, dtype=torch.int64),
                        torch.as_tensor(p, dtype=torch.int64)], dim=1)  # [n_r, 3]: index, label, prediction
    rows = dist.all_gather_rows(rows)  # [N, 3]
    tot = dist.all_reduce_(torch.tensor([mean_loss * n, float(n)], dtype=torch.float64))
    order = torch.argsort(rows[:, 0])
    rows = rows[order]
    return rows[:, 1].numpy().astype(np.asarray(y).dtype), rows[:, 2].numpy().astype(np.asarray(p).dtype), \
        float(tot[0] / max(float(tot[1]), 1.0))


# ---------------------------------------------------------------------------- baselines grid


def _cell_text(m: dict[str, Any]) -> str:
    lo, hi = m["accuracy_ci95"]
    return f"{m['accuracy']:.2%} [{lo:.1%}, {hi:.1%}], F1 {m['macro_f1']:.3f}"


def write_results(rows: list[dict[str, Any]], outdir: Path, tasks: Sequence[str], models: Sequence[str],
                  recipe: Recipe, data: str) -> None:
    """``results.csv`` (one row per finished cell, plus the paper's) and ``results.md`` (models x tasks)."""
    fields = ["source", "task", "model", "recipe", "accuracy", "ci95_low", "ci95_high", "macro_f1",
              "macro_precision", "macro_recall", "n_test", "best_epoch", "epochs_trained", "train_seconds", "run_dir"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for m in rows:
        lo, hi = m["accuracy_ci95"]
        w.writerow({"source": "ours", "task": m["task"], "model": m["model"], "recipe": m["recipe"],
                    "accuracy": f"{m['accuracy']:.6f}", "ci95_low": f"{lo:.6f}", "ci95_high": f"{hi:.6f}",
                    "macro_f1": f"{m['macro_f1']:.6f}", "macro_precision": f"{m['macro_precision']:.6f}",
                    "macro_recall": f"{m['macro_recall']:.6f}", "n_test": m["n"], "best_epoch": m["epoch"],
                    "epochs_trained": m["epochs_trained"], "train_seconds": m["train_seconds"],
                    "run_dir": m["run_dir"]})
    for task in tasks:
        w.writerow({"source": "paper", "task": task, "model": "convnext_base", "recipe": "paper",
                    "accuracy": f"{PAPER_ACCURACY[task] / 100:.4f}"})
    atomic_write_text(outdir / "results.csv", buf.getvalue())

    by = {(m["task"], m["model"]): m for m in rows}
    head = "| model | " + " | ".join(tasks) + " |"
    lines = [
        f"# MTF classification baselines (recipe `{recipe.name}`)",
        "",
        f"Data: `{data}`. Test accuracy with its 95% Wilson interval, and macro F1; "
        "`-` marks cells not finished yet. The last row is what Haffar et al. (IEEE Access 13, 2025) "
        "report for ConvNeXt-Base on curated MTF (accuracy only).",
        "",
        head,
        "|" + "---|" * (len(tasks) + 1),
    ]
    for model in models:
        cells = [(_cell_text(by[(t, model)]) if (t, model) in by else "-") for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("| convnext_base (paper, reported) | " + " | ".join(f"{PAPER_ACCURACY[t]:.2f}%" for t in tasks) + " |")
    atomic_write_text(outdir / "results.md", "\n".join(lines) + "\n")


def _clear_unstarted(cell: Path) -> None:
    """Remove what an interrupted first epoch left (only files ``train`` writes before ``last.pt``)."""
    if not cell.is_dir():
        return
    ours = [p for p in cell.iterdir() if p.name in ("config.yaml", "log.txt", "stats.jsonl")
            or p.name.startswith("events.out.tfevents.")]
    if len(ours) == len(list(cell.iterdir())):
        for p in ours:
            p.unlink()


def baselines(
    data: str | os.PathLike,
    outdir: str | os.PathLike,
    models: Sequence[str] = PAPER_MODELS,
    tasks: Sequence[str] = D.TASKS,
    recipe: str | os.PathLike = "notebook",
    overrides: Sequence[str] = (),
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    dist_timeout: float = dist.DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Train and test every model x task cell into ``<outdir>/<task>/<model>``; resumable.

    A cell with ``metrics.json`` is finished and skipped; one with ``last.pt`` only is
    resumed. Missing ImageNet weights are reported for all models at once, before any
    training. Returns the finished cells' metrics. Under torchrun the processes train
    each cell together (one process group for the whole grid); rank 0 writes the tables.
    """
    tasks = [D.canonical_task(t) for t in tasks]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise UserError(f"baselines: unknown model(s) {', '.join(bad)}; pass names from {', '.join(MODELS)}")
    rec = load_recipe(recipe, overrides)
    missing = [m for m in models if rec.uses_pretrained(m) and not weights_file(m).is_file()]  # type: ignore[union-attr]
    if missing:
        paragraphs = []
        for m in missing:
            try:
                create_model(m, 2, pretrained=True)
            except WeightsMissing as exc:
                paragraphs.append(str(exc))
        raise WeightsMissing("\n\n".join(paragraphs))
    resolve_device(device)
    with dist.session(device, dist_timeout):
        return _baselines(data, Path(outdir), models, tasks, rec, device, cache_dir, progress, echo)


def _baselines(data: str | os.PathLike, out: Path, models: Sequence[str], tasks: Sequence[str], rec: Recipe,
               device: str, cache_dir: str | os.PathLike | None, progress: bool,
               echo: Callable[[str], None]) -> list[dict[str, Any]]:
    rank0 = dist.is_rank0()
    if not rank0:
        echo = lambda msg: None  # noqa: E731
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for model in models:
            cell = out / task / model
            metrics_path = cell / "metrics.json"
            if metrics_path.is_file():
                m = json.loads(metrics_path.read_text(encoding="utf-8"))
                m.setdefault("run_dir", str(cell))
                echo(f"baselines: {task} / {model}: finished earlier ({m['accuracy']:.2%}), skipped")
            else:
                resume = (cell / "last.pt").is_file()
                dist.barrier()  # every process has looked at the cell before rank 0 clears it
                if not resume and rank0:
                    _clear_unstarted(cell)
                dist.barrier()
                echo(f"baselines: {task} / {model}: {'resuming' if resume else 'training'} in {cell}")
                m = train(data, task, model, rec, cell, device=device, resume=resume, cache_dir=cache_dir,
                          progress=progress, echo=True)
            rows.append(m)
            if rank0:
                write_results(rows, out, tasks, models, rec, str(data))
    echo(f"baselines: wrote {out / 'results.md'} and {out / 'results.csv'}")
    return rows
