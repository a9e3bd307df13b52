"""Checkpoints as plain data, written atomically; numbered run folders; the generator loader.

A checkpoint is a dict of state dicts and plain values (``format`` an int, as in
:mod:`classify.checkpoint`; a newer format than this package knows is refused)::

    {"format": 1, "config": {...resolved run config as a plain dict...},
     "cur_nimg": int, "batch_idx": int, "tick": int, "class_names": [...] | None,
     "G": sd, "D": sd, "G_ema": sd, "G_opt": sd, "D_opt": sd,
     "augment_p": float, "ada_stats": {...}, "pl_mean": tensor, "stats": {...last tick...}}

No code is pickled (unlike the published ``network-snapshot-*.pkl``), so a checkpoint
loads with ``torch.load(weights_only=True)`` on any later version of this package and
cannot run code on load. It is written to a temporary file beside its final name and
``os.replace``d (:func:`gan.util.atomic_path`): a run killed mid-write leaves the
previous checkpoint untouched and no half-written file under a checkpoint name.

Run folders are ``OUTDIR/00000-<desc>/``, numbered one past the highest existing
number; nothing that exists is ever overwritten (``mkdir(exist_ok=False)``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

import torch

from gan.util import UserError, atomic_torch_save

__all__ = [
    "FORMAT",
    "new_run_dir",
    "checkpoint_name",
    "save_checkpoint",
    "load_checkpoint",
    "load_resume_state",
    "list_checkpoints",
    "load_latest",
    "prune_checkpoints",
    "resolve_resume",
    "read_network",
    "import_network",
    "load_generator",
]

FORMAT = 1
_RUN_RE = re.compile(r"^(\d{5,})-")
_CKPT_RE = re.compile(r"^checkpoint-(\d+(?:\.\d+)?)\.pt$")
log = logging.getLogger("gan")


# ----------------------------------------------------------------------------
# Run folders.


def new_run_dir(outdir: str | Path, desc: str) -> Path:
    """Create and return ``outdir/NNNNN-desc`` with NNNNN one past the highest existing number."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"--outdir {outdir} is a file; pass a folder (it is created if missing)")
    outdir.mkdir(parents=True, exist_ok=True)
    desc = re.sub(r"[^A-Za-z0-9._-]+", "-", desc).strip("-") or "run"
    while True:
        ids = [int(m.group(1)) for p in outdir.iterdir() if (m := _RUN_RE.match(p.name))]
        run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{desc}"
        try:
            run_dir.mkdir(exist_ok=False)  # another process may take the same number: retry
            return run_dir
        except FileExistsError:
            continue


def checkpoint_name(cur_nimg: int) -> str:
    """``checkpoint-000400.pt`` at whole kimg, ``checkpoint-000000.096.pt`` in between."""
    if cur_nimg % 1000 == 0:
        return f"checkpoint-{cur_nimg // 1000:06d}.pt"
    return f"checkpoint-{cur_nimg / 1000:010.3f}.pt"


# ----------------------------------------------------------------------------
# Save and load.


def save_checkpoint(path: str | Path, state: dict[str, Any], overwrite: bool = True) -> Path:
    """Write ``state`` (plain data and tensors) to ``path`` atomically; returns ``path``.
    ``overwrite=False``: fail with ``FileExistsError`` rather than replace an existing file."""
    path = Path(path)
    state = {"format": FORMAT, **state}
    return atomic_torch_save(state, path, overwrite=overwrite)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a checkpoint-*.pt written by `mtf-gan train`")
    if path.suffix.lower() == ".pkl":
        raise UserError(f"{path} is a network pickle, not a training checkpoint: start a new run from it with "
                        f"`mtf-gan train --init {path}`, draw from it with --network, or convert it with "
                        f"`mtf-gan import`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, pickled code
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                        f"it may be incomplete or not written by `mtf-gan train`: pass another one") from None
    if not isinstance(state, dict) or "G_ema" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not an mtf-gan training checkpoint (no G_ema/config); "
                        f"published .pkl snapshots are read directly or converted with `mtf-gan import SRC.pkl DEST.pt`")
    if int(state.get("format", 0)) > FORMAT:
        raise UserError(f"checkpoint {path} has format {state['format']}, newer than this package reads "
                        f"({FORMAT}); upgrade mtf-faces")
    return state


def load_resume_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint to ``--resume`` from: :func:`load_checkpoint`, refusing an imported network
    (no optimizer state or counters), which starts a new run with ``--init`` instead."""
    state = load_checkpoint(path)
    if state.get("kind") == "imported":
        raise UserError(f"--resume {path}: an imported network, not a training checkpoint (it has no optimizer "
                        f"state or counters); start a new run from it with `mtf-gan train --init {path}`")
    return state


def list_checkpoints(run_dir: str | Path) -> list[tuple[float, Path]]:
    """``[(kimg, path)]`` of the ``checkpoint-*.pt`` files in ``run_dir``, oldest first.

    Temporary files of interrupted writes (``.checkpoint-*.tmp-*``) never match.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(float(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_file()]
    return sorted(found)


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu"
                ) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint of ``run_dir`` that loads, as ``(path, state)``; None if there is none.

    A checkpoint that does not load (copied half-way, disk full) is skipped with a warning
    and the one before it is used.
    """
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except UserError as exc:
            log.warning("skipping %s", exc)
    return None


def prune_checkpoints(run_dir: str | Path, keep: int, written: str | Path) -> list[Path]:
    """``--keep N``: delete all but the newest ``keep`` checkpoints of ``run_dir``; returns what went.

    Call it only after ``written`` was saved completely: it is never deleted (nor is any file
    newer than it), so the last good checkpoint always stays. Only ``checkpoint-*.pt`` files
    of this run folder are considered; nothing else is touched."""
    if keep < 1:
        raise ValueError(f"keep={keep}: at least the newest checkpoint must stay")
    written = Path(written).resolve()
    found = list_checkpoints(run_dir)
    newest = [p.resolve() for _, p in found[-keep:]]
    gone = []
    for _, path in found[:-keep] if len(found) > keep else []:
        if path.resolve() == written or path.resolve() in newest:
            continue
        try:
            path.unlink()
            gone.append(path)
        except FileNotFoundError:
            pass
    return gone


def _newest_in_outdir(outdir: Optional[str | Path]) -> Optional[Path]:
    """The newest loadable checkpoint of the highest-numbered run folder of ``outdir`` that has one."""
    if outdir is None or not Path(outdir).is_dir():
        return None
    runs = sorted((int(m.group(1)), p) for p in Path(outdir).iterdir() if (m := _RUN_RE.match(p.name)) and p.is_dir())
    for _, run in reversed(runs):
        found = load_latest(run)
        if found is not None:
            return found[0]
    return None


def resolve_resume(spec: str, outdir: Optional[str | Path] = None) -> Optional[Path]:
    """``--resume`` -> a checkpoint file.

    ``latest``: the newest loadable checkpoint of the highest-numbered run folder in
    ``outdir`` that has one (an error if there is none); ``auto``: the same, or None when
    there is nothing to resume (a fresh run: one job script for the first submission and
    every requeue); a folder: its newest loadable checkpoint; a file: itself.
    """
    if spec in ("latest", "auto"):
        found = _newest_in_outdir(outdir)
        if found is not None or spec == "auto":
            return found
        if outdir is None or not Path(outdir).is_dir():
            raise UserError(f"--resume latest: --outdir {outdir} has no run folders; start a run first, "
                            f"pass --resume PATH to a checkpoint, or --resume auto (fresh when there is none)")
        raise UserError(f"--resume latest: no run folder in {outdir} holds a loadable checkpoint-*.pt; "
                        f"start a run without --resume (or with --resume auto)")
    path = Path(spec)
    if path.is_dir():
        found = load_latest(path)
        if found is None:
            raise UserError(f"--resume {path}: the folder holds no loadable checkpoint-*.pt")
        return found[0]
    if not path.is_file():
        raise UserError(f"--resume {spec}: no such file or folder; pass 'latest', a run folder or a checkpoint-*.pt")
    return path


def read_network(path: str | Path) -> dict[str, Any]:
    """The networks of ``path`` in checkpoint form: a ``checkpoint-*.pt`` of ``mtf-gan train``,
    a file written by ``mtf-gan import``, or a published StyleGAN2-ADA ``.pkl`` (imported on the
    fly by :func:`gan.published.import_pickle`, which executes nothing it reads).

    The result has at least ``config`` (with its ``network`` section), ``G``, ``D`` and
    ``G_ema`` (state dicts under our names) and ``class_names``; ``kind`` is ``"training"``
    or ``"imported"`` (imports also carry ``provenance``)."""
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        from gan.published import import_pickle

        return import_pickle(path)
    state = load_checkpoint(path)
    state.setdefault("kind", "training")
    return state


def import_network(src: str | Path, dest: str | Path) -> dict[str, Any]:
    """``mtf-gan import``: read the published network pickle ``src`` safely
    (:func:`gan.published.import_pickle`) and write it to ``dest`` in our checkpoint form,
    which loads with ``weights_only=True`` from then on. ``dest`` must not exist. Returns
    the written state."""
    from gan.published import import_pickle

    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise UserError(f"{dest} exists; pass a new file name (nothing is overwritten)")
    if src.suffix.lower() != ".pkl":
        raise UserError(f"{src}: expected a published network pickle (.pkl); checkpoints of mtf-gan (.pt) "
                        f"need no import")
    if dest.suffix.lower() != ".pt":
        raise UserError(f"{dest}: name the imported checkpoint *.pt")
    state = import_pickle(src)
    try:
        save_checkpoint(dest, state, overwrite=False)
    except FileExistsError:
        raise UserError(f"{dest} appeared while importing; pass a new file name (nothing is overwritten)") from None
    return state


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The EMA generator of a checkpoint (or an imported or published network, see
    :func:`read_network`), in eval mode, float32, on ``device``.

    Everything downstream (generation, FID, attribute scoring) uses this. The network
    is rebuilt from the config stored in the checkpoint; ``G.class_names`` holds the
    class names of a conditional run (None otherwise).
    """
    from gan.config import ConfigError, from_dict
    from gan.networks import NetworkConfig, build_generator

    state = read_network(path)
    try:
        net_cfg = from_dict(NetworkConfig, state["config"]["network"], prefix="network.")
    except (KeyError, TypeError, ConfigError) as exc:
        raise UserError(f"checkpoint {path}: its config has no usable 'network' section ({exc})") from None
    G = build_generator(net_cfg)
    G.load_state_dict(state["G_ema"])
    G.class_names = state.get("class_names")
    G.cur_nimg = int(state.get("cur_nimg", 0))
    return G.eval().requires_grad_(False).to(device=device, dtype=torch.float32)
