"""Classification accuracy score: are a conditional generator's faces good training data?

CAS (Ravuri & Vinyals, *Classification Accuracy Score for Conditional Generative Models*,
NeurIPS 2019) trains a classifier on generated images only, labelled by the condition they
were drawn with, and reports its accuracy on **real** test images. A generator whose faces
of a class look like real faces of that class, in all their variety, gives a CAS close to
the accuracy of the same classifier trained on real images; one that ignores its condition,
drops modes or draws artefacts the classifier latches onto gives less.

:func:`cas` (``mtf-classify cas``):

1. maps the task's classes onto the generator's conditions through the MTF class aliases
   (:func:`classify.classifier.match_class`); a generator conditioned on several attributes
   (``gender=Female, ..., race=White``) has the task's group set and the other groups drawn
   from its training archive's label rows of that class (else uniformly);
2. draws ``per_class`` faces per class (seeds ``seed + k * per_class + i`` for class ``k``)
   and writes them as an ``ImageFolder`` tree ``generated/<task>/train/<class>/seedNNNNNN.png``
   whose ``test`` folder is a link to the real test split (a copy where links fail);
3. trains the model with the recipe by :func:`classify.train.train` on that tree: the
   validation split for model selection and early stopping is carved from the **generated**
   faces (``data.val_fraction`` of each class), so no real image is seen before the test;
4. the same model and recipe trained on the real train split (in the same call, run folder
   ``real/``) or a given ``real_checkpoint`` tested on the same split give the reference.

Outputs in ``outdir`` (new or empty): ``cas.json`` (``cas`` and ``real_accuracy`` as
fractions, ``gap`` = real - CAS, ``per_class_recall``, ``protocol`` and more), ``cas.md``,
``confusion.png`` (the CAS classifier on the real test split), and the folders
``generated/``, ``cas/`` (the run of the classifier trained on generated faces) and
``real/``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from classify import dataset as D
from classify.checkpoint import load_checkpoint
from classify.classifier import match_class, resolve_recorded
from classify.evaluate import evaluate
from classify.loaders import scan_for
from classify.models import MODELS
from classify.plots import plot_confusion
from classify.recipe import Recipe, load_recipe
from classify.train import check_model, train
from gan.config import load_config, to_dict
from gan.distributed import pick_device
from gan.util import UserError, atomic_write_text

__all__ = ["CasOptions", "CondPlan", "condition_plan", "cas"]

#: Images generated per forward pass of the generator.
GEN_BATCH = 32
#: How :class:`classify.train.EarlyStopping` picks the tested checkpoint, in words.
_SELECTION = {"none": "none (all epochs run; the last is tested)", "train_loss": "lowest training loss",
              "val_loss": "lowest validation loss", "val_acc": "highest validation accuracy"}


@dataclass(frozen=True)
class CasOptions:
    """Everything :func:`cas` is asked to do (the options of ``mtf-classify cas``).

    ``network``: a GAN checkpoint (or an imported / published network) or a module with the
    Generator interface (:func:`gan.generate.as_generator`); ``data``: the curated MTF root
    (or one task folder) whose test split is the test and whose train split trains the
    real-data reference; ``recipe``: a :class:`Recipe` or a preset name / YAML path, with
    ``overrides``; ``real_checkpoint``: a ``best.pt`` of the same model and recipe trained on
    the real train split, instead of training one here.
    """

    network: str | os.PathLike | nn.Module
    data: str | os.PathLike
    task: str
    model: str
    outdir: str | os.PathLike
    recipe: Recipe | str = "notebook"
    overrides: Sequence[str] = ()
    per_class: int = 500
    seed: int = 0
    truncation_psi: float = 1.0
    real_checkpoint: Optional[str | os.PathLike] = None
    device: str = "auto"
    weights: Optional[str | os.PathLike] = None
    cache_dir: Optional[str | os.PathLike] = None
    progress: bool = True


# ---------------------------------------------------------------------------- options


def _check_options(o: CasOptions) -> tuple[str, Recipe]:
    """The errors that need no generator: each names the option and the fix. Returns the
    canonical task and the resolved recipe."""
    out = Path(o.outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--outdir {out} exists and is not empty; pass a new folder (nothing is overwritten)")
    try:
        task = D.canonical_task(o.task)
    except UserError:
        raise UserError(f"--task {o.task}: unknown task; pass one of {', '.join(D.TASKS)}") from None
    if o.model not in MODELS:
        raise UserError(f"--model {o.model}: unknown model; pass one of {', '.join(MODELS)}")
    if o.per_class < 2:
        raise UserError(f"--per-class {o.per_class}: pass at least 2 (each class needs faces to train on and "
                        f"faces for the validation split); CAS wants hundreds")
    if not 0 <= o.truncation_psi <= 1:
        raise UserError(f"--trunc {o.truncation_psi}: use a value in [0, 1] (1 = no truncation)")
    if not isinstance(o.recipe, Recipe):
        recipe = load_recipe(o.recipe, o.overrides)
    elif o.overrides:  # a Recipe object with --set overrides (unknown keys are errors)
        recipe = load_config(Recipe, None, o.overrides, base=to_dict(o.recipe))
    else:
        recipe = o.recipe
    check_model(o.model, recipe, o.weights)  # input size and ImageNet weights, before any face is drawn
    if o.real_checkpoint is not None:
        _check_real_checkpoint(Path(o.real_checkpoint), task)
    return task, recipe


def _check_real_checkpoint(path: Path, task: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--real-checkpoint {path}: no such file; pass the best.pt of `mtf-classify train` on the "
                        f"real {task} tree, or leave it out to train one here")
    ckpt = load_checkpoint(path)
    if D.canonical_task(str(ckpt["task"])) != task:
        raise UserError(f"--real-checkpoint {path} was trained for task {ckpt['task']}, not {task}; pass a "
                        f"{task} classifier")
    return ckpt


# ---------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class CondPlan:
    """How each class of the task is drawn from the generator's condition vector.

    ``columns[k]`` is the entry of ``c`` set for task class ``k``; ``task_columns`` all the
    entries of the task's group; ``other_groups`` the entries of each other group (a joint
    condition); ``archive_labels`` ``[N, c_dim]`` the training archive's label rows used to
    draw the other groups (None: uniform).
    """

    c_dim: int
    classes: tuple[str, ...]
    columns: tuple[int, ...]
    task_columns: tuple[int, ...]
    other_groups: tuple[tuple[int, ...], ...] = ()
    archive_labels: Optional[torch.Tensor] = None
    others_how: str = ""

    def draw(self, k: int, n: int, rng: np.random.Generator) -> torch.Tensor:
        """``[n, c_dim]`` conditions for ``n`` faces of task class ``k``."""
        c = torch.zeros([n, self.c_dim])
        if self.other_groups and self.archive_labels is not None:
            rows = self.archive_labels[self.archive_labels[:, self.columns[k]] > 0.5]
            rows = rows if len(rows) else self.archive_labels  # the class is absent from the archive
            c = rows[torch.as_tensor(rng.integers(0, len(rows), size=n))].clone().float()
        elif self.other_groups:
            for members in self.other_groups:
                pick = rng.integers(0, len(members), size=n)
                c[torch.arange(n), torch.as_tensor(np.asarray(members)[pick])] = 1.0
        c[:, list(self.task_columns)] = 0.0
        c[:, self.columns[k]] = 1.0
        return c


def _groups(names: Sequence[str]) -> dict[str, list[int]]:
    """Condition entries by column: ``gender=Female`` is column ``gender``; a plain name is column ``""``."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n.split("=", 1)[0] if "=" in n else "", []).append(i)
    return groups


def _column_task(column: str) -> Optional[str]:
    try:
        return D.canonical_task(column) if column else None
    except UserError:
        return None


def condition_plan(G: nn.Module, task: str, classes: Sequence[str]) -> CondPlan:
    """Map ``classes`` (the real tree's, in class order) onto ``G``'s conditions.

    Errors: an unconditional generator, a generator with no condition group of ``task``
    (its classes are not the task's), a class the generator cannot draw, a condition of the
    task's group that is no class of the task.
    """
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    if c_dim == 0:
        raise UserError("--network: the generator is unconditional; CAS labels each generated face with the class "
                        "it was drawn for, so it needs a conditional generator (`mtf-gan train --cond` on an "
                        "archive labelled by the task)")
    names = [str(n) for n in (getattr(G, "class_names", None) or [str(i) for i in range(c_dim)])]
    groups = _groups(names)
    value = {i: n.split("=", 1)[1] if "=" in n else n for i, n in enumerate(names)}
    picked = [col for col in groups if _column_task(col) == task]
    if not picked:
        picked = [col for col in groups if all(match_class(task, value[i], classes) is not None for i in groups[col])]
    if not picked:
        raise UserError(f"--network: the generator is conditioned on {', '.join(names)}, not on the {task} classes "
                        f"({', '.join(classes)}); CAS trains a {task} classifier on faces labelled by their "
                        f"condition: pass the --task the generator was conditioned on, or a generator trained "
                        f"with --cond on an archive labelled by {task}")
    members = groups[picked[0]]
    columns = []
    for k, cls in enumerate(classes):
        hit = [i for i in members if match_class(task, value[i], [cls]) is not None]
        if not hit:
            raise UserError(f"--network: the generator cannot draw {task} class {cls} (its {task} conditions are "
                            f"{', '.join(names[i] for i in members)}); CAS needs every class of the test split")
        columns.append(hit[0])
    known = D.TASK_CLASSES.get(task)  # None for face_recognition: any person name is a class
    extra = [names[i] for i in members if known is not None and match_class(task, value[i], known) is None]
    if extra:  # (a known class the test split lacks is simply not drawn)
        raise UserError(f"--network: the generator's conditions {', '.join(extra)} are no {task} class "
                        f"({', '.join(known or ())}); pass the --task the generator was conditioned on")
    others = tuple(tuple(m) for col, m in groups.items() if col != picked[0])
    return CondPlan(c_dim=c_dim, classes=tuple(classes), columns=tuple(columns), task_columns=tuple(members),
                    other_groups=others)


def _with_archive_mix(plan: CondPlan, network: Any) -> CondPlan:
    """A joint condition's other groups drawn from the GAN's training archive's label rows."""
    from dataclasses import replace

    if not plan.other_groups:
        return plan
    archive = None
    if isinstance(network, (str, os.PathLike)) and Path(network).suffix.lower() != ".pkl":
        from gan.checkpoint import read_network

        path = ((read_network(network).get("config") or {}).get("data") or {}).get("path")
        archive = resolve_recorded(path, Path(network).parent) if path else None
    if archive is not None:
        from gan.generate import real_labels

        labels = real_labels(archive)
        if labels is not None and labels.shape[1] == plan.c_dim:
            return replace(plan, archive_labels=labels, others_how=f"the label rows of {archive} of the same class")
    return replace(plan, others_how="uniform over each group (no labelled training archive found)")


# ---------------------------------------------------------------------------- generated faces


@torch.no_grad()
def _generate_tree(G: nn.Module, plan: CondPlan, o: CasOptions, task_dir: Path, dev: torch.device) -> list[int]:
    """Write ``per_class`` faces per class to ``task_dir/train/<class>/seedNNNNNN.png``; returns the seeds."""
    from tqdm import tqdm

    from PIL import Image

    from gan.generate import seed_z
    from gan.images import images_to_uint8

    rng = np.random.default_rng(o.seed)
    seeds_all: list[int] = []
    bar = tqdm(total=len(plan.classes) * o.per_class, desc="cas: generate", unit="img", disable=not o.progress)
    for k, cls in enumerate(plan.classes):
        folder = task_dir / "train" / cls
        folder.mkdir(parents=True)
        seeds = [o.seed + k * o.per_class + i for i in range(o.per_class)]
        cond = plan.draw(k, o.per_class, rng)  # [per_class, c_dim]
        for start in range(0, len(seeds), GEN_BATCH):
            chunk = seeds[start:start + GEN_BATCH]
            z = torch.cat([seed_z(s, G.z_dim) for s in chunk]).to(dev)  # [B, z_dim]
            c = cond[start:start + len(chunk)].to(dev)  # [B, c_dim]
            img = images_to_uint8(G(z, c, truncation_psi=o.truncation_psi, noise_mode="const")).cpu()  # [B, C, H, W]
            if img.shape[1] == 1:
                img = img.expand(-1, 3, -1, -1)
            for s, x in zip(chunk, img):  # plain writes into a new tree: an fsync per face would double the time
                Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB").save(folder / f"seed{s:06d}.png")
            bar.update(len(chunk))
        seeds_all += seeds
    bar.close()
    return seeds_all


def _link_test(real: D.TaskData, task_dir: Path) -> tuple[Path, str]:
    """``task_dir/test`` -> the real test split folder (a link; a copy where links fail)."""
    files = [p for p, _ in real.splits["test"]]
    source = Path(os.path.commonpath([os.path.abspath(p) for p in files]))  # the split folder (>= 2 class folders)
    try:
        (task_dir / "test").symlink_to(source, target_is_directory=True)
        return source, "link"
    except OSError:
        shutil.copytree(source, task_dir / "test")
        return source, "copy"


# ---------------------------------------------------------------------------- the two classifiers


def _real_reference(o: CasOptions, task: str, recipe: Recipe, out: Path, echo: Callable[[str], Any]) -> dict[str, Any]:
    """Test accuracy of the same model and recipe trained on the real train split."""
    if o.real_checkpoint is None:
        echo(f"cas: training {o.model} on the real {task} train split (recipe {recipe.name}) -> {out / 'real'}")
        m = train(o.data, task, o.model, recipe, out / "real", device=o.device, weights=o.weights,
                  cache_dir=o.cache_dir, progress=o.progress, echo=o.progress)
        return {**m, "source": "trained", "same_model_and_recipe": True}
    ckpt = _check_real_checkpoint(Path(o.real_checkpoint), task)
    echo(f"cas: testing --real-checkpoint {o.real_checkpoint} on the real {task} test split -> {out / 'real'}")
    m = evaluate(o.real_checkpoint, o.data, outdir=out / "real", split="test", device=o.device,
                 cache_dir=o.cache_dir, log=lambda s: None)
    same = ckpt["model_name"] == o.model and ckpt["recipe"] == to_dict(recipe)
    if not same:
        echo(f"cas: note: --real-checkpoint was trained with {ckpt['model_name']} / recipe "
             f"{ckpt['recipe'].get('name')}, not {o.model} / {recipe.name}; the gap compares different classifiers")
    return {**m, "source": "checkpoint", "recipe": ckpt["recipe"].get("name"), "same_model_and_recipe": same}


def _recalls(m: dict[str, Any]) -> dict[str, float]:
    return {r["class"]: r["recall"] for r in m["per_class"]}


def _result(o: CasOptions, task: str, recipe: Recipe, plan: CondPlan, seeds: list[int], real_test: tuple[Path, str],
            cas_m: dict[str, Any], real_m: dict[str, Any]) -> dict[str, Any]:
    """Everything ``cas.json`` holds."""
    network = str(o.network) if isinstance(o.network, (str, os.PathLike)) else type(o.network).__name__
    protocol = {
        "paper": "Ravuri & Vinyals 2019, Classification Accuracy Score for Conditional Generative Models",
        "task": task, "classes": list(plan.classes), "network": network,
        "conditions": {c: int(j) for c, j in zip(plan.classes, plan.columns)},
        "other_conditions": plan.others_how or None,
        "per_class": o.per_class, "seeds": f"{seeds[0]}-{seeds[-1]}", "truncation_psi": o.truncation_psi,
        "model": o.model, "recipe": recipe.name, "recipe_config": to_dict(recipe),
        "train": f"{o.per_class} generated faces per class, less the validation share",
        "validation": (f"carved from the generated faces only ({recipe.data.val_fraction:.0%} of each class, "
                       f"seed {recipe.train.seed}); model selection: " + _SELECTION.get(recipe.train.early_stop,
                                                                          recipe.train.early_stop)),
        "test": {"split": "real test", "path": str(real_test[0]), "n": cas_m["n"], "how": real_test[1]},
        "real": {"source": real_m["source"], "checkpoint": real_m.get("checkpoint"),
                 "same_model_and_recipe": real_m["same_model_and_recipe"]},
    }
    return {
        "cas": float(cas_m["accuracy"]), "real_accuracy": float(real_m["accuracy"]),
        "gap": float(real_m["accuracy"] - cas_m["accuracy"]),
        "cas_ci95": cas_m["accuracy_ci95"], "real_accuracy_ci95": real_m["accuracy_ci95"],
        "majority_rate": float(cas_m["majority_rate"]),
        "per_class_recall": _recalls(cas_m), "real_per_class_recall": _recalls(real_m),
        "support": {r["class"]: r["support"] for r in cas_m["per_class"]},
        "confusion": cas_m["confusion"], "classes": cas_m["classes"],
        "cas_macro_f1": float(cas_m["macro_f1"]), "real_macro_f1": float(real_m["macro_f1"]),
        "protocol": protocol,
        "files": {"report": "cas.md", "confusion": "confusion.png", "generated": "generated", "cas_run": "cas",
                  "real_run": "real"},
    }


# ---------------------------------------------------------------------------- files


def _markdown(r: dict[str, Any]) -> str:
    p = r["protocol"]
    lo, hi = r["cas_ci95"]
    rlo, rhi = r["real_accuracy_ci95"]
    lines = [
        f"# Classification accuracy score: {p['task']}", "",
        f"A {p['model']} trained with recipe {p['recipe']} on {p['per_class']} generated faces per class of "
        f"`{p['network']}`, tested on the real test split ({p['test']['n']} images).", "",
        "| | test accuracy | 95% CI |", "|---|---|---|",
        f"| **CAS** (trained on generated faces) | {r['cas']:.1%} | {lo:.1%}-{hi:.1%} |",
        f"| real (same model and recipe, trained on the real train split) | {r['real_accuracy']:.1%} | "
        f"{rlo:.1%}-{rhi:.1%} |",
        f"| gap (real - CAS) | {r['gap'] * 100:+.1f} points | |",
        f"| majority class of the test split | {r['majority_rate']:.1%} | |", "",
        "| class | CAS recall | real recall | test images |", "|---|---|---|---|",
    ]
    for c, rec in r["per_class_recall"].items():
        lines.append(f"| {c} | {rec:.1%} | {r['real_per_class_recall'].get(c, float('nan')):.1%} | "
                     f"{r['support'][c]} |")
    lines += ["", "![confusion matrix of the CAS classifier on the real test split](confusion.png)", "",
              "## Protocol", "",
              "- conditions: " + ", ".join(f"{c} = entry {j}" for c, j in p["conditions"].items())
              + (f"; other condition groups: {p['other_conditions']}" if p["other_conditions"] else ""),
              f"- seeds {p['seeds']}, truncation psi {p['truncation_psi']}",
              f"- validation: {p['validation']}",
              f"- test: {p['test']['path']} ({p['test']['how']} in generated/)",
              f"- real reference: {p['real']['source']}" + (f" ({p['real']['checkpoint']})" if p['real']['checkpoint']
                                                             else ""),
              ]
    if not p["real"]["same_model_and_recipe"]:
        lines.append("- **the real reference used another model or recipe: the gap compares different classifiers**")
    lines += ["", "A CAS near the real accuracy means the generated faces carry what the classifier needs about the "
              "attribute; a CAS near the majority class means they do not. A recipe that overfits a few hundred "
              "generated faces lowers CAS for reasons that are not the generator's, and a weak generator's CAS moves "
              "from one seed to the next: read the gap (same model and recipe on both sides), not the CAS alone.", ""]
    return "\n".join(lines)


def _write(r: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "cas.json", json.dumps(r, indent=1) + "\n")
    atomic_write_text(out / "cas.md", _markdown(r))
    plot_confusion(np.array(r["confusion"]), r["classes"], out / "confusion.png",
                   title=f"CAS {r['protocol']['task']}: trained on generated, tested on real ({r['cas']:.1%})")


# ---------------------------------------------------------------------------- cas


def cas(options: CasOptions, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Classification accuracy score of a conditional generator for one task (see the module doc).

    Writes ``cas.json``, ``cas.md``, ``confusion.png``, ``generated/``, ``cas/`` and ``real/``
    into ``options.outdir`` (new or empty) and returns the ``cas.json`` dict (plus ``outdir``).
    """
    from gan.generate import as_generator

    o = options
    out = Path(o.outdir)
    task, recipe = _check_options(o)
    real = scan_for(o.data, task, recipe)
    dev = pick_device(o.device)
    G = as_generator(o.network, dev)
    plan = _with_archive_mix(condition_plan(G, task, real.classes), o.network)

    task_dir = out / "generated" / task
    task_dir.mkdir(parents=True)
    echo(f"cas: drawing {o.per_class} faces per class ({', '.join(plan.classes)}) -> {task_dir / 'train'}")
    seeds = _generate_tree(G, plan, o, task_dir, dev)
    real_test = _link_test(real, task_dir)
    del G

    echo(f"cas: training {o.model} on the generated faces (recipe {recipe.name}) -> {out / 'cas'}")
    cas_m = train(out / "generated", task, o.model, recipe, out / "cas", device=o.device, weights=o.weights,
                  cache_dir=o.cache_dir, progress=o.progress, echo=o.progress)
    real_m = _real_reference(o, task, recipe, out, echo)

    r = _result(o, task, recipe, plan, seeds, real_test, cas_m, real_m)
    _write(r, out)
    echo(f"cas: {task}: CAS {r['cas']:.1%}, real {r['real_accuracy']:.1%}, gap {r['gap'] * 100:+.1f} points "
         f"(majority class {r['majority_rate']:.1%}); report {out / 'cas.md'}")
    return {**r, "outdir": str(out)}
