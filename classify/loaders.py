"""Batches for the classifiers: the task's splits, augmentation, loaders, the evaluation transform.

Every loader reads the decoded cache of :mod:`classify.dataset` (``uint8 [N, 3, S, S]``,
memory-mapped) and yields ``(uint8 [B, 3, S', S'], int64 [B])``; the float conversion,
resize and normalization are done per batch on the device by :func:`batch_prep`, which is
also *the* evaluation transform (evaluation, scoring and the training loop all call it), so
the loader moves 4x fewer bytes than float images.

Several processes (torchrun, :mod:`gan.distributed`): :func:`sharded_train_loader` gives
each process its share of an epoch through a ``DistributedSampler`` seeded by
``(seed, epoch)`` and ``ceil(batch_size / N)`` images per step, so ``train.batch_size``
stays the global batch; :func:`eval_loader` gives each process images ``rank, rank + N,
...`` with their indices (:class:`IndexedShard`) so the predictions can be gathered back
into split order.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import torch

from classify import dataset as D
from classify.recipe import Recipe
from gan import distributed as dist

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "scan_for",
    "cached",
    "train_transform",
    "make_loader",
    "sharded_train_loader",
    "eval_loader",
    "IndexedShard",
    "batch_prep",
    "normalization",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scan_for(data: str | os.PathLike, task: str, recipe: Recipe, classes: Sequence[str] | None = None) -> D.TaskData:
    """The task's splits under ``data``, val carved with the recipe's fraction and seed."""
    return D.scan_task(data, task, val_fraction=recipe.data.val_fraction, seed=recipe.train.seed, classes=classes)


def cached(task_data: D.TaskData, split: str, recipe: Recipe, cache_dir: str | os.PathLike | None,
           progress: bool = True, log: Callable[[str], None] = print) -> D.CachedSplit:
    """The decoded cache of one split at the recipe's cache size (decoded on first use)."""
    return D.cached_split(task_data.splits[split], recipe.data.cache_size, cache_dir or D.default_cache_dir(),
                          name=f"{task_data.task}-{split}", strict=recipe.data.strict, progress=progress, log=log)


def train_transform(recipe: Recipe, train: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
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
    split_cache = cached(task_data, split, recipe, cache_dir, progress=progress, log=log)
    gen = torch.Generator().manual_seed(recipe.train.seed * 100_003 + epoch)
    bs = batch_size or (recipe.train.batch_size if train else recipe.train.eval_batch_size)
    transform = train_transform(recipe, train)
    if transform is None:
        return D.CachedBatches(split_cache, bs, shuffle=train, generator=gen, drop_last_single=train)
    ds = D.CachedImageDataset(split_cache, transform)
    return torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=train, generator=gen, num_workers=recipe.data.workers,
        drop_last=train and len(ds) > bs and len(ds) % bs == 1,  # a batch of 1 breaks BatchNorm
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
    )


def sharded_train_loader(task_data: D.TaskData, recipe: Recipe, cache_dir: str | os.PathLike | None,
                         epoch: int) -> Any:
    """This process's share of an epoch: a ``DistributedSampler`` over the cached split,
    shuffled by ``(seed, epoch)`` alike on every process, ``ceil(batch_size / N)`` per step."""
    from torch.utils.data.distributed import DistributedSampler

    ds = D.CachedImageDataset(cached(task_data, "train", recipe, cache_dir), train_transform(recipe, True))
    sampler = DistributedSampler(ds, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True,
                                 seed=recipe.train.seed)
    sampler.set_epoch(epoch)
    bs = -(-recipe.train.batch_size // dist.world_size())
    share = len(sampler)
    return torch.utils.data.DataLoader(
        ds, batch_size=bs, sampler=sampler, num_workers=recipe.data.workers,
        drop_last=share > bs and share % bs == 1,  # a batch of 1 breaks BatchNorm
        pin_memory=torch.cuda.is_available(), persistent_workers=False)


class IndexedShard:
    """A loader of one process's evaluation shard, with the shard's indices in the split."""

    def __init__(self, loader: Any, indices: list[int]) -> None:
        self.loader, self.indices = loader, indices

    def __iter__(self):
        return iter(self.loader)


def eval_loader(task_data: D.TaskData, split: str, recipe: Recipe, cache_dir: str | os.PathLike | None,
                progress: bool, log: logging.Logger) -> Any:
    """The whole split alone; with several processes, images ``rank, rank + N, ...`` with their
    indices (an :class:`IndexedShard`)."""
    if dist.world_size() == 1:
        return make_loader(task_data, split, recipe, cache_dir, train=False, progress=progress, log=log.info)
    ds = D.CachedImageDataset(cached(task_data, split, recipe, cache_dir))
    idx = list(range(dist.rank(), len(ds), dist.world_size()))
    return IndexedShard(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx),
                                                    batch_size=recipe.train.eval_batch_size), idx)


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


def normalization(recipe: Recipe) -> dict[str, Any] | None:
    """The normalization :func:`batch_prep` applies, as stored in checkpoints (None: none)."""
    if recipe.data.normalize == "imagenet":
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return None
