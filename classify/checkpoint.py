"""Classifier checkpoints (``best.pt`` / ``last.pt``) as plain data, and loading one for inference.

A checkpoint is a dict of state dicts and plain values, with the same conventions as
:mod:`gan.checkpoint` (house rule 9)::

    {"format": 1, "model_name": str, "task": str, "classes": [...], "recipe": {...},
     "input_size": int, "normalization": {"mean", "std"} | None, "data": str,
     "epoch": int, "model": sd, "early_stop": {"mode", "best", "best_epoch", "bad", "finished"},
     "train_seconds": float, "val_accuracy": float, "train_loss": float,
     "optimizer": sd, "scaler": sd}       # optimizer and scaler in last.pt only

It is written to a temporary file beside its final name and ``os.replace``d
(:func:`gan.util.atomic_path`) and read with ``torch.load(weights_only=True)``, so no code is
pickled and a run killed mid-write leaves the previous file whole. ``format`` is an int,
:data:`FORMAT`; a file of a newer format is refused with a message that says to upgrade.
Files written before the format became an int carry ``"mtf-classify/1"`` (:data:`LEGACY_FORMATS`)
and hold the same keys as format 1: they load and resume unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classify.models import create_model
from classify.recipe import Recipe, recipe_from_dict
from gan.util import UserError, atomic_torch_save

__all__ = ["FORMAT", "LEGACY_FORMATS", "save_checkpoint", "load_checkpoint", "model_from_checkpoint",
           "load_for_inference"]

FORMAT = 1
#: Format values written by earlier versions -> the int format they are.
LEGACY_FORMATS = {"mtf-classify/1": 1}
#: Keys every classifier checkpoint holds (what tells it apart from a GAN checkpoint).
_REQUIRED = ("model_name", "task", "classes", "recipe", "model", "epoch")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain data and tensors) with ``format`` to ``path`` atomically; returns ``path``."""
    return atomic_torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``best.pt``/``last.pt`` as plain data (``torch.load(weights_only=True)``), ``format`` as an int."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); "
                        "pass a best.pt or last.pt written by mtf-classify train") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    fmt = LEGACY_FORMATS.get(fmt, fmt) if isinstance(fmt, str) else fmt
    if not isinstance(fmt, int) or any(k not in ckpt for k in _REQUIRED):
        raise UserError(f"checkpoint {path} was not written by mtf-classify train (format {FORMAT}); "
                        "pass a best.pt or last.pt of an mtf-classify train run")
    if fmt > FORMAT:
        raise UserError(f"checkpoint {path} has format {fmt}, newer than this package reads ({FORMAT}); "
                        "upgrade mtf-faces")
    ckpt["format"] = fmt
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """The trained classifier of a checkpoint, in eval mode (no ImageNet weights needed)."""
    model = create_model(ckpt["model_name"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def load_for_inference(path: str | os.PathLike, device: torch.device) -> tuple[dict[str, Any], nn.Module, Recipe]:
    """``(checkpoint, model in eval mode on device, recipe)`` of a ``best.pt``/``last.pt``:
    what evaluation and scoring both need to run a trained classifier."""
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt).to(device), recipe_from_dict(ckpt["recipe"])
