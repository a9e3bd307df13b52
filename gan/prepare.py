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
* ``sizes.json`` (histogram of the sources' short sides), ``duplicates.json`` (exact
  duplicates dropped, near duplicates kept but reported) and ``skipped.txt``: every other
  file under SRC, one line each, ``reason<TAB>detail<TAB>path``, the reason one word of
  :data:`SKIP_REASONS`. Every file under SRC is accounted for exactly once: archived, a
  dropped duplicate or skipped (asserted, and printed by :meth:`PrepareSummary.format`).

Every image goes through the same steps, in a worker process when ``workers > 1``:
decode, apply the EXIF orientation, convert to 8-bit RGB (:func:`gan.images.decode_rgb`),
crop the central square and resize (:func:`gan.images.square_resize`: box by default,
Lanczos to enlarge, which is counted). Output order is the sorted order of source paths
whatever the number of workers, and the archive bytes are identical between runs (fixed zip
timestamps). Labels come from :mod:`gan.labels`.

Exact duplicates (same SHA-1 of the resized pixels) are dropped and near duplicates (a
64-bit dHash within :data:`gan.duplicates.NEAR_DUPLICATE_BITS` bits) reported, as
:mod:`gan.duplicates` explains.
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
from typing import Any, Iterator, NamedTuple

from PIL import Image

from gan.duplicates import NEAR_DUPLICATE_BITS, dhash, find_near_duplicates
from gan.images import (
    FILTERS, IMAGE_EXTENSIONS, decode_rgb, is_hidden, is_image_name, is_system_path, square_resize,
)
from gan.labels import Labels, csv_labels, folder_labels
from gan.util import UserError, atomic_path

__all__ = [
    "SIZE_BUCKETS", "SKIP_REASONS", "PrepareOptions", "PrepareSummary", "Skipped", "prepare", "archive_name",
]

#: Upper edges of the source-size histogram buckets (short side, pixels).
SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024)
#: Fixed zip timestamp so that the same input gives byte-identical archives.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CROPS = ("center", "none")
#: Why a file under SRC is not in the archive (nor a dropped duplicate): the first column of
#: ``skipped.txt``. A file gets the first that applies, in this order (the order a file meets
#: the checks, and the summary's). ``strict`` stops on ``undecodable`` and ``no-label`` (problems
#: with the input); the others are what the user asked for or never were images.
SKIP_REASONS = {
    "system-file": "hidden or system file, never decoded (._* AppleDouble forks, __MACOSX/, .DS_Store, "
                   "Thumbs.db, desktop.ini, dotfiles, anything in a dot-folder)",
    "not-image": f"not an image extension ({' '.join(IMAGE_EXTENSIONS)})",
    "no-label": "no label (no CSV row, an empty cell, not in a class folder with --labels folder)",
    "past-max-images": "not read: --max-images images were written before it",
    "undecodable": "cannot be read or decoded (corrupt, truncated, empty, not an image inside)",
    "too-small": "short side below --min-size",
    "not-square": "not square, with --crop none",
}


class Skipped(NamedTuple):
    """One line of ``skipped.txt``."""

    source: str  # path relative to SRC (in a zip: to its stripped top folder)
    reason: str  # a key of SKIP_REASONS
    detail: str  # one line for a person, e.g. the decoder's error


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
    return [_size_bucket(lo) for lo in (0, *SIZE_BUCKETS)]

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

    def list(self) -> tuple[list[str], list[Skipped]]:
        """``(images, others)``: the sorted relative posix paths of the image files, and every
        other file, never read: hidden or system files (:func:`gan.images.is_system_path`,
        e.g. macOS ``._x.jpg`` resource forks, ``__MACOSX/``) and files without an image
        extension."""
        images: list[str] = []
        others: list[Skipped] = []
        for rel in self._zip_names() if self.is_zip else self._walk():
            if is_system_path(rel):
                part = next(p for p in rel.split("/") if is_hidden(p))
                others.append(Skipped(rel, "system-file", f"hidden or system name {part!r}, not read"))
            elif not is_image_name(rel):
                ext = os.path.splitext(rel)[1] or "none"
                others.append(Skipped(rel, "not-image", f"extension {ext} is not one of {' '.join(IMAGE_EXTENSIONS)}"))
            else:
                images.append(rel)
        return sorted(images), others

    def _walk(self) -> Iterator[str]:
        """Every file below the folder, also in hidden folders (listed, never read) and through
        symbolic links to folders (once each: a link back into the tree is not followed again).
        A folder that cannot be listed stops with its name: its files could not be accounted for."""
        def fail(exc: OSError) -> None:
            raise UserError(f"prepare: cannot list {exc.filename} ({exc.strerror or exc}); its files could not "
                            f"be accounted for: fix its permissions or move it out of {self.path}")

        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.path, onerror=fail, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a link cycle, or a second link to one folder
                dirnames[:] = []
                continue
            seen.add(real)
            base = Path(dirpath).relative_to(self.path)
            for f in filenames:
                yield (base / f).as_posix() if str(base) != "." else f

    def _zip_names(self) -> list[str]:
        """Member names, less the zip's single top-level folder when all the rest is inside it
        (`zip -r x.zip folder/` and macOS Finder wrap everything in folder/; system members such
        as Finder's ``__MACOSX/`` do not count as a second folder and keep their full names)."""
        try:
            members = [i.filename for i in self._zipfile().infolist() if not i.is_dir()]
        except zipfile.BadZipFile as exc:
            raise UserError(f"prepare: {self.path} is not a folder or a readable zip ({exc})") from None
        real = [m for m in members if not is_system_path(m)]
        tops = {m.split("/", 1)[0] for m in real}
        if len(tops) == 1 and all("/" in m for m in real):
            self.prefix = tops.pop() + "/"
        n = len(self.prefix)
        return [m[n:] if m.startswith(self.prefix) else m for m in members]

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
    status: str = "ok"  # ok | undecodable | too-small | not-square (SKIP_REASONS)
    reason: str = ""  # the detail, for a person
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
        res.status, res.reason = "undecodable", f"cannot read file: {exc}"
        return res
    if not data:
        res.status, res.reason = "undecodable", "empty file (0 bytes)"
        return res
    try:
        rgb = decode_rgb(data)  # [H, W, 3]; truncated and corrupt files fail here, not later
    except Image.DecompressionBombError as exc:
        res.status, res.reason = "undecodable", f"too large to decode safely: {exc}"
        return res
    except Image.UnidentifiedImageError:
        # (PIL's message names the BytesIO object's address, which would vary per run.)
        res.status, res.reason = "undecodable", "not an image: no decoder recognises its contents"
        return res
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError...)
        res.status, res.reason = "undecodable", f"cannot decode: {type(exc).__name__}: {exc}"
        return res
    h, w = rgb.shape[:2]
    res.size = (w, h)
    short = min(w, h)
    if short < opt.min_size:
        res.status, res.reason = "too-small", f"short side {short} px is below --min-size {opt.min_size}"
        return res
    if w != h and opt.crop == "none":
        res.status, res.reason = "not-square", f"not square ({w}x{h}); pass --crop center to crop it"
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

    Each of the ``files`` files under SRC is in exactly one place: one of the ``count``
    archived images, ``exact_duplicates`` as ``(dropped, kept)``, or ``skipped`` as a
    :class:`Skipped` ``(source, reason, detail)``; ``found`` of them have an image name.
    ``near_duplicates`` holds ``(source_a, source_b, bits)`` pairs that were kept.
    """

    dest: Path
    count: int
    resolution: int
    found: int
    files: int
    skipped: list[Skipped]
    upscaled: int
    exact_duplicates: list[tuple[str, str]]
    near_duplicates: list[tuple[str, str, int]]
    size_histogram: dict[str, int]
    below_target: int
    classes: Any
    label_dim: int
    csv_missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.files != self.count + self.num_exact_duplicates + len(self.skipped):  # not an assert: kept under -O
            raise AssertionError("prepare: a file is unaccounted for")

    @property
    def num_exact_duplicates(self) -> int:
        return len(self.exact_duplicates)

    @property
    def reasons(self) -> dict[str, int]:
        """Skipped files per reason, every reason of :data:`SKIP_REASONS` (in its order)."""
        counts = Counter(k.reason for k in self.skipped)
        return {r: counts[r] for r in SKIP_REASONS}

    @property
    def num_near_duplicates(self) -> int:
        return len(self.near_duplicates)

    def format(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"prepare: wrote {self.count:,} images at {self.resolution}x{self.resolution} to {self.dest} "
            f"({self.found:,} image files found, {self.seconds:.1f} s)",
            f"  {self.files:,} files read = {self.count:,} archived + {self.num_exact_duplicates:,} duplicates "
            f"+ {len(self.skipped):,} skipped",
            "  source short sides: "
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
            reasons = self.reasons
            lines.append(
                "  skipped: " + ", ".join(f"{k}: {v:,}" for k, v in reasons.items() if v)
                + f" (one line each in skipped.txt inside {self.dest.name})"
            )
            if reasons["undecodable"] or reasons["no-label"]:
                lines.append("  pass --strict to stop at an undecodable or unlabelled file instead")
        return "\n".join(lines)


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
    ``min_size`` or ``crop="none"`` are always skipped and reported, and so are hidden or
    system files and files without an image extension (never read).

    ``max_images``: stop after writing that many images (the first in sorted order); the
    image files not reached are listed as ``past-max-images``.

    Every file under ``src`` ends up in exactly one place: the archive, the exact duplicates
    of ``duplicates.json`` or ``skipped.txt`` with a reason of :data:`SKIP_REASONS` (checked
    before the archive is renamed into place).

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
        names, others = source.list()
        if not names:
            raise UserError(
                f"prepare: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {src} "
                f"({len(others):,} other files); pass the folder that holds the face images"
            )
        lab = _read_labels(src, names, opt)
        tasks, skipped = _plan(src, names, lab, opt)
        tally = _Tally(opt.resolution, others + skipped)
        with atomic_path(dest) as tmp:
            _write_archive(tmp, src, names, tasks, source, lab, opt, tally)
            _check_accounting(names + [o.source for o in others], tally)
    finally:
        source.close()
    return PrepareSummary(
        dest=dest, count=len(tally.kept), resolution=opt.resolution, found=len(names),
        files=len(names) + len(others), skipped=tally.skipped,
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


def _check_accounting(files: list[str], tally: _Tally) -> None:
    """Every file under SRC exactly once: archived, a dropped exact duplicate or skipped."""
    placed = Counter(k["source"] for k in tally.kept)
    placed.update(dropped for dropped, _ in tally.exact)
    placed.update(k.source for k in tally.skipped)
    listed = Counter(files)
    if placed != listed:  # not an assert statement: this check must also run under python -O
        raise AssertionError(f"prepare: files unaccounted for {listed - placed}, counted twice {placed - listed}")


def _plan(src: Path, names: list[str], lab: Labels | None, opt: PrepareOptions
          ) -> tuple[list[tuple[int, str]], list[Skipped]]:
    """``(tasks, skipped)``: the ``(index, name)`` pairs to decode, and the unlabelled ones."""
    skipped: list[Skipped] = []
    tasks: list[tuple[int, str]] = []
    for i, n in enumerate(names):
        if lab is not None and n not in lab.by_source:
            if opt.strict:
                raise UserError(f"prepare: {src / n}: {lab.missing_reason[n]}; fix it or leave out --strict to skip it")
            skipped.append(Skipped(n, "no-label", lab.missing_reason[n]))
        else:
            tasks.append((i, n))
    return tasks, skipped


class _Tally:
    """What the write loop has seen so far: kept images, duplicates, skips and source sizes."""

    def __init__(self, resolution: int, skipped: list[Skipped]) -> None:
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
            done = 0  # tasks whose result was taken; results come in task order
            for r in results:
                bar.update(1)
                done += 1
                rel = names[r.index]
                tally.count_size(r)
                if r.status != "ok":
                    if opt.strict and r.status == "undecodable":
                        raise UserError(
                            f"prepare: {src / rel}: {r.reason}; remove or fix it, or leave out --strict "
                            "to skip such files (they are listed in skipped.txt)"
                        )
                    tally.skipped.append(Skipped(rel, r.status, r.reason))
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
            tally.skipped += [Skipped(n, "past-max-images", f"--max-images {opt.max_images} reached before it")
                              for _, n in tasks[done:]]
            if not tally.kept:
                bad = [k for k in tally.skipped if k.reason not in ("system-file", "not-image")]
                reasons = "; ".join(f"{k.source}: {k.detail}" for k in bad[:3])
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
    order = {r: i for i, r in enumerate(SKIP_REASONS)}
    tally.skipped.sort(key=lambda k: (order[k.reason], k.source))
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
    # reason<TAB>detail<TAB>path, one line per file: the path last (it may hold a tab), line breaks escaped.
    lines = ("\t".join((k.reason, " ".join(k.detail.split()), k.source.replace("\n", "\\n").replace("\r", "\\r")))
             for k in tally.skipped)
    _write_member(zf, "skipped.txt", "".join(line + "\n" for line in lines).encode())


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


