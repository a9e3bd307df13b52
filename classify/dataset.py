"""Curated MTF task trees for the classifiers: task and class aliases, val carving, a decoded cache.

Curated MTF (Haffar, Sánchez, Domingo-Ferrer, *IEEE Access* 13, 2025) ships one
torchvision ``ImageFolder`` tree per task, already split::

    <root>/<task>/{train,val,test}/<class>/<image>.jpg

and the authors' own scripts spell the folders differently (``Race_Classification`` or
``race``; ``male``, ``Males`` or ``Male``). This module reads any of those spellings:

* **Tasks** (:data:`TASK_ALIASES`) are matched case-insensitively with ``-`` and spaces
  read as ``_``: ``face_recognition`` (``Face_Recognition``, ``face-recognition``),
  ``race`` (``Race_Classification``), ``gender`` (``Gender_Classification``), ``age``
  (``Age_Classification``). ``root`` may also be a task folder itself (it holds ``train``).
* **Classes** of the attribute tasks go through :data:`CLASS_ALIASES` to one canonical
  spelling, and their order is fixed per task (:data:`TASK_CLASSES`, alphabetical as
  ``ImageFolder`` would sort the canonical names), so class index 1 is ``Male`` whichever
  spelling a tree uses; the order is stored in every checkpoint. Face-recognition classes
  are person names, kept as written (``Shaquille O_Neal``) and sorted.
* **Splits**: ``train`` and ``test`` are required; ``val`` (or ``valid``/``validation``)
  is optional. Without it, :func:`carve_val` takes a seeded, per-class share of ``train``
  (stratified, deterministic: the same files for the same seed whatever the machine) and
  the scan says so. Splits whose class sets differ and empty class folders are errors
  that name the folders.

Decoding a JPEG costs more than a small CNN's step on CPU, so :func:`cached_split` decodes
every image once (:func:`gan.images.decode_rgb`: EXIF orientation, 8-bit RGB; then
:func:`gan.images.square_resize`: central square crop, Lanczos resize to ``cache_size``, at
least 256 px by default so random resized crops still have pixels to crop) into one
``uint8 [N, 3, S, S]`` ``.npy`` file, read memory-mapped. Its name is a hash of the file list, sizes, mtimes and the cache
size, so an edited tree gets a new cache and an unchanged one is never decoded again.
Unreadable images are skipped and listed (``*.skipped.txt`` beside the cache) unless
``strict``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gan.images import IMAGE_EXTENSIONS, decode_rgb, square_resize
from gan.util import UserError, atomic_path, atomic_write_text, cache_root, derive_seed

__all__ = [
    "TASKS",
    "TASK_ALIASES",
    "TASK_CLASSES",
    "CLASS_ALIASES",
    "SPLITS",
    "CACHE_VERSION",
    "canonical_task",
    "canonical_class",
    "find_task_dir",
    "TaskData",
    "scan_task",
    "carve_val",
    "CachedSplit",
    "cached_split",
    "default_cache_dir",
    "CachedImageDataset",
    "CachedBatches",
]

#: The four curated MTF tasks, in the order the CLI lists them.
TASKS = ("gender", "race", "age", "face_recognition")

#: Folder spellings of each task (compared after :func:`_key`: lower case, ``-``/space -> ``_``).
TASK_ALIASES: dict[str, tuple[str, ...]] = {
    "face_recognition": ("face_recognition", "Face_Recognition", "face-recognition", "faces", "identity"),
    "race": ("race", "Race_Classification", "race_classification"),
    "gender": ("gender", "Gender_Classification", "gender_classification"),
    "age": ("age", "Age_Classification", "age_classification"),
}

#: Canonical classes of the attribute tasks, in class-index order (alphabetical).
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "race": ("Asian_Chinese_Korean", "Asian_Indian", "Black", "White"),
    "gender": ("Female", "Male"),
    "age": ("Old", "Young"),
}

#: Class-folder spellings seen in the MTF authors' scripts -> canonical name (keys as :func:`_key`).
CLASS_ALIASES: dict[str, dict[str, str]] = {
    "race": {
        "asian_chinese_korean": "Asian_Chinese_Korean",
        "asian_indian": "Asian_Indian",
        "black": "Black",
        "white": "White",
    },
    "gender": {
        "female": "Female", "females": "Female",
        "male": "Male", "males": "Male",
    },
    "age": {
        "old": "Old",
        "young": "Young",
    },
}

#: Split names and the folder spellings accepted for each.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}

#: Bumped whenever the decoding in :func:`_decode` changes, so old caches are not reused.
CACHE_VERSION = 1


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def canonical_task(name: str) -> str:
    """``Race_Classification`` -> ``race``; raises UserError for an unknown task name."""
    k = _key(name)
    for task, aliases in TASK_ALIASES.items():
        if k in {_key(a) for a in aliases}:
            return task
    raise UserError(
        f"dataset: unknown task {name!r}; pass one of {', '.join(TASKS)} "
        "(folder spellings such as Race_Classification are matched too)"
    )


def canonical_class(task: str, folder: str) -> str | None:
    """The canonical class of a class folder, or None when the spelling is unknown.

    Face-recognition classes are person names and are returned unchanged.
    """
    if task == "face_recognition":
        return folder
    return CLASS_ALIASES[task].get(_key(folder))


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_split_dirs(task_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _subdirs(task_dir):
        for split, names in SPLITS.items():
            if _key(d.name) in names:
                if split in found:
                    raise UserError(
                        f"dataset: {task_dir} has two {split} folders ({found[split].name} and {d.name}); "
                        "keep one"
                    )
                found[split] = d
    return found


def find_task_dir(root: str | os.PathLike, task: str) -> Path:
    """The folder of ``task`` under ``root`` (any alias, any case), or ``root`` itself
    when it already is a task folder (holds ``train`` and ``test``)."""
    root = Path(root)
    task = canonical_task(task)
    if not root.is_dir():
        raise UserError(f"dataset: --data {root} is not a folder; pass the root of the curated MTF trees")
    splits = _find_split_dirs(root)
    if "train" in splits:
        return root
    aliases = {_key(a) for a in TASK_ALIASES[task]}
    matches = [d for d in _subdirs(root) if _key(d.name) in aliases]
    if len(matches) > 1:
        raise UserError(
            f"dataset: {root} holds several folders for task {task}: "
            + ", ".join(d.name for d in matches) + "; keep one"
        )
    if not matches:
        have = ", ".join(d.name for d in _subdirs(root)) or "nothing"
        raise UserError(
            f"dataset: no folder for task {task} under {root} (found: {have}); expected one of "
            + ", ".join(TASK_ALIASES[task][:3])
            + " holding train/ and test/ (and optionally val/)"
        )
    return matches[0]


def _images_in(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(dirpath) / f)
    return out


@dataclass(frozen=True)
class TaskData:
    """The files of one task: per split, ``(path, class index)`` pairs in a fixed order.

    ``classes`` is the class order (index -> name); ``notes`` are lines for the user
    (a carved val split, renamed classes).
    """

    task: str
    root: Path
    classes: tuple[str, ...]
    splits: dict[str, list[tuple[Path, int]]]
    val_carved: bool = False
    notes: tuple[str, ...] = field(default=())

    def counts(self, split: str) -> np.ndarray:
        """Images per class in ``split`` (``int64 [K]``)."""
        labels = np.array([y for _, y in self.splits[split]], dtype=np.int64)
        return np.bincount(labels, minlength=len(self.classes))


def _class_hint(task: str) -> str:
    canon = TASK_CLASSES[task]
    extra = [k for k in CLASS_ALIASES[task] if k not in {_key(c) for c in canon}]
    return ", ".join(canon) + " (any case" + (f"; also {', '.join(extra)}" if extra else "") + ")"


def _scan_split(task: str, split_dir: Path) -> dict[str, list[Path]]:
    """Canonical class -> image paths of one split folder; errors on unknown or empty classes."""
    by_class: dict[str, list[Path]] = {}
    for d in _subdirs(split_dir):
        cls = canonical_class(task, d.name)
        if cls is None:
            raise UserError(
                f"dataset: class folder {d} is not a known {task} class; expected one of "
                f"{_class_hint(task)}; rename or remove it"
            )
        if cls in by_class:
            raise UserError(
                f"dataset: {split_dir} holds two folders for class {cls} (one is {d.name}); merge them"
            )
        images = _images_in(d)
        if not images:
            raise UserError(
                f"dataset: class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        by_class[cls] = images
    if not by_class:
        raise UserError(f"dataset: {split_dir} holds no class folders; expected {split_dir}/<class>/<image>")
    return by_class


def carve_val(
    train: Sequence[tuple[Path, int]], fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Split ``train`` into ``(train, val)``: ``fraction`` of each class, at least one, chosen by ``seed``.

    Stratified so every class is in val in its training proportion; a class with a single
    image stays in train. Deterministic: files are sorted by path before a permutation
    drawn from ``(seed, class index)``, so the choice depends neither on the order the
    file system lists files nor on the other classes.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"dataset: val_fraction {fraction} must be between 0 and 1 (e.g. 0.2)")
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for item in train:
        by_class.setdefault(item[1], []).append(item)
    keep: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    for y in sorted(by_class):
        items = sorted(by_class[y], key=lambda t: str(t[0]))
        n_val = min(max(1, int(round(fraction * len(items)))), len(items) - 1)
        rng = np.random.default_rng(derive_seed(int(seed), 0xCA4E, y))
        chosen = set(rng.permutation(len(items))[:n_val].tolist())
        for i, item in enumerate(items):
            (val if i in chosen else keep).append(item)
    return sorted(keep, key=lambda t: (t[1], str(t[0]))), sorted(val, key=lambda t: (t[1], str(t[0])))


def scan_task(
    root: str | os.PathLike,
    task: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> TaskData:
    """Find and list one task's tree under ``root``.

    ``classes`` fixes the class order (a checkpoint's); by default it is
    :data:`TASK_CLASSES` for attribute tasks (only those present, in that order) and the
    sorted person names for face recognition. Every split must hold the same classes.
    """
    task = canonical_task(task)
    task_dir = find_task_dir(root, task)
    split_dirs = _find_split_dirs(task_dir)
    for required in ("train", "test"):
        if required not in split_dirs:
            have = ", ".join(d.name for d in _subdirs(task_dir)) or "nothing"
            raise UserError(
                f"dataset: {task_dir} has no {required}/ folder (found: {have}); curated MTF trees are "
                "<task>/{train,val,test}/<class>/<image>"
            )
    scanned = {split: _scan_split(task, d) for split, d in split_dirs.items()}

    names = {split: set(by_class) for split, by_class in scanned.items()}
    ref = names["train"]
    for split, have in names.items():
        if have != ref:
            missing, extra = sorted(ref - have), sorted(have - ref)
            parts = []
            if missing:
                parts.append(f"{split} lacks {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
            if extra:
                parts.append(f"{split} has {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else "")
                             + " that train lacks")
            raise UserError(
                f"dataset: the splits of {task_dir} hold different classes: {'; '.join(parts)}. "
                "Every split needs the same class folders (add the missing ones or remove the extra)"
            )

    if classes is None:
        if task == "face_recognition":
            order: tuple[str, ...] = tuple(sorted(ref))
        else:
            order = tuple(c for c in TASK_CLASSES[task] if c in ref)
    else:
        order = tuple(classes)
        unknown = sorted(ref - set(order))
        if unknown:
            raise UserError(
                f"dataset: {task_dir} holds classes the model was not trained on: {', '.join(unknown[:10])}; "
                f"its classes are {', '.join(order[:10])}" + (" ..." if len(order) > 10 else "")
            )
    if len(order) < 2:
        raise UserError(f"dataset: {task_dir} holds a single class ({', '.join(order)}); a classifier needs two")
    index = {c: i for i, c in enumerate(order)}

    notes: list[str] = []
    renamed = sorted({
        f"{d.name} -> {canonical_class(task, d.name)}"
        for sd in split_dirs.values() for d in _subdirs(sd)
        if canonical_class(task, d.name) != d.name
    })
    if renamed:
        notes.append(f"dataset: {task}: class folders read as {', '.join(renamed)}")

    splits = {
        split: [(p, index[c]) for c in order if c in by_class for p in by_class[c]]
        for split, by_class in scanned.items()
    }
    carved = False
    if "val" not in splits:
        splits["train"], splits["val"] = carve_val(splits["train"], val_fraction, seed)
        carved = True
        notes.append(
            f"dataset: {task}: no val/ folder in {task_dir}; carved {len(splits['val']):,} of "
            f"{len(splits['train']) + len(splits['val']):,} train images as val "
            f"({val_fraction:.0%} of each class, stratified, seed {seed}); the rest train"
        )
    return TaskData(task=task, root=task_dir, classes=order, splits=splits, val_carved=carved, notes=tuple(notes))


# ---------------------------------------------------------------------------- decoded cache


def default_cache_dir() -> Path:
    """``$MTF_CACHE_DIR/classify``: the decoded images' folder below the one cache root
    (:func:`gan.util.cache_root`: ``$MTF_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtf-faces``, else
    ``~/.cache/mtf-faces``), beside the metrics' ``stats/``. Before, ``$MTF_CACHE_DIR`` itself
    was this folder; without the variable the folder is where it was."""
    return cache_root() / "classify"


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as ``uint8 [3, size, size]``: EXIF-rotated, RGB, central square, Lanczos."""
    rgb = square_resize(decode_rgb(path), size, "lanczos")  # [S, S, 3]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))  # [3, S, S]


@dataclass(frozen=True)
class CachedSplit:
    """A decoded split: ``images`` is a read-only ``uint8 [N, 3, S, S]`` memory map."""

    images: np.ndarray
    labels: np.ndarray  # int64 [N]
    files: list[Path]
    skipped: list[tuple[str, str]]
    path: Path
    built: bool  # True when this call decoded the images (False: reused)


def _cache_key(items: Sequence[tuple[Path, int]], size: int) -> str:
    h = hashlib.sha1()
    h.update(f"v{CACHE_VERSION}|{size}\n".encode())
    for p, _ in items:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def cached_split(
    items: Sequence[tuple[Path, int]],
    size: int,
    cache_dir: str | os.PathLike,
    name: str = "split",
    strict: bool = False,
    workers: int = 4,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CachedSplit:
    """Decode ``items`` once into ``<cache_dir>/<name>-<key>.npy`` and memory-map it.

    ``key`` hashes the paths, sizes, mtimes, ``size`` and :data:`CACHE_VERSION`. Files
    that cannot be decoded are left out and listed in ``<...>.skipped.txt`` (or, with
    ``strict``, raise). Decoding runs in ``workers`` threads (PIL releases the GIL).
    """
    if size < 8:
        raise UserError(f"dataset: cache size {size} px is too small; pass at least 8 (256 for the recipes)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    stem = cache_dir / f"{safe}-{size}px-{_cache_key(items, size)}"
    npy, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kept = meta["kept"]
        images = np.load(npy, mmap_mode="r")
        if images.shape == (len(kept), 3, size, size):
            skipped = [tuple(s) for s in meta["skipped"]]
            return CachedSplit(images, np.array([items[i][1] for i in kept], dtype=np.int64),
                               [items[i][0] for i in kept], skipped, npy, built=False)  # type: ignore[arg-type]

    from tqdm import tqdm

    def work(i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return i, _decode(items[i][0], size), ""
        except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
            return i, None, f"unreadable: {type(exc).__name__}: {exc}"

    arrays: dict[int, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr, reason in tqdm(pool.map(work, range(len(items))), total=len(items),
                                   desc=f"decode {name}", unit="img", disable=not progress, leave=False):
            if arr is None:
                if strict:
                    raise UserError(f"dataset: {items[i][0]} could not be decoded ({reason}); "
                                    "fix or remove it, or drop --strict to skip unreadable files")
                skipped.append((str(items[i][0]), reason))
            else:
                arrays[i] = arr
    kept = sorted(arrays)
    if not kept:
        raise UserError(f"dataset: none of the {len(items):,} images of {name} could be decoded; see the files")
    with atomic_path(npy) as tmp:
        # open_memmap keeps the name as given (np.save would append .npy to the temp name)
        out = np.lib.format.open_memmap(str(tmp), mode="w+", dtype=np.uint8, shape=(len(kept), 3, size, size))
        for j, i in enumerate(kept):
            out[j] = arrays[i]  # [3, S, S]
        out.flush()
        del out
    atomic_write_text(meta_path, json.dumps({"kept": kept, "skipped": skipped, "size": size,
                                             "version": CACHE_VERSION}))
    if skipped:
        atomic_write_text(stem.with_suffix(".skipped.txt"), "".join(f"{p}\t{r}\n" for p, r in skipped))
        log(f"dataset: {name}: skipped {len(skipped):,} of {len(items):,} files that could not be decoded "
            f"(listed in {stem.with_suffix('.skipped.txt')}); pass --strict to stop instead")
    images = np.load(npy, mmap_mode="r")
    return CachedSplit(images, np.array([items[i][1] for i in kept], dtype=np.int64),
                       [items[i][0] for i in kept], skipped, npy, built=True)


class CachedImageDataset(torch.utils.data.Dataset):
    """``(transform(uint8 [3, S, S]), label)`` pairs from a :class:`CachedSplit`; no decoding."""

    def __init__(self, split: CachedSplit, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.array(self.split.images[i]))  # [3, S, S] uint8, copied out of the map
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.split.labels[i])


class CachedBatches:
    """Whole batches ``(uint8 [B, 3, S, S], int64 [B])`` read straight from a :class:`CachedSplit`.

    For pipelines with no per-image work (no augmentation; resizing is done per batch on
    the device): each batch is one sorted fancy-index into the memory map, so an epoch
    costs a memory copy per batch and no worker processes are needed. ``shuffle`` draws
    the order from ``generator``; the images inside a batch are in file order (a batch is
    a set to SGD). ``drop_last_single`` drops a final batch of one image, which
    BatchNorm cannot train on.
    """

    def __init__(self, split: CachedSplit, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last_single: bool = False) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        n = len(split.labels)
        self._n = n - 1 if drop_last_single and n > batch_size and n % batch_size == 1 else n

    def __len__(self) -> int:
        return -(-self._n // self.batch_size)

    def __iter__(self):
        n = len(self.split.labels)
        order = torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        order = order[: self._n]
        for start in range(0, self._n, self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])
            x = torch.from_numpy(np.ascontiguousarray(self.split.images[idx]))  # [B, 3, S, S] uint8
            y = torch.from_numpy(self.split.labels[idx])  # [B]
            yield x, y
