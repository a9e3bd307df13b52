"""Reading training data: :class:`ImageDataset` (a prepared archive) and :func:`open_images`
(an archive or a plain folder of images: the one reader every tool uses).

:class:`ImageDataset` reads an archive written by :func:`gan.prepare.prepare` (or the folder
it was unzipped into, or an archive written by the published StyleGAN2-ADA ``dataset_tool``)
as a torch ``Dataset`` of ``(uint8 [C, H, W], float32 label)``; the zip is opened lazily once
per process, so ``DataLoader`` workers each get their own handle. :class:`InfiniteSampler`
walks it for the trainer, reproducibly from any image count.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from gan.images import list_images, read_rgb
from gan.util import UserError

__all__ = ["ImageDataset", "InfiniteSampler", "FolderImages", "is_archive", "open_images"]


class ImageDataset(torch.utils.data.Dataset):
    """A prepared archive (zip, or the folder it was unzipped to) as ``(image, label)`` items.

    ``image`` is ``uint8 [C, H, W]``; ``label`` is ``float32 [label_dim]``: one-hot for
    integer labels, the joint vector of one-hot groups for several CSV columns, and empty
    (``[0]``) when the archive is unlabelled or ``use_labels=False``. ``mirror=True``
    doubles the set with x-flips as StyleGAN2-ADA's ``--mirror`` does: index ``i >= n``
    is image ``i - n`` flipped left-right. Archives written by the published
    ``dataset_tool`` (no ``images`` list) are read too.

    The zip is opened lazily and the handle is kept per process id and never pickled,
    so ``DataLoader(num_workers > 0)`` works with fork and spawn alike.
    """

    def __init__(self, path: str | os.PathLike, mirror: bool = False, use_labels: bool = False) -> None:
        self.path = Path(path)
        self.mirror = bool(mirror)
        self.use_labels = bool(use_labels)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        if not self.path.exists():
            raise UserError(f"dataset: {self.path} does not exist; run `mtf-gan prepare SRC {self.path.name}` first")
        self._is_zip = self.path.is_file()
        if self._is_zip and not zipfile.is_zipfile(self.path):
            raise UserError(f"dataset: {self.path} is not a zip archive; pass the output of `mtf-gan prepare`")
        all_files = self._list()
        meta = json.loads(self._read("dataset.json")) if "dataset.json" in all_files else {}
        if meta.get("images"):
            self.names = [im["name"] for im in meta["images"]]
            self.sources = [im.get("source", im["name"]) for im in meta["images"]]
        else:
            ext = {e for e, f in Image.registered_extensions().items() if f in Image.OPEN}
            self.names = sorted(f for f in all_files if os.path.splitext(f)[1].lower() in ext)
            self.sources = list(self.names)
        if not self.names:
            raise UserError(f"dataset: {self.path} holds no images; run `mtf-gan prepare` to make an archive")
        self.meta = meta
        self.class_names = meta.get("classes")
        self.label_groups = meta.get("label_groups")
        self._labels = self._load_labels(meta.get("labels"))  # [n, L] float32
        first = self._load(0)  # [C, H, W]
        self._shape = tuple(first.shape)
        self.close()  # do not keep a handle that a forked DataLoader worker would share

    # -- file access
    def _list(self) -> list[str]:
        if self._is_zip:
            return [n for n in self._zipfile().namelist() if not n.endswith("/")]
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def _read(self, name: str) -> bytes:
        return self._zipfile().read(name) if self._is_zip else (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"], state["_zip_pid"] = None, -1
        return state

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- labels
    def _load_labels(self, raw: Any) -> np.ndarray:
        n = len(self.names)
        if not raw:
            return np.zeros((n, 0), np.float32)
        table = {str(k).replace("\\", "/"): v for k, v in raw}
        try:
            values = [table[name] for name in self.names]
        except KeyError as exc:
            raise UserError(f"dataset: {self.path}: dataset.json has no label for {exc}; prepare the archive again") from None
        if all(isinstance(v, int) for v in values):
            k = len(self.class_names) if isinstance(self.class_names, list) else max(values) + 1
            onehot = np.zeros((n, k), np.float32)
            onehot[np.arange(n), values] = 1.0
            return onehot
        return np.asarray(values, dtype=np.float32).reshape(n, -1)

    # -- Dataset protocol
    def __len__(self) -> int:
        return len(self.names) * (2 if self.mirror else 1)

    def _load(self, raw_idx: int) -> torch.Tensor:
        with Image.open(io.BytesIO(self._read(self.names[raw_idx]))) as img:
            arr = np.array(img)  # a writable copy: torch warns on read-only arrays
        if arr.ndim == 2:
            arr = arr[:, :, None]  # [H, W, 1]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # [C, H, W]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.names)
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        idx %= len(self)
        raw, flip = idx % n, idx >= n
        img = self._load(raw)  # [C, H, W]
        if tuple(img.shape) != self._shape:
            raise UserError(
                f"dataset: {self.path}: {self.names[raw]} is {tuple(img.shape)}, not {self._shape} like the "
                "first image; prepare the archive again with one --resolution"
            )
        if flip:
            img = img.flip(-1)
        return img, self.get_label(idx)

    def get_label(self, idx: int) -> torch.Tensor:
        """``float32 [label_dim]`` label of item ``idx`` (mirrored items share the label)."""
        if not self.use_labels:
            return torch.zeros(0, dtype=torch.float32)
        return torch.from_numpy(self._labels[idx % len(self.names)].copy())

    def image(self, raw_idx: int) -> torch.Tensor:
        """uint8 ``[C, H, W]`` of stored image ``raw_idx`` (no mirror, no label): the
        :func:`open_images` interface shared with :class:`FolderImages`."""
        return self[raw_idx % len(self.names)][0]

    @property
    def first_size(self) -> tuple[int, int]:
        """(width, height) of the images."""
        return (self._shape[2], self._shape[1])

    # -- properties
    @property
    def resolution(self) -> int:
        return self._shape[1]

    @property
    def num_channels(self) -> int:
        return self._shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape  # [C, H, W]

    @property
    def label_dim(self) -> int:
        return self._labels.shape[1] if self.use_labels else 0

    @property
    def has_labels(self) -> bool:
        return self._labels.shape[1] > 0

    @property
    def labels(self) -> torch.Tensor:
        """``float32 [n, label_dim]`` labels of the ``n`` distinct images (no mirror copies)."""
        if not self.use_labels:
            return torch.zeros(len(self.names), 0)
        return torch.from_numpy(self._labels.copy())

    def label_distribution(self) -> dict[str, Any]:
        """Images per class: ``{class: count}``, or ``{column: {class: count}}`` for several
        CSV columns; counts distinct images (not mirror copies). Empty when unlabelled."""
        if not self.has_labels:
            return {}
        counts = self._labels.sum(axis=0)  # [L]
        if self.label_groups:
            return {
                g["column"]: {c: int(counts[g["offset"] + i]) for i, c in enumerate(g["classes"])}
                for g in self.label_groups
            }
        names = self.class_names if isinstance(self.class_names, list) else [str(i) for i in range(len(counts))]
        return {c: int(v) for c, v in zip(names, counts)}

    def __repr__(self) -> str:
        return (
            f"ImageDataset({str(self.path)!r}, n={len(self.names)}, mirror={self.mirror}, "
            f"shape={list(self._shape)}, label_dim={self.label_dim})"
        )


# ---------------------------------------------------------------------------- the trainer's sampler


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


# ---------------------------------------------------------------------------- any image source


def is_archive(path: str | os.PathLike) -> bool:
    """A prepared archive: a ``.zip``, or a folder with ``dataset.json`` (an unzipped one)."""
    path = Path(path)
    return (path.is_file() and path.suffix.lower() == ".zip") or (path / "dataset.json").is_file()


class FolderImages:
    """A plain folder of image files (recursive, sorted, hidden files skipped) with the same
    reading interface as :class:`ImageDataset`: ``names``, ``len()``, ``image(i)``."""

    def __init__(self, folder: str | os.PathLike, what: str = "") -> None:
        self.path = Path(folder)
        self.files = list_images(self.path, what)
        self.names = [f.relative_to(self.path).as_posix() for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> torch.Tensor:
        """uint8 ``[3, H, W]`` of file ``i`` (:func:`gan.images.read_rgb`)."""
        return read_rgb(self.files[i])

    @property
    def first_size(self) -> tuple[int, int]:
        """(width, height) of the first image, from its header (no decoding)."""
        with Image.open(self.files[0]) as img:
            return img.size


def open_images(source: str | os.PathLike, what: str = "") -> "ImageDataset | FolderImages":
    """The one reader of image sources: a prepared archive (zip or unzipped) as an
    :class:`ImageDataset`, any other folder as :class:`FolderImages`. Both give ``names``,
    ``len()``, ``image(i) -> uint8 [C, H, W]`` and ``first_size``. ``what`` (an option name
    such as ``--real``) prefixes the errors."""
    path = Path(source)
    prefix = f"{what} " if what else ""
    if not path.exists():
        raise UserError(f"{prefix}{path}: no such archive or folder")
    if is_archive(path):
        return ImageDataset(path)
    return FolderImages(path, what)
