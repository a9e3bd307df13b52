"""Training data for the GAN: ``prepare`` (folder/zip -> training archive) and ``ImageDataset``.

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
decode, apply the EXIF orientation, convert to 8-bit RGB (16-bit grey is scaled by 1/257;
alpha is composited on neutral grey, 128, so transparent pixels do not turn black), crop
the central square, resize to the target with a box filter by default (Clean-FID, Parmar
et al. 2022, shows that the resize filter moves FID by several points, so FIDs are only
comparable with published numbers when the data is prepared the same way; box is the
alias-free choice for downscaling) or Lanczos, and always Lanczos for upscaling, which is
counted. Output order is the sorted order of source paths whatever the number of
workers, and the archive bytes are identical between runs (fixed zip timestamps).

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

:class:`ImageDataset` reads such an archive (or the folder it was unzipped into, or an
archive written by the published tool) as a torch ``Dataset`` of ``(uint8 [C, H, W],
float32 label)``; the zip is opened lazily once per process, so ``DataLoader`` workers
each get their own handle.
"""

from __future__ import annotations

import contextlib
import csv
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
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from gan.util import UserError, atomic_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "NEAR_DUPLICATE_BITS",
    "SIZE_BUCKETS",
    "PrepareSummary",
    "prepare",
    "archive_name",
    "dhash",
    "find_near_duplicates",
    "to_rgb8",
    "ImageDataset",
]

#: File extensions read by ``prepare`` (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Hamming distance (of 64 bits) up to which two dHashes are reported as near duplicates.
#: Measured on 100 synthetic 64-px faces (20 people): re-encoding as JPEG q70 moves the
#: hash by <= 3 bits in 97.5 % of images (0.9 on average), a +10 brightness shift by
#: <= 1; 11 of 4,750 pairs of different people fall within 3 bits (0.23 %), 16 within 4.
#: Faces share a layout, so a larger threshold mostly adds false alarms.
NEAR_DUPLICATE_BITS = 3
#: Upper edges of the source-size histogram buckets (short side, pixels).
SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024)
#: Background that alpha is composited on: neutral grey, neither black nor white.
ALPHA_BACKGROUND = 128
#: Fixed zip timestamp so that the same input gives byte-identical archives.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CROPS = ("center", "none")
_FILTERS = {"box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}
#: Reasons for not using a file that are problems with the input (``strict`` stops on
#: them); refusals asked for by an option (``--min-size``, ``--crop none``) never stop.
_BROKEN = "broken"
_REFUSED = "refused"


# ---------------------------------------------------------------------------- pixels


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL image as ``uint8 [H, W, 3]`` RGB.

    Grey, 1-bit, palette, CMYK and YCbCr go through PIL's conversions; 16- and 32-bit
    integer grey (``I;16*``, ``I``: 16-bit PNGs) are scaled by 1/257 so that 65535 maps to
    255 (PIL's own conversion clips everything above 255 to white); alpha (RGBA, LA, PA,
    palette transparency) is composited over :data:`ALPHA_BACKGROUND` grey.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)  # [H, W]
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)  # [H, W, 4]
        alpha = rgba[:, :, 3:4] / 255.0
        out = rgba[:, :, :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


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
                if _wanted(rel):
                    names.append(rel)
        else:
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames[:] = [d for d in dirnames if not _hidden(d)]
                base = Path(dirpath).relative_to(self.path)
                for f in filenames:
                    rel = (base / f).as_posix() if str(base) != "." else f
                    if _wanted(rel):
                        names.append(rel)
        return sorted(names)

    def read(self, rel: str) -> bytes:
        if self.is_zip:
            return self._zipfile().read(self.prefix + rel)
        return (self.path / rel).read_bytes()


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _wanted(rel: str) -> bool:
    parts = rel.split("/")
    return not any(_hidden(p) for p in parts) and os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS


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


def square_resize(rgb: np.ndarray, resolution: int, filter: str = "box") -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[R, R, 3]`` as ``prepare`` makes it: central square crop, then
    ``filter`` (box or lanczos) to shrink, Lanczos to enlarge. Also used by ``gan.metrics``
    so real images of another size are brought to the generator's resolution the same way."""
    h, w = rgb.shape[:2]
    short = min(w, h)
    if w != h:
        top, left = (h - short) // 2, (w - short) // 2
        rgb = rgb[top:top + short, left:left + short]  # [S, S, 3]
    if short != resolution:
        flt = _FILTERS[filter] if short > resolution else Image.Resampling.LANCZOS
        rgb = np.array(Image.fromarray(np.ascontiguousarray(rgb)).resize((resolution, resolution), flt),
                       dtype=np.uint8)  # a writable copy
    return np.ascontiguousarray(rgb)


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
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: truncated and corrupt files fail here, not later
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb8(img)  # [H, W, 3]
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
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=0, optimize=False)
    res.png = buf.getvalue()
    return res


# ---------------------------------------------------------------------------- labels


@dataclass
class _Labels:
    """Per-source labels and the class layout written to dataset.json."""

    by_source: dict[str, Any]  # rel -> int or list[float]
    classes: Any  # list[str] | dict[str, list[str]]
    groups: list[dict] | None
    dim: int
    missing_reason: dict[str, str]  # rel -> why it has no label
    csv_missing: list[str]  # CSV entries naming no source file


def _folder_labels(names: list[str]) -> _Labels:
    classes = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not classes:
        raise UserError(
            "prepare: --labels folder needs class folders (SRC/<class>/...), but every image is "
            "directly in SRC; pass --labels FILE.csv or leave --labels out"
        )
    index = {c: i for i, c in enumerate(classes)}
    by_source, missing = {}, {}
    for n in names:
        if "/" in n:
            by_source[n] = index[n.split("/", 1)[0]]
        else:
            missing[n] = "not inside a class folder (--labels folder)"
    return _Labels(by_source, classes, None, len(classes), missing, [])


def _sort_values(values: Iterable[str]) -> list[str]:
    vals = set(values)
    with contextlib.suppress(ValueError):
        return sorted(vals, key=int)  # numeric classes (e.g. 0..9) in numeric order
    return sorted(vals)


def _csv_labels(csv_path: Path, columns: Sequence[str], names: list[str]) -> _Labels:
    if not csv_path.is_file():
        raise UserError(f"prepare: labels CSV {csv_path} does not exist; pass --labels FILE.csv or --labels folder")
    if not columns:
        raise UserError(f"prepare: --labels {csv_path.name} needs --label-column COL ({_csv_header_hint(csv_path)})")
    try:
        return _read_csv_labels(csv_path, columns, names)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"prepare: cannot read labels CSV {csv_path} ({exc}); save it as UTF-8 CSV") from None


def _read_csv_labels(csv_path: Path, columns: Sequence[str], names: list[str]) -> _Labels:
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if "file" not in header:
            raise UserError(
                f"prepare: {csv_path} has no 'file' column (columns: {', '.join(header) or 'none'}); "
                "add a 'file' column with image paths relative to SRC"
            )
        unknown = [c for c in columns if c not in header]
        if unknown:
            valid = [c for c in header if c != "file"]
            raise UserError(
                f"prepare: {csv_path} has no column {', '.join(repr(c) for c in unknown)}; "
                f"pass --label-column with one of: {', '.join(valid)}"
            )
        rows: dict[str, tuple[int, tuple[str, ...]]] = {}
        for line, row in enumerate(reader, start=2):
            f = (row.get("file") or "").strip().replace("\\", "/")
            while f.startswith("./"):
                f = f[2:]
            if not f:
                continue
            vals = tuple((row.get(c) or "").strip() for c in columns)
            if f in rows and rows[f][1] != vals:
                raise UserError(
                    f"prepare: {csv_path} gives {f!r} different labels on lines {rows[f][0]} and {line}; "
                    "keep one row per file"
                )
            rows.setdefault(f, (line, vals))

    present = set(names)
    by_base: dict[str, list[str]] = {}
    for n in names:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    matched: dict[str, tuple[str, ...]] = {}
    csv_missing: list[str] = []
    for f, (_, vals) in rows.items():
        if f in present:
            matched[f] = vals
        elif "/" not in f and len(by_base.get(f, [])) == 1:
            matched[by_base[f][0]] = vals  # a bare file name that is unique in SRC
        else:
            csv_missing.append(f)
    classes_per_col = [_sort_values(v[i] for v in matched.values() if v[i]) for i in range(len(columns))]
    by_source: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for n in names:
        vals = matched.get(n)
        if vals is None:
            missing[n] = f"no row in {csv_path.name}"
            continue
        empty = [c for c, v in zip(columns, vals) if not v]
        if empty:
            missing[n] = f"empty {', '.join(empty)} in {csv_path.name}"
            continue
        idx = [classes_per_col[i].index(v) for i, v in enumerate(vals)]
        if len(columns) == 1:
            by_source[n] = idx[0]
        else:
            vec: list[float] = []
            for i, k in enumerate(idx):
                onehot = [0.0] * len(classes_per_col[i])
                onehot[k] = 1.0
                vec += onehot
            by_source[n] = vec
    if len(columns) == 1:
        classes: Any = classes_per_col[0]
        groups = None
    else:
        classes = {c: classes_per_col[i] for i, c in enumerate(columns)}
        groups, offset = [], 0
        for i, c in enumerate(columns):
            groups.append({"column": c, "offset": offset, "size": len(classes_per_col[i]), "classes": classes_per_col[i]})
            offset += len(classes_per_col[i])
    dim = sum(len(c) for c in classes_per_col)
    return _Labels(by_source, classes, groups, dim, missing, sorted(csv_missing))


def _csv_header_hint(csv_path: Path) -> str:
    with contextlib.suppress(Exception), open(csv_path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
        return "columns: " + ", ".join(h for h in header if h != "file")
    return "see the CSV header"


# ---------------------------------------------------------------------------- prepare


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


def _check_options(resolution: Any, crop: str, filter: str, min_size: Any, workers: Any, max_images: Any) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise UserError(
            f"prepare: --resolution {resolution} is not a power of two >= 4; the trainer needs one "
            "(e.g. 64, 128, 256)"
        )
    if crop not in _CROPS:
        raise UserError(f"prepare: --crop {crop!r} is unknown; pass one of {', '.join(_CROPS)}")
    if filter not in _FILTERS:
        raise UserError(f"prepare: --filter {filter!r} is unknown; pass one of {', '.join(_FILTERS)}")
    if not isinstance(min_size, int) or min_size < 0:
        raise UserError(f"prepare: --min-size {min_size} must be a non-negative integer")
    if not isinstance(workers, int) or workers < 1:
        raise UserError(f"prepare: --workers {workers} must be at least 1")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise UserError(f"prepare: --max-images {max_images} must be at least 1")


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


def prepare(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    resolution: int,
    labels: str | os.PathLike | None = None,
    label_columns: Sequence[str] = (),
    crop: str = "center",
    filter: str = "box",
    min_size: int = 0,
    workers: int = 1,
    max_images: int | None = None,
    strict: bool = False,
    progress: bool = True,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
) -> PrepareSummary:
    """Turn a folder tree (or zip) of face images into a training archive ``dest`` (.zip).

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
    _check_options(resolution, crop, filter, min_size, workers, max_images)
    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise UserError(f"prepare: source {src} does not exist; pass a folder of images or a zip of one")
    if dest.exists():
        raise UserError(f"prepare: {dest} already exists and is never overwritten; pass another destination name")
    if dest.suffix.lower() != ".zip":
        raise UserError(f"prepare: destination {dest} must end in .zip (the training archive is a zip)")
    if label_columns and labels is None:
        raise UserError("prepare: --label-column needs --labels FILE.csv")
    if labels is not None and str(labels) == "folder" and label_columns:
        raise UserError("prepare: --label-column only goes with --labels FILE.csv, not --labels folder")

    source = _Source(src)
    names = source.list()
    if not names:
        raise UserError(
            f"prepare: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {src}; "
            "pass the folder that holds the face images"
        )
    lab: _Labels | None = None
    if labels is not None:
        lab = _folder_labels(names) if str(labels) == "folder" else _csv_labels(Path(labels), tuple(label_columns), names)
        if not lab.by_source:
            raise UserError(
                f"prepare: none of the {len(names):,} images under {src} has a label in {labels} "
                f"({len(lab.csv_missing):,} CSV rows name files not found, e.g. {', '.join(lab.csv_missing[:3])}); "
                "the CSV 'file' column must hold paths relative to SRC"
            )

    skipped: list[tuple[str, str]] = []
    tasks: list[tuple[int, str]] = []
    for i, n in enumerate(names):
        if lab is not None and n not in lab.by_source:
            if strict:
                raise UserError(f"prepare: {src / n}: {lab.missing_reason[n]}; fix it or leave out --strict to skip it")
            skipped.append((n, lab.missing_reason[n]))
        else:
            tasks.append((i, n))

    options = _Options(resolution, crop, filter, min_size)
    histogram = dict.fromkeys(_bucket_names(), 0)
    below = upscaled = 0
    seen: dict[str, str] = {}  # sha1 -> source
    exact: list[tuple[str, str]] = []
    kept: list[dict] = []
    hashes: list[int] = []

    from tqdm import tqdm

    with atomic_path(dest) as tmp:
        bar = tqdm(total=len(tasks), desc="prepare", unit="img", disable=not progress, dynamic_ncols=True)
        try:
            # closing(): stop the worker pool as soon as the loop ends, also on an error
            # (a traceback would otherwise keep the generator, and the pool, alive).
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf, \
                    contextlib.closing(_results(tasks, source, options, workers)) as results:
                for r in results:
                    bar.update(1)
                    rel = names[r.index]
                    if r.size != (0, 0):
                        short = min(r.size)
                        histogram[_size_bucket(short)] += 1
                        below += short < resolution
                    if r.status != "ok":
                        if strict and r.status == _BROKEN:
                            raise UserError(
                                f"prepare: {src / rel}: {r.reason}; remove or fix it, or leave out --strict "
                                "to skip such files (they are listed in skipped.txt)"
                            )
                        skipped.append((rel, r.reason))
                        continue
                    if r.sha1 in seen:
                        exact.append((rel, seen[r.sha1]))
                        continue
                    seen[r.sha1] = rel
                    upscaled += r.upscaled
                    name = archive_name(len(kept))
                    _write_member(zf, name, r.png)
                    label = lab.by_source[rel] if lab is not None else None
                    kept.append({"name": name, "source": rel, "sha1": r.sha1, "size": list(r.size), "label": label})
                    hashes.append(r.hash64)
                    if max_images is not None and len(kept) >= max_images:
                        break
                if not kept:
                    reasons = "; ".join(f"{s}: {why}" for s, why in skipped[:3])
                    raise UserError(
                        f"prepare: none of the {len(names):,} image files under {src} could be used "
                        f"({reasons}); nothing was written"
                    )
                near = [
                    (kept[i]["source"], kept[j]["source"], d)
                    for i, j, d in find_near_duplicates(hashes, near_duplicate_bits)
                ]
                skipped.sort(key=lambda s: s[0])
                meta = {
                    "labels": [[k["name"], k["label"]] for k in kept] if lab is not None else None,
                    "classes": lab.classes if lab is not None else None,
                    "label_groups": lab.groups if lab is not None else None,
                    "label_source": None if lab is None else (
                        "folder" if str(labels) == "folder" else {"csv": Path(labels).name, "columns": list(label_columns)}
                    ),
                    "resolution": resolution,
                    "num_images": len(kept),
                    "images": kept,
                }
                sizes = {
                    "resolution": resolution,
                    "below_target": below,
                    "upscaled": upscaled,
                    "buckets": histogram,
                    "bucket_of": "short side of the source after EXIF orientation, pixels",
                }
                dups = {
                    "near_duplicate_bits": near_duplicate_bits,
                    "exact": [{"dropped": a, "kept": b} for a, b in exact],
                    "near": [{"a": a, "b": b, "bits": d} for a, b, d in near],
                }
                _write_member(zf, "dataset.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
                _write_member(zf, "sizes.json", json.dumps(sizes, indent=1).encode())
                _write_member(zf, "duplicates.json", json.dumps(dups, indent=1, ensure_ascii=False).encode())
                _write_member(zf, "skipped.txt", "".join(f"{s}\t{why}\n" for s, why in skipped).encode())
        finally:
            bar.close()
            source.close()

    return PrepareSummary(
        dest=dest, count=len(kept), resolution=resolution, found=len(names), skipped=skipped,
        upscaled=upscaled, exact_duplicates=exact, near_duplicates=near, size_histogram=histogram,
        below_target=below, classes=lab.classes if lab else None, label_dim=lab.dim if lab else 0,
        csv_missing=lab.csv_missing if lab else [], seconds=time.time() - t0,
    )


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


# ---------------------------------------------------------------------------- ImageDataset


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
