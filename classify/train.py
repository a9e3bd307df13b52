"""Train one classifier on one curated MTF task with a recipe (:mod:`classify.recipe`).

:func:`train` writes one run folder::

    config.yaml  log.txt  stats.jsonl  events.out.tfevents.*  best.pt  last.pt
    metrics.json  per_class.csv  confusion.png

The loop is cut into named steps: resolve and check the options (:func:`_resolve`), read the
data (:func:`_load_data`), build the model and optimizer (:func:`_build`), restore a resumed
run (:func:`_restore`), then per epoch train (:func:`_train_epoch`), validate, update the
early stopping (:class:`EarlyStopping`), report (:func:`_report_epoch`) and save
(:func:`_save_epoch`); finally test ``best.pt`` (:func:`_test`). Scalars go through
:class:`gan.monitor.Monitor` (one ``stats.jsonl`` row per epoch, the layout of the GAN's
ticks, with ``Progress/epoch``), text through the ``"classify"`` logger (rank 0: console and
``log.txt``).

``best.pt``/``last.pt`` are plain data (:mod:`classify.checkpoint`). ``resume=True``
continues from ``last.pt``: each epoch's shuffling and augmentation are seeded by
``(seed, epoch)`` and the learning rate is a function of the step, so a resumed run
repeats the epochs an uninterrupted run would have done (up to nondeterministic kernels).
The test split is evaluated with ``best.pt``.

Several processes (``torchrun --nproc_per_node=N $(which mtf-classify) train ...``,
:mod:`gan.distributed`): the model is wrapped in ``DistributedDataParallel`` and each
process reads its share of every epoch (:func:`classify.loaders.sharded_train_loader`), so
``train.batch_size`` stays the global batch (rounded up to a multiple of N). Training loss
and accuracy are summed over processes and validation and test predictions are gathered,
so every process takes the same early-stopping decision and the metrics cover the whole
split; rank 0 alone decodes the image cache first and writes every file. Checkpoints are
read back from the run folder, so multi-node runs need a shared file system.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from classify import dataset as D
from classify import loaders as L
from classify.checkpoint import load_checkpoint, save_checkpoint
from classify.evaluate import classification_metrics, format_metrics, predict, write_metrics
from classify.models import MODELS, create_model, require_weights
from classify.recipe import Recipe, RunConfig, load_recipe, lr_factor, make_optimizer
from gan import distributed as dist
from gan import monitor
from gan.config import load_config, save_config, to_dict
from gan.util import UserError

__all__ = ["LOGGER_NAME", "EarlyStopping", "train", "check_model"]

#: The ``logging`` logger of classifier runs (rank 0: console on stderr and ``log.txt``).
LOGGER_NAME = "classify"


@dataclass(frozen=True)
class _Run:
    """One resolved and checked run: what every step of the loop reads."""

    cfg: RunConfig
    run_dir: Path
    dev: torch.device
    resume: bool
    pretrained: bool
    weights: str | os.PathLike | None
    cache_dir: str | os.PathLike | None
    progress: bool

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"


@dataclass
class _Parts:
    """What trains: the model (``net``; ``model`` is its DDP wrapper or itself), optimizer,
    mixed-precision state, loss and the per-batch input transform."""

    net: nn.Module
    model: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool
    amp_dtype: torch.dtype
    loss_fn: nn.Module
    prep: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EarlyStopping:
    """Stop once the monitored value has not improved for ``patience`` epochs.

    ``mode`` is ``train_loss``/``val_loss`` (lower is better), ``val_acc`` (higher is better)
    or ``none`` (every epoch counts as an improvement; run all epochs). An improvement must
    beat the best by more than ``min_delta``. The state is saved in every checkpoint.
    """

    mode: str
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    bad: int = 0
    finished: bool = False

    def _improved(self, value: float) -> bool:
        if self.mode == "none" or self.best is None:
            return True
        if self.mode == "val_acc":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, values: dict[str, float], epochs: int) -> bool:
        """Take epoch ``epoch``'s ``{train_loss, val_loss, val_acc}``; True when it improved."""
        value = values.get(self.mode, -epoch)
        improved = self._improved(value)
        if improved:
            self.best, self.best_epoch, self.bad = value, epoch, 0
        else:
            self.bad += 1
        self.finished = self.stopped or epoch + 1 >= epochs
        return improved

    @property
    def stopped(self) -> bool:
        """True when training ends for lack of improvement (not for reaching the last epoch)."""
        return self.mode != "none" and self.bad >= self.patience

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "best": self.best, "best_epoch": self.best_epoch, "bad": self.bad,
                "finished": self.finished}

    def load_state(self, es: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad, self.finished = es["best"], es["best_epoch"], es["bad"], es["finished"]


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
    ``device`` goes through :func:`gan.distributed.pick_device` (a clear error for CUDA
    without a GPU).
    """
    with dist.session(device, dist_timeout) as dev:
        checked = _resolve(data, task, model, recipe, outdir, overrides, resume, weights)
        return _run(_Run(checked.cfg, checked.run_dir, dev, resume, checked.pretrained, weights, cache_dir, progress),
                    echo)


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Checked:
    """What :func:`_resolve` found: the run's config and folder, and whether it starts from ImageNet weights."""

    cfg: RunConfig
    run_dir: Path
    pretrained: bool


def _resolve(data: str | os.PathLike, task: str, model: str, recipe: Recipe | str, outdir: str | os.PathLike,
             overrides: Sequence[str], resume: bool, weights: str | os.PathLike | None) -> _Checked:
    """Canonical task, known model, resolved recipe, a run folder fit for the run, weights on disk."""
    task = D.canonical_task(task)
    if model not in MODELS:
        raise UserError(f"train: unknown --model {model!r}; pass one of {', '.join(MODELS)}")
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = load_config(Recipe, None, overrides, base=to_dict(recipe))
    run_dir = Path(outdir)
    _check_run_dir(run_dir, resume, task, model, recipe)
    pretrained = check_model(model, recipe, weights)
    return _Checked(RunConfig(task=task, model=model, data=str(Path(data)), recipe=recipe), run_dir, pretrained)


def _check_run_dir(run_dir: Path, resume: bool, task: str, model: str, recipe: Recipe) -> None:
    """A new or empty folder, or with ``resume`` one holding ``last.pt`` of the same run."""
    if resume:
        if not (run_dir / "last.pt").is_file():
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


def check_model(model: str, recipe: Recipe, weights: str | os.PathLike | None) -> bool:
    """Whether the model starts from ImageNet weights; fails (before scanning or decoding
    anything) on too small an input or a missing weights file."""
    spec = MODELS[model]
    if recipe.data.input_size < spec.min_input:
        raise UserError(f"train: {model} needs inputs of at least {spec.min_input} px; "
                        f"--set data.input_size={spec.min_input} or more")
    pretrained = recipe.uses_pretrained(model) or weights is not None
    if pretrained:
        require_weights(model, weights)
    return pretrained


# ---------------------------------------------------------------------------- the run


def _run(run: _Run, echo: bool) -> dict[str, Any]:
    """Create the folder and ``config.yaml`` (rank 0), open the logs, train and test."""
    dist.barrier()  # every process has checked the folder before rank 0 writes into it
    if dist.is_rank0():
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run.cfg, run.run_dir / "config.yaml")
    log = monitor.setup_logging(run.run_dir, rank=dist.rank(), console=echo, name=LOGGER_NAME, stream=sys.stderr)
    try:
        with monitor.Monitor(run.run_dir, rank=dist.rank()) as mon:
            return _train(run, log, mon)
    finally:
        monitor.close_logging(LOGGER_NAME)


def _train(run: _Run, log: logging.Logger, mon: monitor.Monitor) -> dict[str, Any]:
    r, t = run.cfg.recipe, run.cfg.recipe.train
    ckpt = load_checkpoint(run.last_path) if run.resume else None
    task_data = _load_data(run, ckpt["classes"] if ckpt else None, log)
    parts = _build(run, len(task_data.classes))
    stopper = EarlyStopping(t.early_stop, t.patience, t.min_delta)
    start_epoch, train_seconds = _restore(run, parts, stopper, ckpt, log)
    base = {
        "model_name": run.cfg.model, "task": run.cfg.task, "classes": list(task_data.classes),
        "recipe": to_dict(r), "input_size": r.data.input_size, "normalization": L.normalization(r),
        "data": run.cfg.data,
    }
    val_loader = L.eval_loader(task_data, "val", r, run.cache_dir, run.progress, log)
    epoch = start_epoch
    while not stopper.finished and epoch < t.epochs:
        t0 = time.perf_counter()
        torch.manual_seed(t.seed * 100_003 + epoch + 1_000_003 * dist.rank())  # augmentation draws of this epoch
        loader = (L.make_loader(task_data, "train", r, run.cache_dir, train=True, epoch=epoch, progress=run.progress,
                                log=log.info) if dist.world_size() == 1
                  else L.sharded_train_loader(task_data, r, run.cache_dir, epoch))
        train_loss, train_acc = _train_epoch(run, parts, loader, epoch)
        yv, pv, val_loss = _predict(parts.net, val_loader, run.dev, parts.prep)
        val_acc = float((yv == pv).mean()) if len(yv) else 0.0
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        values = {"train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc}
        improved = stopper.update(epoch, values, t.epochs)
        _report_epoch(mon, log, run, epoch, {**values, "train_acc": train_acc, "lr": parts.opt.param_groups[0]["lr"],
                                              "seconds": seconds}, improved, stopper)
        _save_epoch(run, parts, {**base, "epoch": epoch, "early_stop": stopper.state(), "train_seconds": train_seconds,
                                 "val_accuracy": val_acc, "train_loss": train_loss}, improved)
        epoch += 1
        if stopper.finished and stopper.stopped:
            log.info(f"train: early stop after epoch {epoch}: no {t.early_stop} improvement for {t.patience} epochs "
                     f"(best at epoch {stopper.best_epoch + 1})")
    return _test(run, parts, task_data, epoch, train_seconds, log)


def _load_data(run: _Run, classes: Sequence[str] | None, log: logging.Logger) -> D.TaskData:
    """Scan the task's splits (in a resumed run's class order); with several processes,
    rank 0 decodes the image cache first and the others then read it."""
    r = run.cfg.recipe
    task_data = L.scan_for(run.cfg.data, run.cfg.task, r, classes=classes)
    for note in task_data.notes:
        log.info(note)
    if dist.world_size() > 1:
        if dist.is_rank0():
            for split in ("train", "val", "test"):
                L.cached(task_data, split, r, run.cache_dir, progress=run.progress, log=log.info)
        dist.barrier()
    counts = {s: len(v) for s, v in task_data.splits.items()}
    log.info(f"train: {run.cfg.model} on {run.cfg.task} ({len(task_data.classes)} classes) from {task_data.root}; "
             f"images train {counts['train']:,}, val {counts['val']:,}, test {counts['test']:,}; "
             f"recipe {r.name}; device {run.dev}; {'ImageNet weights' if run.pretrained else 'random init'}")
    return task_data


def _build(run: _Run, num_classes: int) -> _Parts:
    """The model (seeded), its DDP wrapper under torchrun, the optimizer, AMP, loss and transform."""
    t, dev = run.cfg.recipe.train, run.dev
    torch.manual_seed(t.seed)
    net = create_model(run.cfg.model, num_classes, pretrained=run.pretrained, weights=run.weights)
    channels_last = t.channels_last and dev.type == "cuda"
    net = net.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model = net
    if dist.world_size() > 1:  # gradients averaged over processes in DDP's buckets, overlapped with backward
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)
    opt = make_optimizer(run.cfg.recipe.optim, net)
    amp = t.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    return _Parts(net, model, opt, scaler, amp, amp_dtype, loss_fn, L.batch_prep(run.cfg.recipe, dev, channels_last))


def _restore(run: _Run, parts: _Parts, stopper: EarlyStopping, ckpt: dict[str, Any] | None,
             log: logging.Logger) -> tuple[int, float]:
    """Load a resumed run's model, optimizer, scaler and early-stopping state; returns
    ``(first epoch to train, training seconds so far)``."""
    if not ckpt:
        return 0, 0.0
    parts.net.load_state_dict(ckpt["model"])  # every process loads it: the replicas start equal
    parts.opt.load_state_dict(ckpt["optimizer"])
    if "scaler" in ckpt and parts.scaler.is_enabled():
        parts.scaler.load_state_dict(ckpt["scaler"])
    stopper.load_state(ckpt["early_stop"])
    log.info(f"train: resumed from {run.last_path} after epoch {ckpt['epoch'] + 1}")
    return ckpt["epoch"] + 1, ckpt.get("train_seconds", 0.0)


def _train_epoch(run: _Run, parts: _Parts, loader: Any, epoch: int) -> tuple[float, float]:
    """One pass over ``loader``: ``(mean training loss, accuracy)`` over every process's images."""
    from tqdm import tqdm

    t, o, dev = run.cfg.recipe.train, run.cfg.recipe.optim, run.dev
    steps = len(loader)
    parts.net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False,
               disable=not (run.progress and dist.is_rank0()))
    for i, (x, y) in enumerate(bar):
        for g in parts.opt.param_groups:
            g["lr"] = o.lr * lr_factor(o, epoch * steps + i, steps, t.epochs)
        x, y = parts.prep(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True)  # [B, 3, H, W], [B]
        with torch.autocast(dev.type, dtype=parts.amp_dtype, enabled=parts.amp):
            logits = parts.model(x)  # [B, K]
            loss = parts.loss_fn(logits.float(), y)
        parts.opt.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.opt)
        parts.scaler.update()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    if dist.world_size() > 1:  # every process takes the same early-stopping decision
        tot = dist.all_reduce_(torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64))
        loss_sum, correct, seen = tot[0].item(), int(tot[1]), int(tot[2])
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _report_epoch(mon: monitor.Monitor, log: logging.Logger, run: _Run, epoch: int, v: dict[str, float],
                  improved: bool, stopper: EarlyStopping) -> None:
    """One ``stats.jsonl`` row and TensorBoard step per epoch (step = epoch, 1-based), one log line."""
    t = run.cfg.recipe.train
    for name, value in (("Progress/epoch", epoch + 1), ("Loss/train", v["train_loss"]), ("Loss/val", v["val_loss"]),
                        ("Accuracy/train", v["train_acc"]), ("Accuracy/val", v["val_acc"]),
                        ("Progress/lr", v["lr"]), ("Timing/epoch_s", v["seconds"])):
        mon.report(name, value)
    mon.flush(epoch + 1)
    log.info(f"epoch {epoch + 1:>3}/{t.epochs}  train loss {v['train_loss']:.4f} acc {v['train_acc']:.1%}  "
             f"val loss {v['val_loss']:.4f} acc {v['val_acc']:.1%}  lr {v['lr']:.2e}  {v['seconds']:.1f} s"
             + ("  *" if improved else f"  (no {t.early_stop} improvement {stopper.bad}/{t.patience})"))


def _save_epoch(run: _Run, parts: _Parts, common: dict[str, Any], improved: bool) -> None:
    """Rank 0 writes ``best.pt`` when the epoch improved and ``last.pt`` (with the optimizer) always."""
    if not dist.is_rank0():
        return
    common = {**common, "model": {k: v.detach().cpu() for k, v in parts.net.state_dict().items()}}
    if improved:
        save_checkpoint(run.best_path, common)
    scaler = {"scaler": parts.scaler.state_dict()} if parts.scaler.is_enabled() else {}
    save_checkpoint(run.last_path, {**common, "optimizer": parts.opt.state_dict(), **scaler})


def _test(run: _Run, parts: _Parts, task_data: D.TaskData, epochs_trained: int, train_seconds: float,
          log: logging.Logger) -> dict[str, Any]:
    """Test ``best.pt`` on the test split; rank 0 writes ``metrics.json``, ``per_class.csv``, ``confusion.png``."""
    cfg, r = run.cfg, run.cfg.recipe
    dist.barrier()  # rank 0 has written best.pt
    best_ckpt = load_checkpoint(run.best_path)
    parts.net.load_state_dict(best_ckpt["model"])
    test_loader = L.eval_loader(task_data, "test", r, run.cache_dir, run.progress, log)
    t0 = time.perf_counter()
    y_true, y_pred, _ = _predict(parts.net, test_loader, run.dev, parts.prep)
    test_seconds = time.perf_counter() - t0
    metrics = classification_metrics(y_true, y_pred, task_data.classes)
    metrics.update({
        "task": cfg.task, "model": cfg.model, "recipe": r.name, "split": "test", "checkpoint": str(run.best_path),
        "epoch": best_ckpt["epoch"] + 1, "epochs_trained": epochs_trained, "train_seconds": round(train_seconds, 2),
        "test_seconds": round(test_seconds, 3), "val_carved": task_data.val_carved, "device": str(run.dev),
        "pretrained": run.pretrained,
    })
    if dist.world_size() > 1:
        metrics["processes"] = dist.world_size()
    if dist.is_rank0():
        write_metrics(metrics, run.run_dir, title=f"{cfg.model} / {cfg.task} (test, epoch {best_ckpt['epoch'] + 1})")
    log.info(f"{cfg.task} / {cfg.model}: " + format_metrics(metrics))
    log.info(f"train: wrote {run.run_dir}/{{config.yaml, log.txt, stats.jsonl, best.pt, last.pt, metrics.json, "
             "per_class.csv, confusion.png}")
    return {**metrics, "run_dir": str(run.run_dir)}


def _predict(net: nn.Module, loader: Any, dev: torch.device, prep: Callable[[torch.Tensor], torch.Tensor]):
    """:func:`classify.evaluate.predict` over the whole split, gathered from every process's shard."""
    import numpy as np

    if not isinstance(loader, L.IndexedShard):
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

