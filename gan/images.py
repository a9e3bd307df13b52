"""Pixels and image files: the ground floor that every stage of both packages shares.

One list of image types, one folder lister, one decoder (EXIF orientation, any colour mode
to 8-bit RGB), one central-square resize, one float -> uint8 mapping, one grid maker and one
PNG writer. ``prepare`` (training archives), ``classify.dataset`` (the decoded cache), the
metrics' real folders and ``mtf-classify score`` all read images through here, so an image
looks the same to every tool that reads it.

Nothing here knows about archives (``gan.dataset.open_images`` reads a prepared archive or a
folder) or networks.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from gan.util import UserError, atomic_path

__all__ = [
    "IMAGE_EXTENSIONS", "ALPHA_BACKGROUND", "FILTERS", "SYSTEM_NAMES", "is_hidden", "is_system_path",
    "is_image_name", "list_images",
    "to_rgb8", "decode_rgb", "read_rgb", "square_resize", "square_resize_chw", "images_to_uint8", "make_grid",
    "save_png",
]

#: File extensions read everywhere (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Background that alpha is composited on: neutral grey, neither black nor white.
ALPHA_BACKGROUND = 128
#: Downscaling filters by name; enlarging always uses Lanczos.
FILTERS = {"box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}


# ---------------------------------------------------------------------------- files


#: Names (compared in lower case) that operating systems and file managers write beside
#: images: macOS Finder's ``__MACOSX/`` (in zips) and ``Icon\r``, Windows' thumbnail cache,
#: folder settings and drive folders. Dotfiles (``.DS_Store``, AppleDouble ``._x.jpg``) are
#: hidden by their first character.
SYSTEM_NAMES = frozenset({"__macosx", "icon\r", "thumbs.db", "ehthumbs.db", "desktop.ini", "$recycle.bin",
                          "system volume information"})


def is_hidden(part: str) -> bool:
    """A hidden or system path component (``.x``, :data:`SYSTEM_NAMES`): never an image to read."""
    return part.startswith(".") or part.lower() in SYSTEM_NAMES


def is_system_path(rel: str) -> bool:
    """A relative posix path with a hidden or system component (e.g. a macOS ``._x.jpg``
    resource fork, anything inside ``__MACOSX/`` or a dot-folder)."""
    return any(is_hidden(p) for p in rel.split("/"))


def is_image_name(rel: str) -> bool:
    """A relative posix path with an image extension and no hidden or system component."""
    return not is_system_path(rel) and os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, what: str = "") -> list[Path]:
    """Image files under ``folder``, recursively, sorted by relative path; hidden files and
    folders are skipped. A clear error (prefixed with ``what``, e.g. ``--real``) when the
    folder does not exist or holds no image."""
    root = Path(folder)
    prefix = f"{what} " if what else ""
    if not root.is_dir():
        raise UserError(f"{prefix}{root}: no such folder")
    rels: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        base = Path(dirpath).relative_to(root)
        for f in filenames:
            rel = f if str(base) == "." else (base / f).as_posix()
            if is_image_name(rel):
                rels.append(rel)
    if not rels:
        raise UserError(f"{prefix}{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found in this folder or below it")
    return [root / r for r in sorted(rels)]


# ---------------------------------------------------------------------------- decoding


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


def decode_rgb(source: str | os.PathLike | bytes) -> np.ndarray:
    """A file (path or its bytes) as ``uint8 [H, W, 3]``: decoded now (truncated and corrupt
    files fail here, not later), EXIF orientation applied, any mode to 8-bit RGB."""
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
        img.load()
        return to_rgb8(ImageOps.exif_transpose(img))


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 ``[3, H, W]`` (:func:`decode_rgb`, channels first)."""
    rgb = decode_rgb(path)  # [H, W, 3]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # [3, H, W]


# ---------------------------------------------------------------------------- geometry


def square_resize(rgb: np.ndarray, resolution: int, filter: str = "box") -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[R, R, 3]``: central square crop, then ``filter`` (box or
    lanczos) to shrink, Lanczos to enlarge.

    ``prepare`` makes training archives this way (box by default: Clean-FID, Parmar et al.
    2022, shows the resize filter moves FID by points), the metrics bring reals of another
    size to the generator's resolution this way, and the classifiers' decoded cache and
    ``score`` use it with ``filter="lanczos"``.
    """
    h, w = rgb.shape[:2]
    short = min(w, h)
    if w != h:
        top, left = (h - short) // 2, (w - short) // 2
        rgb = rgb[top:top + short, left:left + short]  # [S, S, 3]
    if short != resolution:
        flt = FILTERS[filter] if short > resolution else Image.Resampling.LANCZOS
        rgb = np.array(Image.fromarray(np.ascontiguousarray(rgb)).resize((resolution, resolution), flt),
                       dtype=np.uint8)  # a writable copy
    return np.ascontiguousarray(rgb)


def square_resize_chw(img: np.ndarray | torch.Tensor, resolution: int, filter: str = "box") -> torch.Tensor:
    """:func:`square_resize` in the channels-first layout of tensors: uint8 ``[3, H, W]`` ->
    uint8 ``[3, R, R]`` (a contiguous copy)."""
    a = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[0] == 3, (a.dtype, a.shape)
    out = square_resize(a.transpose(1, 2, 0), resolution, filter)  # [R, R, 3]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))  # [3, R, R]


# ---------------------------------------------------------------------------- network output


def images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """float ``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, C, H, W]`` (the published mapping)."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, cols: int, rows: int) -> np.ndarray:
    """uint8 ``[cols * rows, C, H, W]`` -> uint8 ``[rows H, cols W, 3]`` (grayscale repeated)."""
    n, c, h, w = images.shape
    assert n == cols * rows, (n, cols, rows)
    x = images.cpu().reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    if c == 1:
        x = x.repeat(1, 1, 3)
    return x.numpy()


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write uint8 ``[H, W, 3]`` as a PNG, atomically (never a half-written file)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(tmp, format="PNG")
