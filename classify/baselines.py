"""The models x tasks ``baselines`` grid: one :func:`classify.train.train` run per cell, and the tables.

:func:`baselines` trains every cell of a models x tasks grid into ``<outdir>/<task>/<model>``,
skips cells that already hold ``metrics.json``, resumes cells that hold ``last.pt``, and
writes ``results.csv`` and ``results.md`` with the paper's reported ConvNeXt-Base row
(:data:`PAPER_ACCURACY`). Under torchrun the processes train each cell together (one
process group for the whole grid); rank 0 writes the tables.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from classify import dataset as D
from classify.models import MODELS, PAPER_MODELS, require_weights
from classify.recipe import Recipe, load_recipe
from classify.train import train
from gan import distributed as dist
from gan.util import MissingWeights, UserError, atomic_write_text

__all__ = ["PAPER_ACCURACY", "write_results", "baselines"]

#: ConvNeXt-Base test accuracies (%) on curated MTF reported by Haffar et al. (IEEE Access
#: 13:63827, 2025; arXiv 2311.11882v2 abstract).
PAPER_ACCURACY = {"gender": 98.88, "race": 95.77, "age": 97.60, "face_recognition": 79.87}


def _cell_text(m: dict[str, Any]) -> str:
    lo, hi = m["accuracy_ci95"]
    return f"{m['accuracy']:.2%} [{lo:.1%}, {hi:.1%}], F1 {m['macro_f1']:.3f}"


def write_results(rows: list[dict[str, Any]], outdir: Path, tasks: Sequence[str], models: Sequence[str],
                  recipe: Recipe, data: str) -> None:
    """``results.csv`` (one row per finished cell, plus the paper's) and ``results.md`` (models x tasks)."""
    fields = ["source", "task", "model", "recipe", "accuracy", "ci95_low", "ci95_high", "macro_f1",
              "macro_precision", "macro_recall", "n_test", "best_epoch", "epochs_trained", "train_seconds", "run_dir"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for m in rows:
        lo, hi = m["accuracy_ci95"]
        w.writerow({"source": "ours", "task": m["task"], "model": m["model"], "recipe": m["recipe"],
                    "accuracy": f"{m['accuracy']:.6f}", "ci95_low": f"{lo:.6f}", "ci95_high": f"{hi:.6f}",
                    "macro_f1": f"{m['macro_f1']:.6f}", "macro_precision": f"{m['macro_precision']:.6f}",
                    "macro_recall": f"{m['macro_recall']:.6f}", "n_test": m["n"], "best_epoch": m["epoch"],
                    "epochs_trained": m["epochs_trained"], "train_seconds": m["train_seconds"],
                    "run_dir": m["run_dir"]})
    for task in tasks:
        w.writerow({"source": "paper", "task": task, "model": "convnext_base", "recipe": "paper",
                    "accuracy": f"{PAPER_ACCURACY[task] / 100:.4f}"})
    atomic_write_text(outdir / "results.csv", buf.getvalue())

    by = {(m["task"], m["model"]): m for m in rows}
    head = "| model | " + " | ".join(tasks) + " |"
    lines = [
        f"# MTF classification baselines (recipe `{recipe.name}`)",
        "",
        f"Data: `{data}`. Test accuracy with its 95% Wilson interval, and macro F1; "
        "`-` marks cells not finished yet. The last row is what Haffar et al. (IEEE Access 13, 2025) "
        "report for ConvNeXt-Base on curated MTF (accuracy only).",
        "",
        head,
        "|" + "---|" * (len(tasks) + 1),
    ]
    for model in models:
        cells = [(_cell_text(by[(t, model)]) if (t, model) in by else "-") for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("| convnext_base (paper, reported) | " + " | ".join(f"{PAPER_ACCURACY[t]:.2f}%" for t in tasks) + " |")
    atomic_write_text(outdir / "results.md", "\n".join(lines) + "\n")


def _clear_unstarted(cell: Path) -> None:
    """Remove what an interrupted first epoch left (only files ``train`` writes before ``last.pt``)."""
    if not cell.is_dir():
        return
    ours = [p for p in cell.iterdir() if p.name in ("config.yaml", "log.txt", "stats.jsonl")
            or p.name.startswith("events.out.tfevents.")]
    if len(ours) == len(list(cell.iterdir())):
        for p in ours:
            p.unlink()


def _check_weights(models: Sequence[str], rec: Recipe) -> None:
    """Report every missing ImageNet weights file at once, before any training."""
    paragraphs = []
    for m in models:
        if rec.uses_pretrained(m):
            try:
                require_weights(m)
            except MissingWeights as exc:
                paragraphs.append(str(exc))
    if paragraphs:
        raise MissingWeights("\n\n".join(paragraphs))


def baselines(
    data: str | os.PathLike,
    outdir: str | os.PathLike,
    models: Sequence[str] = PAPER_MODELS,
    tasks: Sequence[str] = D.TASKS,
    recipe: str | os.PathLike = "notebook",
    overrides: Sequence[str] = (),
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    dist_timeout: float = dist.DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Train and test every model x task cell into ``<outdir>/<task>/<model>``; resumable.

    A cell with ``metrics.json`` is finished and skipped; one with ``last.pt`` only is
    resumed. Missing ImageNet weights are reported for all models at once, before any
    training. Returns the finished cells' metrics. Under torchrun the processes train
    each cell together (one process group for the whole grid); rank 0 writes the tables.
    """
    tasks = [D.canonical_task(t) for t in tasks]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise UserError(f"baselines: unknown model(s) {', '.join(bad)}; pass names from {', '.join(MODELS)}")
    rec = load_recipe(recipe, overrides)
    _check_weights(models, rec)
    with dist.session(device, dist_timeout):
        return _baselines(data, Path(outdir), models, tasks, rec, device, cache_dir, progress, echo)


def _cell(data: str | os.PathLike, cell: Path, task: str, model: str, rec: Recipe, device: str,
          cache_dir: str | os.PathLike | None, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """One cell's metrics: read when finished earlier, else trained (or resumed) now."""
    metrics_path = cell / "metrics.json"
    if metrics_path.is_file():
        m = json.loads(metrics_path.read_text(encoding="utf-8"))
        m.setdefault("run_dir", str(cell))
        echo(f"baselines: {task} / {model}: finished earlier ({m['accuracy']:.2%}), skipped")
        return m
    resume = (cell / "last.pt").is_file()
    dist.barrier()  # every process has looked at the cell before rank 0 clears it
    if not resume and dist.is_rank0():
        _clear_unstarted(cell)
    dist.barrier()
    echo(f"baselines: {task} / {model}: {'resuming' if resume else 'training'} in {cell}")
    return train(data, task, model, rec, cell, device=device, resume=resume, cache_dir=cache_dir,
                 progress=progress, echo=True)


def _baselines(data: str | os.PathLike, out: Path, models: Sequence[str], tasks: Sequence[str], rec: Recipe,
               device: str, cache_dir: str | os.PathLike | None, progress: bool,
               echo: Callable[[str], None]) -> list[dict[str, Any]]:
    rank0 = dist.is_rank0()
    if not rank0:
        echo = lambda msg: None  # noqa: E731
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for model in models:
            rows.append(_cell(data, out / task / model, task, model, rec, device, cache_dir, progress, echo))
            if rank0:
                write_results(rows, out, tasks, models, rec, str(data))
    echo(f"baselines: wrote {out / 'results.md'} and {out / 'results.csv'}")
    return rows
