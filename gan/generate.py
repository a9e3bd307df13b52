"""Images from a trained generator: per-seed PNGs, grids, latent interpolations, and the
labels a conditional generator is given when its outputs are compared with an archive.

The network is a checkpoint's EMA generator (:func:`gan.checkpoint.load_generator`), on
the CPU or a GPU. Seed ``s`` always gives the same z (drawn from a ``torch.Generator``
seeded with ``s`` on the CPU, whatever the device), so an image can be named by its
seed and redrawn later. Truncation (``psi < 1``) pulls w towards the tracked mean
``w_avg`` (Karras et al. 2019, StyleGAN, sec. 3.3): more typical, less varied faces.
Interpolations are linear in W, which is far better disentangled than Z
(StyleGAN, sec. 4), between consecutive seeds.

The metrics and ``mtf-classify score`` condition a generator on labels drawn with the real
archive's label mix (:func:`real_labels`, :func:`fake_labels`), so its fakes have the class
distribution of the data they are compared with.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from gan.checkpoint import load_generator
from gan.dataset import ImageDataset, is_archive
from gan.images import images_to_uint8, make_grid, save_png
from gan.util import UserError

__all__ = ["parse_seeds", "class_vector", "seed_z", "real_labels", "fake_labels", "generate_images", "interpolate",
           "generate"]


def parse_seeds(spec: str) -> list[int]:
    """``'0-3,7'`` -> ``[0, 1, 2, 3, 7]``; errors say what is accepted."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--seeds '{spec}': '{part}' is not a seed or range; use e.g. 0-63 or 1,5,10-12")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"--seeds '{spec}': range {part} runs backwards; write {hi}-{lo}")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise UserError("--seeds: no seeds given; use e.g. 0-63")
    return seeds


def class_vector(G: torch.nn.Module, cls: Optional[str]) -> torch.Tensor:
    """The label ``[1, c_dim]`` for ``--class NAME|INDEX`` (``[1, 0]`` for an unconditional G).

    Names come from the checkpoint (``G.class_names``) and match case-insensitively.
    """
    c_dim = G.c_dim
    names = list(getattr(G, "class_names", None) or [str(i) for i in range(c_dim)])
    if c_dim == 0:
        if cls is not None:
            raise UserError(f"--class {cls}: this network is unconditional; drop --class")
        return torch.zeros([1, 0])
    choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    if cls is None:
        raise UserError(f"this network is conditional: pass --class NAME or INDEX, one of {choices}")
    lowered = [n.lower() for n in names]
    if cls.lower() in lowered:
        index = lowered.index(cls.lower())
    elif cls.isdigit() and int(cls) < c_dim:
        index = int(cls)
    else:
        raise UserError(f"--class {cls}: unknown class; choose one of {choices}")
    c = torch.zeros([1, c_dim])
    c[0, index] = 1
    return c


def seed_z(seed: int, z_dim: int) -> torch.Tensor:
    """``[1, z_dim]`` N(0, 1), a function of the seed alone (drawn on the CPU)."""
    return torch.randn([1, z_dim], generator=torch.Generator().manual_seed(int(seed)))


def real_labels(source: str | os.PathLike) -> Optional[torch.Tensor]:
    """float32 ``[N, c_dim]`` labels of an archive (None for a folder or an unlabelled archive)."""
    if not is_archive(source):
        return None
    labels = ImageDataset(source, use_labels=True).labels  # [N, c_dim]
    return labels if labels.shape[0] and labels.shape[1] else None


def fake_labels(labels: torch.Tensor, num: int, seed: int = 0) -> torch.Tensor:
    """``[num, c_dim]``: labels of real images picked uniformly at random (so the fake
    label distribution is the real one), reproducible from ``seed``."""
    idx = np.random.default_rng(seed).integers(0, labels.shape[0], size=num)
    return labels[torch.as_tensor(idx)]


@torch.no_grad()
def generate_images(G: torch.nn.Module, seeds: Sequence[int], c: torch.Tensor, truncation_psi: float = 1.0,
                    noise_mode: str = "const") -> torch.Tensor:
    """uint8 ``[len(seeds), C, H, W]``: one image per seed with label ``c`` ``[1, c_dim]``.

    With ``noise_mode='random'`` the noise is drawn from the seed too, so the output is
    still reproducible.
    """
    device = next(G.parameters()).device
    out = []
    for s in seeds:
        z = seed_z(s, G.z_dim).to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(s))
            out.append(images_to_uint8(G(z, c.to(device), truncation_psi=truncation_psi, noise_mode=noise_mode)))
    return torch.cat(out)  # [N, C, H, W]


@torch.no_grad()
def interpolate(G: torch.nn.Module, a: int, b: int, steps: int, c: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "const") -> torch.Tensor:
    """uint8 ``[steps, C, H, W]``: w linearly from seed ``a`` to seed ``b`` (both ends included)."""
    device = next(G.parameters()).device
    c = c.to(device)
    z = torch.cat([seed_z(a, G.z_dim), seed_z(b, G.z_dim)]).to(device)  # [2, z_dim]
    ws = G.mapping(z, c.expand(2, -1), truncation_psi=truncation_psi)  # [2, num_ws, w_dim]
    t = torch.linspace(0, 1, steps, device=device)[:, None, None]  # [steps, 1, 1]
    w = ws[0:1].lerp(ws[1:2], t)  # [steps, num_ws, w_dim]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(a))
        return images_to_uint8(G.synthesis(w, noise_mode=noise_mode))


def generate(network: str | Path, seeds: Sequence[int], outdir: str | Path, truncation_psi: float = 1.0,
             class_name: Optional[str] = None, noise_mode: str = "const", grid: bool = False,
             interpolate_steps: int = 0, device: str | torch.device = "cpu") -> list[Path]:
    """Write ``seed0000.png`` per seed (or ``grid.png`` with ``grid=True``), and with
    ``interpolate_steps = N`` an ``interp-A-B.png`` strip of N frames per consecutive seed pair.

    Existing files are never overwritten: a clash is an error naming the file.
    Returns the written paths.
    """
    if noise_mode not in ("const", "random"):
        raise UserError(f"--noise {noise_mode}: choose const or random")
    if not 0 <= truncation_psi <= 2:
        raise UserError(f"--trunc {truncation_psi}: use a value in [0, 1] (1 = no truncation, 0.7 is typical)")
    if interpolate_steps == 1 or interpolate_steps < 0:
        raise UserError(f"--interpolate {interpolate_steps}: give at least 2 frames (or 0 for none)")
    if interpolate_steps and len(seeds) < 2:
        raise UserError("--interpolate needs at least two seeds, e.g. --seeds 0-3")
    G = load_generator(network, device)
    c = class_vector(G, class_name)
    outdir = Path(outdir)
    planned: list[Path] = []
    if grid:
        planned.append(outdir / "grid.png")
    else:
        planned += [outdir / f"seed{s:04d}.png" for s in seeds]
    pairs = list(zip(seeds[:-1], seeds[1:])) if interpolate_steps else []
    planned += [outdir / f"interp-{a:04d}-{b:04d}.png" for a, b in pairs]
    clash = [p for p in planned if p.exists()]
    if clash:
        raise UserError(f"--outdir {outdir}: {clash[0].name} exists ({len(clash)} clashes); pass an empty --outdir")
    outdir.mkdir(parents=True, exist_ok=True)

    images = generate_images(G, seeds, c, truncation_psi, noise_mode)  # [N, C, H, W]
    written: list[Path] = []
    if grid:
        cols = math.ceil(math.sqrt(len(seeds)))
        rows = math.ceil(len(seeds) / cols)
        pad = images.new_zeros([cols * rows - len(seeds), *images.shape[1:]])
        save_png(outdir / "grid.png", make_grid(torch.cat([images, pad]), cols, rows))
        written.append(outdir / "grid.png")
    else:
        for s, img in zip(seeds, images):
            save_png(outdir / f"seed{s:04d}.png", make_grid(img[None], 1, 1))
            written.append(outdir / f"seed{s:04d}.png")
    for a, b in pairs:
        frames = interpolate(G, a, b, interpolate_steps, c, truncation_psi, noise_mode)
        path = outdir / f"interp-{a:04d}-{b:04d}.png"
        save_png(path, make_grid(frames, interpolate_steps, 1))
        written.append(path)
    return written
