"""``prepare``: any folder tree (or zip) of face images -> the training archive.

Non-curated MTF is a large tree of face crops of mixed sizes, formats and colour modes
whose label format is not documented. :func:`prepare` turns any such tree (or a zip of
one) into the archive the trainer reads, in the format of the published StyleGAN2-ADA
``dataset_tool`` (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data"), so other tools read it too:

* a zip of uncompressed PNGs named ``00000/img00000000.png``, ``00001/img00001000.png``
  (1,000 per folder), stored without compression (``ZIP_STORED``) because PNG is already
  compressed and the trainer reads members at random;
* ``dataset.json`` with ``{"labels": [[name, label], ...]}`` (or ``null``), extended with
  ``classes``, ``label_groups`` (several CSV columns), ``resolution`` and ``images``: per
  image its name, its ``source`` (path relative to SRC), ``sha1`` (of the decoded, resized
  RGB pixels, i.e. the bytes of the ``uint8 [H, W, 3]`` array) and its ``label``;
* ``sizes.json`` (histogram of the sources' short sides), ``skipped.txt`` (every file not
  used, with the reason) and ``duplicates.json`` (exact duplicates dropped, near duplicates
  kept but reported).

Every image goes through the same steps, in a worker process when ``workers > 1``:
decode, apply the EXIF orientation, convert to 8-bit RGB (:func:`gan.images.decode_rgb`),
crop the central square and resize (:func:`gan.images.square_resize`: box by default,
Lanczos to enlarge, which is counted). Output order is the sorted order of source paths
whatever the number of workers, and the archive bytes are identical between runs (fixed zip
timestamps). Labels come from :mod:`gan.labels`.

Exact duplicates (same SHA-1 of the resized pixels) are dropped: a face in the training
set twice is seen twice as often, and the same image in train and test inflates scores.
Near duplicates (re-encodings, small crops, tiny edits) are found with a 64-bit difference
hash (dHash: the signs of horizontal gradients of a 9x8 grey thumbnail; Krawetz 2013) and
reported, not dropped, because a large threshold would also match different photographs
of the same person. Two images are near duplicates when their hashes differ in at most
:data:`NEAR_DUPLICATE_BITS` bits. Pairs are found by multi-index hashing (Norouzi et al.
2012): split the hash into ``bits + 1`` blocks; by the pigeonhole principle two hashes
within ``bits`` agree exactly on at least one block, so only images that share a block
value are compared, instead of all n^2 pairs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import signal
import time
import zipfile
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from gan.images import FILTERS, IMAGE_EXTENSIONS, decode_rgb, is_hidden, is_image_name, square_resize
from gan.labels import Labels, csv_labels, folder_labels
from gan.util import UserError, atomic_path

__all__ = [
    "NEAR_DUPLICATE_BITS", "SIZE_BUCKETS", "PrepareOptions", "PrepareSummary", "prepare", "archive_name", "dhash",
    "find_near_duplicates",
]

#: Hamming distance (of 64 bits) up to which two dHashes are reported as near duplicates.
#: Measured on 100 synthetic 64-px faces (20 people): re-encoding as JPEG q70 moves the
#: hash by <= 3 bits in 97.5 % of images (0.9 on average), a +10 brightness shift by
#: <= 1; 11 of 4,750 pairs of different people fall within 3 bits (0.23 %), 16 within 4.
#: Faces share a layout, so a larger threshold mostly adds false alarms.
NEAR_DUPLICATE_BITS = 3
#: Upper edges of the source-size histogram buckets (short side, pixels).
SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024)
#: Fixed zip timestamp so that the same input gives byte-identical archives.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CROPS = ("center", "none")
#: Reasons for not using a file that are problems with the input (``strict`` stops on
#: them); refusals asked for by an option (``--min-size``, ``--crop none``) never stop.
_BROKEN = "broken"
_REFUSED = "refused"


# ---------------------------------------------------------------------------- dedup


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash of an ``uint8 [H, W, 3]`` image (Krawetz 2013).

    A 9x8 grey thumbnail; bit ``8*y + x`` is set when pixel ``x + 1`` of row ``y`` is
    brighter than pixel ``x``. Robust to re-encoding, mild blur and brightness changes.
    """
    grey = Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX)
    px = np.asarray(grey, dtype=np.int16)  # [8, 9]
    bits = (px[:, 1:] > px[:, :-1]).reshape(-1)  # [64]
    return int(np.packbits(bits.astype(np.uint8), bitorder="little").view("<u8")[0])


def find_near_duplicates(hashes: Sequence[int], max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, whose 64-bit hashes differ in <= ``max_bits`` bits.

    Multi-index hashing: the hash is split into ``max_bits + 1`` blocks and only images
    that agree exactly on some block are compared (pigeonhole), so the cost grows with the
    sizes of the block buckets rather than with n^2. Each pair is reported once, from
    the first block on which it agrees.
    """
    n = len(hashes)
    if n < 2:
        return []
    h = np.asarray([int(x) & 0xFFFFFFFFFFFFFFFF for x in hashes], dtype=np.uint64)  # [n]
    nblocks = max_bits + 1
    edges = [round(64 * k / nblocks) for k in range(nblocks + 1)]
    keys = []
    for k in range(nblocks):
        width = edges[k + 1] - edges[k]
        keys.append((h >> np.uint64(edges[k])) & np.uint64((1 << width) - 1))  # [n]
    pairs: list[tuple[int, int, int]] = []
    for k in range(nblocks):
        order = np.argsort(keys[k], kind="stable")
        sorted_keys = keys[k][order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])  # [g]
            # Compare in row chunks so a huge bucket cannot allocate g^2 at once.
            for r0 in range(0, len(members), 1024):
                rows = members[r0:r0 + 1024]
                dist = np.bitwise_count(h[rows][:, None] ^ h[members][None, :])  # [r, g]
                ii, jj = np.nonzero(dist <= max_bits)
                for a, b in zip(ii.tolist(), jj.tolist()):
                    i, j = int(rows[a]), int(members[b])
                    if i >= j:
                        continue
                    # Reported from the first block the pair shares, so exactly once.
                    if any(keys[m][i] == keys[m][j] for m in range(k)):
                        continue
                    pairs.append((i, j, int(dist[a, b])))
    pairs.sort()
    return pairs


def archive_name(index: int) -> str:
    """Member name of image ``index``, as the published ``dataset_tool`` names them."""
    s = f"{index:08d}"
    return f"{s[:5]}/img{s}.png"


def _size_bucket(short: int) -> str:
    lo = 0
    for hi in SIZE_BUCKETS:
        if short < hi:
            return f"<{hi}" if lo == 0 else f"{lo}-{hi - 1}"
        lo = hi
    return f">={SIZE_BUCKETS[-1]}"


def _bucket_names() -> list[str]:
    names, lo = [], 0
    for hi in SIZE_BUCKETS:
        names.append(f"<{hi}" if lo == 0 else f"{lo}-{hi - 1}")
        lo = hi
    return names + [f">={SIZE_BUCKETS[-1]}"]

# ---------------------------------------------------------------------------- sources


class _Source:
    """A folder or a zip of images; reads one file's bytes by relative path.

    Picklable: the zip is opened lazily, once per process (fork or spawn), so worker
    processes never share a file handle with the parent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self.prefix = ""  # a zip's single top-level folder, stripped from names
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"], state["_zip_pid"] = None, -1
        return state

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None

    def list(self) -> list[str]:
        """Sorted relative posix paths of image files; hidden files and folders (``.*``,
        ``__MACOSX``) are ignored, e.g. macOS ``._x.jpg`` resource forks."""
        names: list[str] = []
        if self.is_zip:
            try:
                members = [i.filename for i in self._zipfile().infolist() if not i.is_dir()]
            except zipfile.BadZipFile as exc:
                raise UserError(f"prepare: {self.path} is not a folder or a readable zip ({exc})") from None
            tops = {m.split("/", 1)[0] for m in members}
            if len(tops) == 1 and all("/" in m for m in members):
                self.prefix = tops.pop() + "/"  # `zip -r x.zip folder/` wraps everything in folder/
            for m in members:
                rel = m[len(self.prefix):]
                if is_image_name(rel):
                    names.append(rel)
        else:
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames[:] = [d for d in dirnames if not is_hidden(d)]
                base = Path(dirpath).relative_to(self.path)
                for f in filenames:
                    rel = (base / f).as_posix() if str(base) != "." else f
                    if is_image_name(rel):
                        names.append(rel)
        return sorted(names)

    def read(self, rel: str) -> bytes:
        if self.is_zip:
            return self._zipfile().read(self.prefix + rel)
        return (self.path / rel).read_bytes()


# ---------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class _Options:
    resolution: int
    crop: str
    filter: str
    min_size: int


@dataclass
class _Result:
    index: int
    status: str = "ok"  # ok | broken | refused
    reason: str = ""
    png: bytes = b""
    sha1: str = ""
    hash64: int = 0
    size: tuple[int, int] = (0, 0)  # source (width, height) after EXIF orientation
    upscaled: bool = False


# Set in each worker by _init_worker (and in-process for workers=1).
_WORKER: dict[str, Any] = {}


def _init_worker(source: _Source, options: _Options, ignore_sigint: bool = False) -> None:
    _WORKER["source"], _WORKER["options"] = source, options
    if ignore_sigint:
        # Ctrl-C reaches the whole process group; only the parent handles it (it stops the
        # pool and removes the temporary archive), so workers print no tracebacks.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process(task: tuple[int, str]) -> _Result:
    """Read, decode, convert, crop, resize and encode one image (runs in a worker)."""
    index, rel = task
    source: _Source = _WORKER["source"]
    opt: _Options = _WORKER["options"]
    res = _Result(index)
    try:
        data = source.read(rel)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        res.status, res.reason = _BROKEN, f"cannot read file: {exc}"
        return res
    if not data:
        res.status, res.reason = _BROKEN, "empty file (0 bytes)"
        return res
    try:
        rgb = decode_rgb(data)  # [H, W, 3]; truncated and corrupt files fail here, not later
    except Image.DecompressionBombError as exc:
        res.status, res.reason = _BROKEN, f"too large to decode safely: {exc}"
        return res
    except Image.UnidentifiedImageError:
        # (PIL's message names the BytesIO object's address, which would vary per run.)
        res.status, res.reason = _BROKEN, "not an image: no decoder recognises its contents"
        return res
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError...)
        res.status, res.reason = _BROKEN, f"cannot decode: {type(exc).__name__}: {exc}"
        return res
    h, w = rgb.shape[:2]
    res.size = (w, h)
    short = min(w, h)
    if short < opt.min_size:
        res.status, res.reason = _REFUSED, f"short side {short} px is below --min-size {opt.min_size}"
        return res
    if w != h and opt.crop == "none":
        res.status, res.reason = _REFUSED, f"not square ({w}x{h}); pass --crop center to crop it"
        return res
    res.upscaled = short < opt.resolution
    rgb = square_resize(rgb, opt.resolution, opt.filter)  # [R, R, 3]
    res.sha1 = hashlib.sha1(rgb.tobytes()).hexdigest()
    res.hash64 = dhash(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=0, optimize=False)  # stored, see module doc
    res.png = buf.getvalue()
    return res



@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`prepare` wrote and what it left out.

    ``skipped`` lists ``(source, reason)`` for every image file not in the archive
    except exact duplicates, which are in ``exact_duplicates`` as ``(dropped, kept)``;
    ``near_duplicates`` holds ``(source_a, source_b, bits)`` pairs that were kept.
    """

    dest: Path
    count: int
    resolution: int
    found: int
    skipped: list[tuple[str, str]]
    upscaled: int
    exact_duplicates: list[tuple[str, str]]
    near_duplicates: list[tuple[str, str, int]]
    size_histogram: dict[str, int]
    below_target: int
    classes: Any
    label_dim: int
    csv_missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_exact_duplicates(self) -> int:
        return len(self.exact_duplicates)

    @property
    def num_near_duplicates(self) -> int:
        return len(self.near_duplicates)

    def format(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"prepare: wrote {self.count:,} images at {self.resolution}x{self.resolution} to {self.dest} "
            f"({self.found:,} image files found, {self.seconds:.1f} s)",
            f"  source short sides: "
            + ", ".join(f"{k}: {v:,}" for k, v in self.size_histogram.items() if v)
            + f"; {self.below_target:,} below {self.resolution} px ({self.upscaled:,} upscaled with lanczos)",
            f"  exact duplicates dropped: {self.num_exact_duplicates:,}; near duplicates reported "
            f"(<= {NEAR_DUPLICATE_BITS} of 64 dHash bits): {self.num_near_duplicates:,} pairs (duplicates.json)",
        ]
        if self.classes is not None:
            if isinstance(self.classes, dict):
                desc = "; ".join(f"{c}: {', '.join(v)}" for c, v in self.classes.items())
            else:
                desc = ", ".join(self.classes[:20]) + (" ..." if len(self.classes) > 20 else "")
            lines.append(f"  labels ({self.label_dim} dims): {desc}")
        if self.csv_missing:
            ex = ", ".join(self.csv_missing[:3])
            lines.append(f"  {len(self.csv_missing):,} CSV rows name files that are not in SRC (e.g. {ex})")
        if self.skipped:
            reasons = Counter(_reason_kind(r) for _, r in self.skipped)
            lines.append(
                f"  skipped {len(self.skipped):,} files ("
                + ", ".join(f"{k}: {v:,}" for k, v in reasons.most_common())
                + f"); listed with reasons in skipped.txt inside {self.dest.name}; pass --strict to stop instead"
            )
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0]


@dataclass(frozen=True)
class PrepareOptions:
    """Everything :func:`prepare` takes besides SRC and DEST (see its docstring)."""

    resolution: int
    labels: str | os.PathLike | None = None
    label_columns: tuple[str, ...] = ()
    crop: str = "center"
    filter: str = "box"
    min_size: int = 0
    workers: int = 1
    max_images: int | None = None
    strict: bool = False
    progress: bool = True
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS

    @property
    def by_folder(self) -> bool:
        return self.labels is not None and str(self.labels) == "folder"

    def check(self) -> None:
        """A :class:`UserError` naming the option for any value out of range."""
        res = self.resolution
        if isinstance(res, bool) or not isinstance(res, int) or res < 4 or res & (res - 1):
            raise UserError(
                f"prepare: --resolution {res} is not a power of two >= 4; the trainer needs one "
                "(e.g. 64, 128, 256)"
            )
        if self.crop not in _CROPS:
            raise UserError(f"prepare: --crop {self.crop!r} is unknown; pass one of {', '.join(_CROPS)}")
        if self.filter not in FILTERS:
            raise UserError(f"prepare: --filter {self.filter!r} is unknown; pass one of {', '.join(FILTERS)}")
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise UserError(f"prepare: --min-size {self.min_size} must be a non-negative integer")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"prepare: --workers {self.workers} must be at least 1")
        mx = self.max_images
        if mx is not None and (not isinstance(mx, int) or mx < 1):
            raise UserError(f"prepare: --max-images {mx} must be at least 1")
        if self.label_columns and self.labels is None:
            raise UserError("prepare: --label-column needs --labels FILE.csv")
        if self.by_folder and self.label_columns:
            raise UserError("prepare: --label-column only goes with --labels FILE.csv, not --labels folder")


def _process_chunk(tasks: list[tuple[int, str]]) -> list[_Result]:
    return [_process(t) for t in tasks]


def _results(tasks: list[tuple[int, str]], source: _Source, options: _Options, workers: int) -> Iterator[_Result]:
    """Results in task order; decoding runs in ``workers`` processes when > 1.

    Chunks of tasks are submitted to a ``ProcessPoolExecutor`` a few at a time (a
    sliding window of ``2 * workers`` chunks) and collected in submission order, so the
    output order never depends on timing and memory stays bounded. On an early stop
    (``max_images``, an error, Ctrl-C) pending chunks are cancelled and the running ones
    finish (a fraction of a second): worker processes are never killed mid-task, which
    is what makes ``multiprocessing.Pool.terminate`` deadlock now and then (seen here
    on Python 3.11 when stopping early).
    """
    if workers == 1 or len(tasks) < 2:
        _init_worker(source, options)
        for t in tasks:
            yield _process(t)
        return
    size = max(1, min(16, len(tasks) // (workers * 8)))
    chunks = iter([tasks[i:i + size] for i in range(0, len(tasks), size)])
    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(), initializer=_init_worker,
        initargs=(source, options, True),
    )
    pending: deque = deque()
    try:
        for chunk in itertools.islice(chunks, 2 * workers):
            pending.append(executor.submit(_process_chunk, chunk))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool:
                raise UserError(
                    "prepare: a worker process died (out of memory?); pass fewer --workers"
                ) from None
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(executor.submit(_process_chunk, chunk))
            yield from done
    finally:
        for f in pending:
            f.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def prepare(src: str | os.PathLike, dest: str | os.PathLike, **options: Any) -> PrepareSummary:
    """Turn a folder tree (or zip) of face images into a training archive ``dest`` (.zip).

    ``options`` are the fields of :class:`PrepareOptions` (``resolution`` is required):

    ``labels``: ``None`` (unlabelled), ``"folder"`` (first-level folder under ``src``,
    class index in sorted order) or a CSV path with a ``file`` column (path relative to
    ``src``, or a bare file name when it is unique) and ``label_columns``: one column gives
    an integer label, several give a joint vector of one-hot groups in the given order
    (layout in ``dataset.json["label_groups"]``). Class names are sorted (numerically when
    they are all integers) over the CSV rows that match an image. With labels, an image
    without a label (no CSV row, an empty cell, a file directly in ``src`` with
    ``--labels folder``) is skipped and reported, not an error, because non-curated sets
    routinely hold unlabelled extras; ``strict=True`` makes it an error.

    ``strict``: stop at the first broken file (unreadable, corrupt, empty, not an image,
    no label) with an error naming it, instead of skipping it. Files refused on purpose by
    ``min_size`` or ``crop="none"`` are always skipped and reported.

    ``max_images``: stop after writing that many images (the first in sorted order).

    ``dest`` must not exist: nothing a user made is overwritten. The archive is written
    under a temporary name beside ``dest`` and renamed at the end, so a crash or Ctrl-C
    leaves nothing under ``dest``. Raises :class:`gan.util.UserError` for problems the
    user can fix.
    """
    t0 = time.time()
    if "label_columns" in options:
        options["label_columns"] = tuple(options["label_columns"])
    opt = PrepareOptions(**options)
    opt.check()
    src, dest = Path(src), Path(dest)
    _check_paths(src, dest)
    source = _Source(src)
    try:
        names = source.list()
        if not names:
            raise UserError(
                f"prepare: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {src}; "
                "pass the folder that holds the face images"
            )
        lab = _read_labels(src, names, opt)
        tasks, skipped = _plan(src, names, lab, opt)
        tally = _Tally(opt.resolution, skipped)
        with atomic_path(dest) as tmp:
            _write_archive(tmp, src, names, tasks, source, lab, opt, tally)
    finally:
        source.close()
    return PrepareSummary(
        dest=dest, count=len(tally.kept), resolution=opt.resolution, found=len(names), skipped=tally.skipped,
        upscaled=tally.upscaled, exact_duplicates=tally.exact, near_duplicates=tally.near,
        size_histogram=tally.histogram, below_target=tally.below, classes=lab.classes if lab else None,
        label_dim=lab.dim if lab else 0, csv_missing=lab.csv_missing if lab else [], seconds=time.time() - t0,
    )


def _check_paths(src: Path, dest: Path) -> None:
    if not src.exists():
        raise UserError(f"prepare: source {src} does not exist; pass a folder of images or a zip of one")
    if dest.exists():
        raise UserError(f"prepare: {dest} already exists and is never overwritten; pass another destination name")
    if dest.suffix.lower() != ".zip":
        raise UserError(f"prepare: destination {dest} must end in .zip (the training archive is a zip)")


def _read_labels(src: Path, names: list[str], opt: PrepareOptions) -> Labels | None:
    if opt.labels is None:
        return None
    lab = folder_labels(names) if opt.by_folder else csv_labels(Path(opt.labels), opt.label_columns, names)
    if not lab.by_source:
        raise UserError(
            f"prepare: none of the {len(names):,} images under {src} has a label in {opt.labels} "
            f"({len(lab.csv_missing):,} CSV rows name files not found, e.g. {', '.join(lab.csv_missing[:3])}); "
            "the CSV 'file' column must hold paths relative to SRC"
        )
    return lab


def _plan(src: Path, names: list[str], lab: Labels | None, opt: PrepareOptions
          ) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    """``(tasks, skipped)``: the ``(index, name)`` pairs to decode, and the unlabelled ones."""
    skipped: list[tuple[str, str]] = []
    tasks: list[tuple[int, str]] = []
    for i, n in enumerate(names):
        if lab is not None and n not in lab.by_source:
            if opt.strict:
                raise UserError(f"prepare: {src / n}: {lab.missing_reason[n]}; fix it or leave out --strict to skip it")
            skipped.append((n, lab.missing_reason[n]))
        else:
            tasks.append((i, n))
    return tasks, skipped


class _Tally:
    """What the write loop has seen so far: kept images, duplicates, skips and source sizes."""

    def __init__(self, resolution: int, skipped: list[tuple[str, str]]) -> None:
        self.resolution = resolution
        self.histogram = dict.fromkeys(_bucket_names(), 0)
        self.below = self.upscaled = 0
        self.seen: dict[str, str] = {}  # sha1 -> source
        self.exact: list[tuple[str, str]] = []
        self.kept: list[dict] = []
        self.hashes: list[int] = []
        self.skipped = skipped
        self.near: list[tuple[str, str, int]] = []

    def count_size(self, r: _Result) -> None:
        if r.size != (0, 0):
            short = min(r.size)
            self.histogram[_size_bucket(short)] += 1
            self.below += short < self.resolution

    def keep(self, r: _Result, rel: str) -> str | None:
        """The archive name for a new image, or None for an exact duplicate (recorded)."""
        if r.sha1 in self.seen:
            self.exact.append((rel, self.seen[r.sha1]))
            return None
        self.seen[r.sha1] = rel
        self.upscaled += r.upscaled
        return archive_name(len(self.kept))


def _write_archive(tmp: Path, src: Path, names: list[str], tasks: list[tuple[int, str]], source: _Source,
                   lab: Labels | None, opt: PrepareOptions, tally: _Tally) -> None:
    """Decode ``tasks`` (in worker processes when asked) into the zip at ``tmp``, in order."""
    from tqdm import tqdm

    options = _Options(opt.resolution, opt.crop, opt.filter, opt.min_size)
    bar = tqdm(total=len(tasks), desc="prepare", unit="img", disable=not opt.progress, dynamic_ncols=True)
    try:
        # closing(): stop the worker pool as soon as the loop ends, also on an error
        # (a traceback would otherwise keep the generator, and the pool, alive).
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf, \
                contextlib.closing(_results(tasks, source, options, opt.workers)) as results:
            for r in results:
                bar.update(1)
                rel = names[r.index]
                tally.count_size(r)
                if r.status != "ok":
                    if opt.strict and r.status == _BROKEN:
                        raise UserError(
                            f"prepare: {src / rel}: {r.reason}; remove or fix it, or leave out --strict "
                            "to skip such files (they are listed in skipped.txt)"
                        )
                    tally.skipped.append((rel, r.reason))
                    continue
                name = tally.keep(r, rel)
                if name is None:
                    continue
                _write_member(zf, name, r.png)
                label = lab.by_source[rel] if lab is not None else None
                tally.kept.append({"name": name, "source": rel, "sha1": r.sha1, "size": list(r.size), "label": label})
                tally.hashes.append(r.hash64)
                if opt.max_images is not None and len(tally.kept) >= opt.max_images:
                    break
            if not tally.kept:
                reasons = "; ".join(f"{s}: {why}" for s, why in tally.skipped[:3])
                raise UserError(
                    f"prepare: none of the {len(names):,} image files under {src} could be used "
                    f"({reasons}); nothing was written"
                )
            _write_metadata(zf, lab, opt, tally)
    finally:
        bar.close()


def _write_metadata(zf: zipfile.ZipFile, lab: Labels | None, opt: PrepareOptions, tally: _Tally) -> None:
    """``dataset.json``, ``sizes.json``, ``duplicates.json`` and ``skipped.txt``."""
    kept = tally.kept
    tally.near = [
        (kept[i]["source"], kept[j]["source"], d)
        for i, j, d in find_near_duplicates(tally.hashes, opt.near_duplicate_bits)
    ]
    tally.skipped.sort(key=lambda s: s[0])
    meta = {
        "labels": [[k["name"], k["label"]] for k in kept] if lab is not None else None,
        "classes": lab.classes if lab is not None else None,
        "label_groups": lab.groups if lab is not None else None,
        "label_source": None if lab is None else (
            "folder" if opt.by_folder else {"csv": Path(opt.labels).name, "columns": list(opt.label_columns)}
        ),
        "resolution": opt.resolution,
        "num_images": len(kept),
        "images": kept,
    }
    sizes = {
        "resolution": opt.resolution,
        "below_target": tally.below,
        "upscaled": tally.upscaled,
        "buckets": tally.histogram,
        "bucket_of": "short side of the source after EXIF orientation, pixels",
    }
    dups = {
        "near_duplicate_bits": opt.near_duplicate_bits,
        "exact": [{"dropped": a, "kept": b} for a, b in tally.exact],
        "near": [{"a": a, "b": b, "bits": d} for a, b, d in tally.near],
    }
    _write_member(zf, "dataset.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
    _write_member(zf, "sizes.json", json.dumps(sizes, indent=1).encode())
    _write_member(zf, "duplicates.json", json.dumps(dups, indent=1, ensure_ascii=False).encode())
    _write_member(zf, "skipped.txt", "".join(f"{s}\t{why}\n" for s, why in tally.skipped).encode())


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


