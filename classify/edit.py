"""Editing generated faces along an attribute direction of ``mtf-classify directions``.

InterFaceGAN's edit (Shen et al. 2020, sec. 2.2): a face's latent code moves along the
boundary normal, ``w' = w + s * w_std * n`` on every layer of ``ws``, where ``w_std`` is the
standard deviation of the sampled w's signed distance to that boundary
(:mod:`classify.directions`). Strengths are therefore in units of the attribute's own spread:
``s = 3`` pushes a face three standard deviations towards the direction's second class,
whatever the attribute or the generator, and the faces of an edit grid stay inside the region
the generator was trained to cover for moderate ``|s|``.

Outputs: ``grid.png`` (rows seeds, columns strengths, from G_ema with constant noise),
``edit.json`` (the edit, and with ``--classifier`` per task the mean predicted probability of
each class at each strength) and ``edit.png`` (those curves: the edited attribute should move,
the others should stay flat), and with ``--video`` a sweep from ``-max |s|`` to ``+max |s|``
through :func:`gan.generate.write_video`.

``--orthogonal-to`` makes the edit conditional: the direction is projected orthogonal to the
named directions of the same file (:func:`classify.directions.orthogonalize`) and ``w_std``
recomputed along the projected direction from the saved covariance of w.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from classify.classifier import Classifier
from classify.directions import (attribute_classifiers, load_directions, orthogonalize, resolve_names, sample_ws,
                                 std_along, task_classes)
from classify.plots import plot_edit
from gan.distributed import pick_device
from gan.util import UserError, atomic_write_text

__all__ = ["EditOptions", "DEFAULT_STRENGTHS", "parse_strengths", "edit_direction", "edited_ws", "edit_images",
           "sweep_frames", "edit"]

DEFAULT_STRENGTHS = (-3.0, -1.5, 0.0, 1.5, 3.0)


@dataclass(frozen=True)
class EditOptions:
    """What ``mtf-classify edit`` is asked; ``network`` is a checkpoint path or a module with
    the Generator interface, ``classifiers`` paths of ``best.pt`` or :class:`Classifier`."""

    network: Any
    directions: str | os.PathLike
    attribute: str
    outdir: str | os.PathLike
    strengths: Sequence[float] = DEFAULT_STRENGTHS
    seeds: Sequence[int] | str = tuple(range(8))
    orthogonal_to: Sequence[str] = ()
    classifiers: Sequence[Any] = ()
    class_name: Optional[str] = None
    video: Optional[str | os.PathLike] = None
    frames: int = 60
    fps: float = 30.0
    device: str = "cpu"
    batch: int = 64
    progress: bool = True


def parse_strengths(spec: str, option: str = "--strengths") -> tuple[float, ...]:
    """``'-3,-1.5,0,1.5,3'`` -> floats (:func:`gan.generate.parse_floats`: an error names ``option``)."""
    from gan.generate import parse_floats

    return parse_floats(spec, option, f"pass numbers in units of the attribute's w_std, e.g. {option}=-3,-1.5,0,1.5,3")


def _seeds(o: EditOptions) -> list[int]:
    from gan.generate import parse_seeds

    return parse_seeds(o.seeds) if isinstance(o.seeds, str) else [int(s) for s in o.seeds]


def _check_options(o: EditOptions) -> None:
    from gan.generate import check_video_path

    out = Path(o.outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--outdir {out} exists and is not empty; pass a new folder (nothing is overwritten)")
    if not o.strengths or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in o.strengths):
        raise UserError(f"--strengths {o.strengths}: pass finite numbers, e.g. --strengths=-3,-1.5,0,1.5,3")
    if not _seeds(o):
        raise UserError("--seeds: no seeds given; use e.g. 0-7")
    if o.video is not None:
        check_video_path(o.video)
        if o.frames < 2:
            raise UserError(f"--frames {o.frames}: a sweep needs at least 2 frames")
        if not o.fps > 0:
            raise UserError(f"--fps {o.fps}: pass a positive frame rate, e.g. 30")
        if max(abs(s) for s in o.strengths) == 0:
            raise UserError("--video sweeps from -max to +max of --strengths; give a non-zero strength")
    if o.batch < 1:
        raise UserError(f"--batch {o.batch}: pass a positive batch size")


# ---------------------------------------------------------------------------- the direction


def edit_direction(data: Mapping[str, Any], attribute: str, orthogonal_to: Sequence[str] = ()
                   ) -> tuple[str, torch.Tensor, float, list[str]]:
    """``(name, unit direction [w_dim], w_std, names projected out)`` for ``--attribute`` in a
    loaded ``directions.pt``: a direction name (``age``, ``race=White``) or a task with one
    direction, matched case-insensitively; ``orthogonal_to`` names of other tasks' directions
    (or tasks) to project out, after which ``w_std`` is recomputed from ``w_cov``."""
    names = list(data["directions"])
    tasks = {n: data["attributes"][n]["task"] for n in names}
    lowered = {n.lower(): n for n in names}
    by_task = [n for n in names if tasks[n].lower() == attribute.strip().lower()]
    if attribute.strip().lower() in lowered:
        name = lowered[attribute.strip().lower()]
    elif len(by_task) == 1:
        name = by_task[0]
    elif by_task:
        raise UserError(f"--attribute {attribute}: this task has one direction per class; pass one of "
                        f"{', '.join(by_task)}")
    else:
        raise UserError(f"--attribute {attribute}: the directions file has no such direction; choose one of "
                        f"{', '.join(names)}")
    others = [x for x in resolve_names(orthogonal_to, names, tasks) if tasks[x] != tasks[name]]
    n = data["directions"][name].float()
    if not others:
        return name, n, float(data["w_std"][name]), []
    n = orthogonalize(n, [data["directions"][x] for x in others])
    return name, n, std_along(n, data["w_cov"]), others


def edited_ws(ws: torch.Tensor, direction: torch.Tensor, w_std: float, strengths: Sequence[float]) -> torch.Tensor:
    """``[N, S, num_ws, w_dim]``: ``ws`` ``[N, num_ws, w_dim]`` moved by ``s * w_std * direction``
    on every layer, for each of the ``S`` strengths."""
    step = torch.as_tensor(list(strengths), dtype=ws.dtype)[:, None, None] * (w_std * direction.to(ws))  # [S, 1, D]
    return ws[:, None] + step[None]


@torch.no_grad()
def edit_images(G: nn.Module, ws: torch.Tensor, direction: torch.Tensor, w_std: float,
                strengths: Sequence[float], progress: bool = False) -> torch.Tensor:
    """uint8 ``[N * S, C, H, W]``, seed-major: face ``i`` at each strength (constant noise)."""
    from tqdm import tqdm

    from gan.generate import device_of
    from gan.images import images_to_uint8

    device = device_of(G)
    moved = edited_ws(ws, direction, w_std, strengths)  # [N, S, num_ws, w_dim]
    out = [images_to_uint8(G.synthesis(m.to(device), noise_mode="const")).cpu()
           for m in tqdm(moved, desc="edit: faces", unit="seed", disable=not progress, dynamic_ncols=True)]
    return torch.cat(out)  # [N * S, C, H, W]


@torch.no_grad()
def sweep_frames(G: nn.Module, ws: torch.Tensor, direction: torch.Tensor, w_std: float, max_strength: float,
                 frames: int) -> Iterator[torch.Tensor]:
    """uint8 ``[3, H', W']`` video frames: every face (a near-square grid) at strengths from
    ``-max_strength`` to ``+max_strength`` in ``frames`` even steps."""
    from gan.generate import device_of
    from gan.images import images_to_uint8, make_grid

    device = device_of(G)
    n = len(ws)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    for s in torch.linspace(-max_strength, max_strength, frames).tolist():
        img = images_to_uint8(G.synthesis(edited_ws(ws, direction, w_std, [s])[:, 0].to(device),
                                          noise_mode="const")).cpu()  # [N, C, H, W]
        pad = img.new_zeros([cols * rows - n, *img.shape[1:]])
        yield torch.from_numpy(make_grid(torch.cat([img, pad]), cols, rows)).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------- the command


def _classified(clfs: Mapping[str, Classifier], images: torch.Tensor, n_seeds: int, strengths: Sequence[float],
                edited_task: str, batch: int) -> dict[str, Any]:
    """``edit.json``'s ``tasks``: per task the classes and the mean probability of each per strength."""
    tasks: dict[str, Any] = {}
    for task, clf in clfs.items():
        names, cols = task_classes(clf)
        p = clf.predict(list(images), batch)[0].reshape(n_seeds, len(strengths), -1)  # [N, S, K]
        mean = p.mean(0)  # [S, K]
        tasks[task] = {"classes": names, "strengths": list(strengths), "edited": task == edited_task,
                       "mean_probability": {c: [round(float(v), 6) for v in mean[:, j]] for c, j in zip(names, cols)}}
    return tasks


def edit(options: EditOptions, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Edit faces along one direction of a ``directions.pt`` made for this generator; write
    ``grid.png`` and ``edit.json`` (+ ``edit.png`` with classifiers, the video with ``video``)
    into ``options.outdir`` (new or empty). Returns the ``edit.json`` dict."""
    from gan.generate import write_video
    from gan.images import make_grid, save_png
    from classify.score import _gan_training_archive, load_conditioned_generator

    o = options
    _check_options(o)
    out, seeds, strengths = Path(o.outdir), _seeds(o), [float(s) for s in o.strengths]
    dev = pick_device(o.device)
    G, labels, how = load_conditioned_generator(o.network, len(seeds), o.class_name, dev,
                                                [_gan_training_archive(o.network)])
    data = load_directions(o.directions, G)
    name, direction, w_std, others = edit_direction(data, o.attribute, o.orthogonal_to)
    clfs = attribute_classifiers(o.classifiers, dev) if o.classifiers else {}
    meta = data["attributes"][name]
    echo(f"edit: {name} ({meta['from']} -> {meta['to']}), w_std {w_std:.3f}, strengths "
         f"{', '.join(f'{s:g}' for s in strengths)}, {len(seeds)} faces (conditions: {how})")
    ws = sample_ws(G, seeds, labels)  # [N, num_ws, w_dim]
    images = edit_images(G, ws, direction, w_std, strengths, o.progress)  # [N * S, C, H, W]
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "grid.png", make_grid(images, len(strengths), len(seeds)))
    report: dict[str, Any] = {
        "attribute": name, "task": meta["task"], "from": meta["from"], "to": meta["to"],
        "strengths": strengths, "seeds": seeds, "w_std": w_std, "orthogonal_to": others,
        "conditions": how, "directions": str(o.directions), "generator": data["generator"]["identity"],
        "grid": {"file": "grid.png", "rows": "seeds", "columns": "strengths"},
        "tasks": _classified(clfs, images, len(seeds), strengths, meta["task"], o.batch) if clfs else {},
        "video": None,
    }
    if clfs:
        plot_edit(report, out / "edit.png")
    if o.video is not None:
        peak = max(abs(s) for s in strengths)
        count = write_video(sweep_frames(G, ws, direction, w_std, peak, o.frames), o.video, o.fps,
                            progress=o.progress, total=o.frames)
        report["video"] = {"file": str(o.video), "frames": count, "fps": o.fps, "strengths": [-peak, peak]}
    atomic_write_text(out / "edit.json", json.dumps(report, indent=2) + "\n")
    for task, t in report["tasks"].items():
        moved = {c: v[-1] - v[0] for c, v in t["mean_probability"].items()}
        echo(f"edit: {task:<7} mean probability change from {strengths[0]:g} to {strengths[-1]:g}: "
             + ", ".join(f"{c} {d:+.3f}" for c, d in moved.items()))
    echo(f"edit: {out / 'grid.png'} (rows seeds, columns strengths; numbers: edit.json)")
    return report
