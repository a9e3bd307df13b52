"""Images from a trained generator: per-seed PNGs, grids, latent interpolations and their
videos, the truncation centres, and the labels a conditional generator is given when its
outputs are compared with an archive.

The network is a checkpoint's EMA generator (:func:`gan.checkpoint.load_generator`), on
the CPU or a GPU. Seed ``s`` always gives the same z (drawn from a ``torch.Generator``
seeded with ``s`` on the CPU, whatever the device), so an image can be named by its
seed and redrawn later. Truncation (``psi < 1``) pulls w towards the tracked mean
``w_avg`` (Karras et al. 2019, StyleGAN, sec. 3.3): more typical, less varied faces.
The centre of truncation is ``w_avg`` (``trunc_center='global'``, the published behaviour)
or, for a conditional generator, the mean w of the image's own class
(``trunc_center='class'``, :func:`class_centers`: the per-class truncation centres of
StyleGAN-XL, Sauer et al. 2022): ``w_avg`` is the mean under the training label mix, so
truncating towards it pulls every class towards the majority's look, while a class centre
keeps the class. The centres are estimated from :data:`CLASS_CENTER_SAMPLES` z drawn from
a ``torch.Generator`` seeded with :data:`CLASS_CENTER_SEED`, so they are a function of the
network alone.

Interpolations are linear in W, which is far better disentangled than Z
(StyleGAN, sec. 4), between consecutive seeds; :func:`write_video` writes such frames as
an MP4 (H.264 through imageio and imageio-ffmpeg, whose wheel carries ffmpeg) or a GIF
(Pillow).

The metrics and ``mtf-classify score`` condition a generator on labels drawn with the real
archive's label mix (:func:`real_labels`, :func:`fake_labels`), so its fakes have the class
distribution of the data they are compared with.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from gan.checkpoint import load_generator
from gan.dataset import ImageDataset, is_archive
from gan.images import images_to_uint8, make_grid, save_png
from gan.util import UserError

__all__ = ["as_generator", "device_of", "parse_seeds", "parse_floats", "class_vector", "seed_z", "real_labels",
           "fake_labels", "seeded_rng", "CLASS_CENTER_SAMPLES", "CLASS_CENTER_SEED", "TRUNC_CENTERS", "ClassCenters",
           "class_centers", "truncation_centers", "describe_center", "truncated_ws", "synthesize", "generate_images",
           "interpolate", "interpolation_frames", "video_frame_count", "VIDEO_SUFFIXES", "check_video_path",
           "write_video", "generate"]

#: z samples per class (or label vector) whose mean w is that class's truncation centre:
#: the centre's standard error is the spread of w over sqrt(1000), about 3% of it.
CLASS_CENTER_SAMPLES = 1000
#: Seed of the ``torch.Generator`` those z are drawn from (the same z for every class).
CLASS_CENTER_SEED = 0
#: The choices of ``--trunc-center``.
TRUNC_CENTERS = ("global", "class")
#: What :func:`write_video` writes: H.264 MP4 (imageio-ffmpeg) or GIF (Pillow).
VIDEO_SUFFIXES = (".mp4", ".gif")


def as_generator(network: "str | Path | torch.nn.Module", device: str | torch.device = "cpu") -> torch.nn.Module:
    """``network`` as a generator in eval mode: a path goes through
    :func:`gan.checkpoint.load_generator` (our checkpoints, imports, published ``.pkl``); a
    module with the Generator interface (``mapping``, ``synthesis``, ``z_dim``, ``c_dim``,
    ``w_dim``, ``num_ws``, ``img_resolution``; ``class_names`` for a conditional one) is used as
    it is, so a notebook or a test can pass its own."""
    if isinstance(network, torch.nn.Module):
        return network.eval().to(device)
    return load_generator(network, device)


def device_of(G: torch.nn.Module) -> torch.device:
    """The device of G's first parameter or buffer (the CPU for a module with neither)."""
    for t in (*G.parameters(), *G.buffers()):
        return t.device
    return torch.device("cpu")


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


def parse_floats(spec: str, option: str, hint: str) -> tuple[float, ...]:
    """``'1,0.9,0.7'`` -> ``(1.0, 0.9, 0.7)``: a comma list of finite numbers for ``option``
    (``--trunc-sweep``, ``--strengths``); an error names the option, the bad part and ``hint``
    (what to pass instead)."""
    values: list[float] = []
    for part in str(spec).split(","):
        try:
            v = float(part.strip())
        except ValueError:
            raise UserError(f"{option} {spec}: '{part.strip()}' is not a number; {hint}") from None
        if not math.isfinite(v):
            raise UserError(f"{option} {spec}: '{part.strip()}' is not a finite number; {hint}")
        values.append(v)
    return tuple(values)


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


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG (and ``device``'s, on a GPU) seeded with ``seed`` inside, restored after:
    ``noise_mode='random'`` draws its noise from the seed. On the CPU only the CPU generator is
    seeded (``torch.manual_seed`` would also queue every accelerator backend, milliseconds per
    call, which a per-seed loop of thousands of images pays)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        yield


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


# ---------------------------------------------------------------------------- truncation centres


@dataclass(frozen=True)
class ClassCenters:
    """The truncation centre of each label vector: ``rows`` ``[K, c_dim]`` (one per class for
    one-hot labels, one per combination for joint ones) and ``ws`` ``[K, num_ws, w_dim]``,
    each the mean over ``num`` z drawn with ``seed`` (:func:`class_centers`)."""

    rows: torch.Tensor  # [K, c_dim]
    ws: torch.Tensor    # [K, num_ws, w_dim]
    num: int
    seed: int

    def lookup(self, c: torch.Tensor) -> torch.Tensor:
        """``[N, num_ws, w_dim]``: the centre of each row of ``c`` ``[N, c_dim]``."""
        match = (c[:, None, :].to(self.rows) == self.rows[None]).all(-1)  # [N, K]
        if not bool(match.any(1).all()):
            raise ValueError("ClassCenters.lookup: a label vector without a centre; compute the centres for "
                             "every label drawn (class_centers(G, labels))")
        return self.ws[match.float().argmax(1)]

    def describe(self) -> dict:
        """What the outputs record: ``trunc_center``, ``trunc_center_samples``, ``trunc_center_seed``."""
        return {"trunc_center": "class", "trunc_center_samples": self.num, "trunc_center_seed": self.seed}


@torch.no_grad()
def class_centers(G: torch.nn.Module, labels: Optional[torch.Tensor] = None, num: int = CLASS_CENTER_SAMPLES,
                  seed: int = CLASS_CENTER_SEED, batch: int = 250) -> ClassCenters:
    """The mean ``ws`` of each distinct row of ``labels`` ``[N, c_dim]`` (default: one
    one-hot row per class), over ``num`` z ``[num, z_dim]`` drawn from a ``torch.Generator``
    seeded with ``seed`` (the same z for every row), mapped without truncation.

    A conditional G only: an unconditional one has no classes (a :class:`UserError`).
    """
    if not G.c_dim:
        raise UserError("--trunc-center class: this network is unconditional, so there is no class to centre on; "
                        "use --trunc-center global (the default)")
    if num < 1:
        raise UserError(f"class centres: {num} samples; pass at least 1")
    device = device_of(G)
    rows = torch.eye(G.c_dim) if labels is None else torch.unique(labels.detach().cpu().float(), dim=0)  # [K, c_dim]
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(int(seed)))  # [num, z_dim]
    centres = []
    for row in rows:
        total = None
        for chunk in z.split(batch):
            ws = G.mapping(chunk.to(device), row.to(device).expand(len(chunk), -1))  # [B, num_ws, w_dim]
            part = ws.to(torch.float64).sum(0)
            total = part if total is None else total + part
        centres.append((total / num).to(torch.float32))
    return ClassCenters(rows=rows, ws=torch.stack(centres), num=int(num), seed=int(seed))  # ws: [K, num_ws, w_dim]


def truncation_centers(G: torch.nn.Module, trunc_center: str, labels: Optional[torch.Tensor] = None,
                       num: int = CLASS_CENTER_SAMPLES, seed: int = CLASS_CENTER_SEED) -> Optional[ClassCenters]:
    """What ``--trunc-center`` asks for: None for ``global`` (truncate towards ``w_avg``), the
    :func:`class_centers` of the rows of ``labels`` for ``class``; anything else is an error."""
    if trunc_center not in TRUNC_CENTERS:
        raise UserError(f"--trunc-center {trunc_center}: choose {' or '.join(TRUNC_CENTERS)}")
    return None if trunc_center == "global" else class_centers(G, labels, num, seed)


def describe_center(centers: Optional[ClassCenters]) -> dict:
    """The truncation centre as the outputs record it (constant keys)."""
    if centers is None:
        return {"trunc_center": "global", "trunc_center_samples": None, "trunc_center_seed": None}
    return centers.describe()


def truncated_ws(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                 centers: Optional[ClassCenters] = None) -> torch.Tensor:
    """``[N, num_ws, w_dim]`` for z ``[N, z_dim]``, c ``[N, c_dim]``: truncated towards
    ``w_avg`` (``centers=None``: G's own mapping, as published) or towards each image's
    class centre, ``w = centre + psi (w - centre)`` on every layer."""
    if centers is None:
        return G.mapping(z, c, truncation_psi=truncation_psi)
    ws = G.mapping(z, c)  # [N, num_ws, w_dim]
    if truncation_psi == 1:
        return ws
    return centers.lookup(c).to(ws).lerp(ws, truncation_psi)


def synthesize(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
               noise_mode: str = "const", centers: Optional[ClassCenters] = None) -> torch.Tensor:
    """Float images ``[N, C, H, W]`` in [-1, 1]; without ``centers`` exactly ``G(z, c, psi)``."""
    if centers is None:
        return G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
    return G.synthesis(truncated_ws(G, z, c, truncation_psi, centers), noise_mode=noise_mode)


def _centers_for(G: torch.nn.Module, trunc_center: "str | ClassCenters | None", c: torch.Tensor
                 ) -> Optional[ClassCenters]:
    """``trunc_center`` as centres: None or ``'global'`` -> None; ``'class'`` -> those of ``c``'s rows."""
    if trunc_center is None or isinstance(trunc_center, ClassCenters):
        return trunc_center
    return truncation_centers(G, trunc_center, c)


# ---------------------------------------------------------------------------- images


@torch.no_grad()
def generate_images(G: torch.nn.Module, seeds: Sequence[int], c: torch.Tensor, truncation_psi: float = 1.0,
                    noise_mode: str = "const", trunc_center: "str | ClassCenters | None" = "global") -> torch.Tensor:
    """uint8 ``[len(seeds), C, H, W]``: one image per seed with label ``c`` ``[1, c_dim]``.

    ``trunc_center``: ``'global'`` or None (towards ``w_avg``), ``'class'`` (towards the class
    centre of ``c``, computed here) or centres computed once by :func:`class_centers`. With
    ``noise_mode='random'`` the noise is drawn from the seed too, so the output is
    still reproducible.
    """
    device = device_of(G)
    c = c.to(device)
    centers = _centers_for(G, trunc_center, c)
    out = []
    for s in seeds:
        z = seed_z(s, G.z_dim).to(device)
        with seeded_rng(int(s), device):
            out.append(images_to_uint8(synthesize(G, z, c, truncation_psi, noise_mode, centers)))
    return torch.cat(out)  # [N, C, H, W]


@torch.no_grad()
def interpolate(G: torch.nn.Module, a: int, b: int, steps: int, c: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "const", trunc_center: "str | ClassCenters | None" = "global") -> torch.Tensor:
    """uint8 ``[steps, C, H, W]``: w linearly from seed ``a`` to seed ``b`` (both ends included)."""
    device = device_of(G)
    c = c.to(device)
    z = torch.cat([seed_z(a, G.z_dim), seed_z(b, G.z_dim)]).to(device)  # [2, z_dim]
    ws = truncated_ws(G, z, c.expand(2, -1), truncation_psi, _centers_for(G, trunc_center, c))  # [2, num_ws, w_dim]
    t = torch.linspace(0, 1, steps, device=device)[:, None, None]  # [steps, 1, 1]
    w = ws[0:1].lerp(ws[1:2], t)  # [steps, num_ws, w_dim]
    with seeded_rng(int(a), device):
        return images_to_uint8(G.synthesis(w, noise_mode=noise_mode))


@torch.no_grad()
def interpolation_frames(G: torch.nn.Module, seeds: Sequence[int], steps: int, c: torch.Tensor,
                         truncation_psi: float = 1.0, noise_mode: str = "const",
                         trunc_center: "str | ClassCenters | None" = "global", batch: int = 16
                         ) -> Iterator[torch.Tensor]:
    """uint8 ``[C, H, W]`` frames of a video through ``seeds``: ``steps`` frames per pair of
    consecutive seeds, w linear between them (as :func:`interpolate`), the frame a pair shares
    with the next shown once, so ``(len(seeds) - 1) * (steps - 1) + 1`` frames in all; G runs
    ``batch`` frames at a time (memory stays flat however long the video)."""
    device = device_of(G)
    c = c.to(device)
    centers = _centers_for(G, trunc_center, c)
    for k, (a, b) in enumerate(zip(seeds[:-1], seeds[1:])):
        z = torch.cat([seed_z(a, G.z_dim), seed_z(b, G.z_dim)]).to(device)  # [2, z_dim]
        ws = truncated_ws(G, z, c.expand(2, -1), truncation_psi, centers)  # [2, num_ws, w_dim]
        t = torch.linspace(0, 1, steps, device=device)[1 if k else 0:]  # the shared first frame once
        for chunk in t.split(batch):
            w = ws[0:1].lerp(ws[1:2], chunk[:, None, None])  # [B, num_ws, w_dim]
            with seeded_rng(int(a), device):
                yield from images_to_uint8(G.synthesis(w, noise_mode=noise_mode)).cpu()


def video_frame_count(num_seeds: int, steps: int) -> int:
    """Frames of :func:`interpolation_frames`: ``steps`` per pair, shared ends once."""
    return (num_seeds - 1) * (steps - 1) + 1


# ---------------------------------------------------------------------------- videos


def check_video_path(path: str | os.PathLike, option: str = "--video") -> Path:
    """``path`` if a video may be written there: ``.mp4`` or ``.gif``, and no such file yet."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"{option} {path}: name an .mp4 (H.264, through imageio-ffmpeg) or a .gif (Pillow) file")
    if path.exists():
        raise UserError(f"{option} {path} exists; pass a new file name (nothing is overwritten)")
    return path


def _even(frame: "np.ndarray") -> "np.ndarray":
    """``[H, W, 3]`` padded by edge replication to even sides (H.264 in yuv420p needs them)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def write_video(frames: "torch.Tensor | Iterable[torch.Tensor]", path: str | os.PathLike, fps: float = 30,
                progress: bool = False, total: Optional[int] = None, option: str = "--video") -> int:
    """Write uint8 ``frames`` (``[T, 3, H, W]``, or an iterable of ``[3, H, W]``) to ``path``:
    ``.mp4`` as H.264 (yuv420p, odd sides padded to even) through imageio's ffmpeg plugin
    (imageio-ffmpeg's wheel carries the ffmpeg binary), ``.gif`` through Pillow (looping;
    Pillow merges identical consecutive frames into one longer one). An existing file is an
    error, never replaced; the file appears only when complete (written beside it, then
    linked). Returns the number of frames; ``progress`` shows a tqdm bar.
    """
    from tqdm import tqdm

    path = check_video_path(path, option)
    if not fps > 0:
        raise UserError(f"--fps {fps}: pass a positive frame rate, e.g. 30")
    if isinstance(frames, torch.Tensor):
        assert frames.ndim == 4 and frames.shape[1] == 3 and frames.dtype == torch.uint8, (frames.shape, frames.dtype)
        total = len(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    count = 0
    bar = tqdm(frames, total=total, desc=f"video {path.name}", unit="frame", disable=not progress, dynamic_ncols=True)
    try:
        if path.suffix.lower() == ".mp4":
            import imageio.v2 as imageio

            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                    pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error") as w:
                for frame in bar:
                    w.append_data(_even(frame.permute(1, 2, 0).numpy()))  # [H, W, 3]
                    count += 1
        else:
            from PIL import Image

            images = [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in bar]
            count = len(images)
            if images:
                images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                               duration=max(1, round(1000 / fps)))
        if count == 0:
            raise UserError(f"{option} {path}: no frames to write")
        os.link(tmp, path)  # fails rather than replace a file that appeared meanwhile
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return count


def generate(network: "str | Path | torch.nn.Module", seeds: Sequence[int], outdir: Optional[str | Path],
             truncation_psi: float = 1.0, class_name: Optional[str] = None, noise_mode: str = "const",
             grid: bool = False, interpolate_steps: int = 0, device: str | torch.device = "cpu",
             trunc_center: str = "global", video: Optional[str | Path] = None, fps: float = 30,
             progress: bool = False, echo: Optional[Callable[[str], None]] = None) -> list[Path]:
    """Write ``seed0000.png`` per seed (or ``grid.png`` with ``grid=True``), and with
    ``interpolate_steps = N`` an ``interp-A-B.png`` strip of N frames per consecutive seed pair,
    into ``outdir``; with ``video`` (``.mp4`` or ``.gif``) a video through the seeds, N frames
    per pair (:func:`interpolation_frames`) at ``fps``. ``outdir`` may be None with ``video``.

    ``trunc_center='class'`` truncates towards the class's own mean w (:func:`class_centers`;
    a line through ``echo`` records the sample count). Existing files are never overwritten:
    a clash is an error naming the file. Returns the written paths.
    """
    if noise_mode not in ("const", "random"):
        raise UserError(f"--noise {noise_mode}: choose const or random")
    if not 0 <= truncation_psi <= 2:
        raise UserError(f"--trunc {truncation_psi}: use a value in [0, 1] (1 = no truncation, 0.7 is typical)")
    if interpolate_steps == 1 or interpolate_steps < 0:
        raise UserError(f"--interpolate {interpolate_steps}: give at least 2 frames (or 0 for none)")
    if interpolate_steps and len(seeds) < 2:
        raise UserError("--interpolate needs at least two seeds, e.g. --seeds 0-3"
                        + (" (a video goes through them)" if video else ""))
    if outdir is None and video is None:
        raise UserError("pass --outdir DIR (PNGs), --video FILE.mp4|.gif, or both")
    if video is not None:
        check_video_path(video)
        if not interpolate_steps:
            raise UserError("--video needs --interpolate N: the frames per pair of consecutive seeds "
                            "(e.g. --seeds 0-7 --interpolate 60 --fps 30: 2 s per seed)")
        if not fps > 0:
            raise UserError(f"--fps {fps}: pass a positive frame rate, e.g. 30")
    if trunc_center not in TRUNC_CENTERS:
        raise UserError(f"--trunc-center {trunc_center}: choose {' or '.join(TRUNC_CENTERS)}")
    G = as_generator(network, device)
    c = class_vector(G, class_name)
    centers = truncation_centers(G, trunc_center, c)  # an unconditional G with 'class': the error, before any file
    planned: list[Path] = []
    pairs = list(zip(seeds[:-1], seeds[1:])) if interpolate_steps else []
    if outdir is not None:
        outdir = Path(outdir)
        planned += [outdir / "grid.png"] if grid else [outdir / f"seed{s:04d}.png" for s in seeds]
        planned += [outdir / f"interp-{a:04d}-{b:04d}.png" for a, b in pairs]
        clash = [p for p in planned if p.exists()]
        if clash:
            raise UserError(f"--outdir {outdir}: {clash[0].name} exists ({len(clash)} clashes); pass an empty --outdir")
    if centers is not None and echo is not None:
        names = list(getattr(G, "class_names", None) or [str(i) for i in range(G.c_dim)])
        echo(f"truncation centre: the mean w of class {names[int(c[0].argmax())]} over {centers.num} z "
             f"(torch seed {centers.seed}), not w_avg")
    written: list[Path] = []
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
        written += _write_pngs(G, seeds, c, outdir, truncation_psi, noise_mode, centers, grid)
        for a, b in pairs:
            frames = interpolate(G, a, b, interpolate_steps, c, truncation_psi, noise_mode, centers)
            path = outdir / f"interp-{a:04d}-{b:04d}.png"
            save_png(path, make_grid(frames, interpolate_steps, 1))
            written.append(path)
    if video is not None:
        frames_it = interpolation_frames(G, seeds, interpolate_steps, c, truncation_psi, noise_mode, centers)
        write_video(frames_it, video, fps, progress=progress, total=video_frame_count(len(seeds), interpolate_steps))
        written.append(Path(video))
    return written


def _write_pngs(G: torch.nn.Module, seeds: Sequence[int], c: torch.Tensor, outdir: Path, truncation_psi: float,
                noise_mode: str, centers: Optional[ClassCenters], grid: bool) -> list[Path]:
    """``grid.png`` or ``seedNNNN.png`` per seed in ``outdir``."""
    images = generate_images(G, seeds, c, truncation_psi, noise_mode, centers)  # [N, C, H, W]
    if grid:
        cols = math.ceil(math.sqrt(len(seeds)))
        rows = math.ceil(len(seeds) / cols)
        pad = images.new_zeros([cols * rows - len(seeds), *images.shape[1:]])
        save_png(outdir / "grid.png", make_grid(torch.cat([images, pad]), cols, rows))
        return [outdir / "grid.png"]
    for s, img in zip(seeds, images):
        save_png(outdir / f"seed{s:04d}.png", make_grid(img[None], 1, 1))
    return [outdir / f"seed{s:04d}.png" for s in seeds]
