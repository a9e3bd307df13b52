"""Scoring generated faces with trained classifiers (the last stage of ``classify``).

:func:`score` (``mtf-classify score``) answers "what does the generator generate?": per
task the class shares the classifier predicts on generated and on reference images, the
same shares corrected for the classifier's errors (black-box shift estimation, Lipton et
al. 2018), their total variation and KL distances, confidence histograms and sample grids;
for a conditional generator the condition-vs-prediction matrix; the memorization and
identity-leak checks; a predictions CSV; and with ``trunc_sweep`` the same shares at several
truncation psi (truncation towards one global mean narrows the demographic mix; towards
class centres, ``trunc_center='class'``, it should keep the mix).

This module only orchestrates: sources -> scored sets -> sections -> files. The images are
scored by :mod:`classify.classifier` (block by block, keeping 64-px thumbnails, so memory
grows with the number of images, not their size); the numbers come from
:mod:`classify.shift`, the checks from :mod:`classify.leak`, the CSV from
:mod:`classify.pseudo_labels`, the figures from :mod:`classify.plots` and the files from
:mod:`classify.report`. Every option is one field of the frozen :class:`ScoreOptions`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from classify import leak, plots, pseudo_labels, report as R, shift
from classify.classifier import (Classifier, ScoredSet, check_classifiers, load_classifier, resolve_recorded,
                                 score_source, score_stream)
from gan.dataset import is_archive
from gan.distributed import pick_device
from gan.util import UserError

if TYPE_CHECKING:
    from gan.generate import ClassCenters

__all__ = ["ScoreOptions", "score", "parse_trunc_sweep", "load_conditioned_generator", "generated_items"]


@dataclass(frozen=True)
class ScoreOptions:
    """Everything :func:`score` is asked to do (the options of ``mtf-classify score``).

    Inputs: ``network`` (a GAN checkpoint, or a module with the Generator interface:
    ``seeds``, else seeds ``0..num-1``, with ``truncation_psi`` towards ``trunc_center``
    (``global``: ``w_avg``; ``class``: each face's class mean w,
    :func:`gan.generate.class_centers`) and, for a conditional G, ``class_name`` or labels
    drawn from the training archive's label mix; ``trunc_sweep``: also score the same seeds
    at each of these psi) or ``images`` (a folder, read recursively, or an archive; ``num``
    samples it); ``classifiers``: best.pt files (or loaded
    :class:`~classify.classifier.Classifier` objects), one per task; ``reference``: real
    images to compare with (default: the GAN's training archive named in its checkpoint;
    required with ``images`` unless only ``predictions`` are wanted); ``reference_num``
    samples it (default: all).
    """

    outdir: str | os.PathLike
    classifiers: Sequence[str | os.PathLike | Classifier]
    # what is scored
    network: Optional[str | os.PathLike | nn.Module] = None
    images: Optional[str | os.PathLike] = None
    num: Optional[int] = None
    seeds: Optional[Sequence[int] | str] = None
    truncation_psi: float = 1.0
    trunc_center: str = "global"
    trunc_sweep: Optional[Sequence[float]] = None
    class_name: Optional[str] = None
    # what it is compared with
    reference: Optional[str | os.PathLike] = None
    reference_num: Optional[int] = None
    # memorization and identity leak (classify.leak)
    heldout: Optional[str | os.PathLike] = None
    strangers: Optional[str | os.PathLike] = None
    memorization: bool = True
    nn_space: str = "auto"
    identity_heldout: Optional[str | os.PathLike] = None
    identity_quantile: float = 0.95
    false_match_rate: float = 0.01
    # predictions.csv (classify.pseudo_labels)
    predictions: Optional[str | os.PathLike] = None
    person_csv: Optional[str | os.PathLike] = None
    person_column: Optional[str] = None
    min_confidence: float = 0.0
    vote: bool = True
    # how
    device: str = "cpu"
    batch: int = 64


def parse_trunc_sweep(spec: str) -> tuple[float, ...]:
    """``'1,0.9,0.7,0.5'`` -> ``(1.0, 0.9, 0.7, 0.5)`` (in the order given; repeats dropped)."""
    from gan.generate import parse_floats

    hint = "pass psi values such as 1,0.9,0.7,0.5"
    values: list[float] = []
    for v in parse_floats(spec, "--trunc-sweep", hint):
        if not 0 <= v <= 2:
            raise UserError(f"--trunc-sweep {spec}: {v:g} is outside [0, 1]; {hint}")
        if v not in values:
            values.append(v)
    return tuple(values)


def _check_options(o: ScoreOptions) -> None:
    """The errors that need no file read: each names the option and the fix."""
    out = Path(o.outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--outdir {out} exists and is not empty; pass a new folder (a report is never "
                        f"written over an earlier one)")
    if (o.network is None) == (o.images is None):
        raise UserError("pass exactly one of --network CKPT (score a generator) or --images DIR (score a folder)")
    if o.network is not None and not isinstance(o.network, nn.Module) and not Path(o.network).is_file():
        if Path(o.network).suffix.lower() == ".pkl":
            from gan.published import load_published_pickle

            load_published_pickle(o.network)  # raises MissingWeights: where to get it (exit 2)
        raise UserError(f"--network {o.network}: no such file; pass a checkpoint-*.pt, a file of `mtf-gan import` "
                        f"or a published .pkl")
    if o.predictions is not None and Path(o.predictions).exists():
        raise UserError(f"--predictions {o.predictions} exists; pass a new file name (nothing is overwritten)")
    if o.nn_space not in ("auto", "face", "pixels"):
        raise UserError(f"--nn-space {o.nn_space}: choose auto, face or pixels")
    if o.batch < 1:
        raise UserError(f"--batch {o.batch}: pass a positive batch size")
    if o.num is not None and o.num < 1:
        raise UserError(f"--num {o.num}: pass a positive number of images")
    if o.class_name is not None and o.network is None:
        raise UserError("--class needs --network (it picks the condition of a conditional generator)")
    if not 0 <= o.truncation_psi <= 2:
        raise UserError(f"--trunc {o.truncation_psi}: use a value in [0, 1] (1 = no truncation)")
    if o.trunc_center not in ("global", "class"):
        raise UserError(f"--trunc-center {o.trunc_center}: choose global or class")
    if o.network is None and (o.trunc_center != "global" or o.trunc_sweep):
        raise UserError("--trunc-center and --trunc-sweep need --network (they choose how faces are drawn)")
    if o.trunc_sweep is not None:
        bad = [p for p in o.trunc_sweep if not 0 <= p <= 2]
        if not o.trunc_sweep or bad:
            raise UserError(f"--trunc-sweep {','.join(map(str, o.trunc_sweep))}: give psi values in [0, 1], "
                            f"e.g. 1,0.9,0.7,0.5")


# ---------------------------------------------------------------------------- the generated side


def _gan_training_archive(network: str | os.PathLike | nn.Module) -> Optional[Path]:
    """The training archive named in a GAN checkpoint's config (``data.path``), found here, or None
    (also for a published network or a module: their training sets are not ours to find)."""
    from gan.checkpoint import load_checkpoint

    if isinstance(network, nn.Module) or Path(network).suffix.lower() == ".pkl":
        return None
    state = load_checkpoint(network)
    path = (state.get("config") or {}).get("data", {}).get("path")
    return resolve_recorded(path, Path(network).parent) if path else None


def _condition_labels(G: nn.Module, n: int, archives: Sequence[Optional[Path]]) -> tuple[torch.Tensor, str]:
    """``[n, c_dim]`` conditions for a conditional G drawn as ``mtf-gan metrics`` draws them:
    labels of real images of the first labelled archive of ``archives`` picked at random
    (so the generated and real class mixes agree), else uniform over the classes."""
    from gan.generate import fake_labels, real_labels

    for a in archives:
        if a is not None and a.exists() and is_archive(a):
            labels = real_labels(a)
            if labels is not None and labels.shape[1] == G.c_dim:
                return fake_labels(labels, n, seed=0), f"the label mix of {a}"
    rng = np.random.default_rng(0)
    names = list(getattr(G, "class_names", None) or [])
    groups: dict[str, list[int]] = {}
    for i in range(G.c_dim):
        col = names[i].split("=", 1)[0] if i < len(names) and "=" in names[i] else ""
        groups.setdefault(col, []).append(i)
    c = torch.zeros([n, G.c_dim])
    for members in groups.values():
        pick = rng.integers(0, len(members), size=n)
        c[torch.arange(n), torch.as_tensor(np.asarray(members)[pick])] = 1.0
    return c, "uniform over the classes (no labelled training archive found)"


def load_conditioned_generator(network: str | os.PathLike | nn.Module, n: int, class_name: Optional[str] = None,
                               device: str | torch.device = "cpu",
                               label_archives: Sequence[Optional[Path]] = ()) -> tuple[nn.Module, torch.Tensor, str]:
    """``(G, labels [n, c_dim], how the labels were chosen)``. ``class_name`` fixes the
    class of a conditional G (unknown names are errors that list the valid ones);
    without it each image gets a label from :func:`_condition_labels`."""
    from gan.generate import as_generator, class_vector

    G = as_generator(network, device)
    if G.c_dim == 0 or class_name is not None:
        c = class_vector(G, class_name)  # [1, c_dim]; errors list the valid classes
        return G, c.expand(n, -1).clone(), ("unconditional" if G.c_dim == 0 else f"all --class {class_name}")
    labels, how = _condition_labels(G, n, label_archives)
    return G, labels, how


def generated_items(G: nn.Module, seeds: Sequence[int], labels: torch.Tensor, truncation_psi: float = 1.0,
                    centers: Optional["ClassCenters"] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(seedNNNN, uint8 [3, H, W])`` per seed, image ``i`` drawn with ``labels[i]``,
    exactly as ``mtf-gan generate --seeds`` draws it (the same z and noise per seed);
    truncated towards ``w_avg``, or towards the class centres ``centers``
    (:func:`gan.generate.class_centers` of ``labels``)."""
    from gan.generate import generate_images

    for i, s in enumerate(seeds):
        yield f"seed{s:04d}", generate_images(G, [s], labels[i:i + 1], truncation_psi, trunc_center=centers)[0].cpu()


def _seed_list(o: ScoreOptions) -> list[int]:
    from gan.generate import parse_seeds

    if isinstance(o.seeds, str):
        return parse_seeds(o.seeds)
    return [int(s) for s in o.seeds] if o.seeds is not None else list(range(o.num if o.num is not None else 1000))


def _network_name(network: str | os.PathLike | nn.Module) -> str:
    return f"<{type(network).__name__} module>" if isinstance(network, nn.Module) else str(network)


def _score_generator(o: ScoreOptions, clfs: dict[str, Classifier], dev: torch.device,
                     label_archives: Sequence[Optional[Path]], echo: Callable[[str], Any]
                     ) -> tuple[ScoredSet, nn.Module, dict[str, Any], Optional["ClassCenters"]]:
    """The generated side with ``--network``: ``(scored set with its labels, G, report entry,
    the class centres or None)``."""
    from gan.generate import describe_center, truncation_centers

    seed_list = _seed_list(o)
    G, labels, how = load_conditioned_generator(o.network, len(seed_list), o.class_name, dev, label_archives)
    centers = truncation_centers(G, o.trunc_center, labels)  # class centres of every label drawn
    echo(f"score: generating {len(seed_list)} images from {_network_name(o.network)} ({how})")
    if centers is not None:
        echo(f"score: truncation towards each face's class mean w ({centers.num} z per class, torch seed "
             f"{centers.seed})")
    gen = score_stream(generated_items(G, seed_list, labels, o.truncation_psi, centers), clfs, o.batch,
                       what="generated images", pixels=o.memorization)  # pixels: memorization's fallback space
    gen.labels = labels
    span = f"{seed_list[0]}-{seed_list[-1]}" if seed_list == list(range(seed_list[0], seed_list[-1] + 1)) else \
        ",".join(map(str, seed_list[:8])) + ("..." if len(seed_list) > 8 else "")
    info = {"kind": "network", "network": _network_name(o.network), "seeds": span,
            "truncation_psi": o.truncation_psi, **describe_center(centers), "class": o.class_name,
            "conditions": how, "c_dim": int(G.c_dim),
            "class_names": list(getattr(G, "class_names", None) or []) or None,
            "kimg": getattr(G, "cur_nimg", 0) / 1000}
    return gen, G, info, centers


# ---------------------------------------------------------------------------- sections


def _task_sections(report: dict[str, Any], clfs: dict[str, Classifier], gen: ScoredSet, ref: Optional[ScoredSet],
                   out: Path) -> dict[str, Optional[np.ndarray]]:
    """Per task the shares, BBSE, TV/KL, its confidence and sample figures, then the
    attribute bars; returns the reference's true labels per task (or None)."""
    ref_true: dict[str, Optional[np.ndarray]] = {}
    for task, clf in clfs.items():
        ref_true[task] = shift.reference_labels(ref, task, clf.classes) if ref is not None else None
        t = shift.task_report(clf, gen.probs[task], ref.probs[task] if ref is not None else None, ref_true[task])
        t["files"] = {"confidence": f"confidence_{task}.png", "samples": f"samples_{task}.png"}
        plots.plot_confidence(t, gen.probs[task].max(1), ref.probs[task].max(1) if ref is not None else np.zeros(0),
                              out / t["files"]["confidence"])
        plots.plot_samples(t, gen.thumbs, gen.probs[task], out / t["files"]["samples"])
        report["tasks"][task] = t
    plots.plot_attributes(report["tasks"], out / "attributes.png")
    return ref_true


def _consistency_section(report: dict[str, Any], G: nn.Module, clfs: dict[str, Classifier], gen: ScoredSet,
                         ref: Optional[ScoredSet], ref_true: dict[str, Optional[np.ndarray]], out: Path) -> None:
    """Conditional consistency with the first classifier whose classes are G's conditions."""
    for task, clf in clfs.items():
        pairs = shift.condition_groups(G, clf)
        if pairs:
            c = shift.consistency_report(G, gen.labels, clf, gen.probs[task], pairs, ref_true[task],
                                         ref.probs[task] if ref is not None else None)
            c["file"] = f"consistency_{task}.png"
            plots.plot_consistency(c, out / c["file"])
            report["consistency"] = c
            return
    report["consistency_skipped"] = (f"the generator's conditions ({', '.join(G.class_names or [])}) are not "
                                     f"the classes of any classifier given ({', '.join(clfs)})")


def _leak_sections(report: dict[str, Any], o: ScoreOptions, clfs: dict[str, Classifier], gen: ScoredSet,
                   ref: Optional[ScoredSet], out: Path) -> None:
    """Memorization (with a reference) and identity leak (with a face-recognition classifier)."""
    if o.memorization and ref is not None:
        held = score_source(o.heldout, clfs, None, o.batch, option="--heldout") if o.heldout is not None else None
        role = "training archive" if report["reference"]["is_training_archive"] else "reference"
        report["memorization"] = leak.memorization_section(gen, ref, held, out, role, space=o.nn_space)
    if "face_recognition" in clfs:
        fr = clfs["face_recognition"]
        strangers = (score_source(o.strangers, {"face_recognition": fr}, None, o.batch, option="--strangers")
                     if o.strangers is not None else None)
        report["identity_leak"], why = leak.identity_leak_section(fr, gen, out, o.batch, o.identity_quantile,
                                                                  o.false_match_rate, strangers, o.identity_heldout)
        if why:
            report["identity_leak_skipped"] = why


def _sweep_section(report: dict[str, Any], o: ScoreOptions, G: nn.Module, gen: ScoredSet,
                   centers: Optional["ClassCenters"], clfs: dict[str, Classifier], ref: Optional[ScoredSet],
                   ref_true: dict[str, Optional[np.ndarray]], out: Path) -> None:
    """``truncation_sweep``: the same seeds and conditions drawn at each psi of ``o.trunc_sweep``
    (towards the same centre as the main draw), per task the raw and BBSE-corrected shares
    and their TV to the reference at each, and ``truncation.png``."""
    from tqdm import tqdm

    from gan.generate import describe_center

    seed_list, psis = _seed_list(o), [float(p) for p in o.trunc_sweep]
    todo = [p for p in psis if p != o.truncation_psi]  # the main draw is reused
    bar = tqdm(total=len(todo) * len(seed_list), desc="truncation sweep", unit="img", disable=None)
    probs: dict[float, dict[str, np.ndarray]] = {o.truncation_psi: gen.probs}
    for psi in todo:
        bar.set_postfix_str(f"psi {psi:g}")
        scored = score_stream(generated_items(G, seed_list, gen.labels, psi, centers), clfs, o.batch,
                              what=f"generated images at psi {psi:g}", pixels=False, thumbs=False, features=False,
                              on_block=bar.update)
        probs[psi] = scored.probs
    bar.close()
    tasks: dict[str, Any] = {}
    for task, clf in clfs.items():
        rows = [shift.task_report(clf, probs[p][task], ref.probs[task] if ref is not None else None, ref_true[task])
                for p in psis]
        r0 = rows[0]
        tasks[task] = {
            "classes": list(clf.classes),
            "share": [r["generated"]["share"] for r in rows],
            "corrected": [r["generated"]["corrected"] for r in rows] if r0["generated"]["corrected"] else None,
            "tv": [r["tv"] for r in rows] if r0["tv"] is not None else None,
            "tv_corrected": [r["tv_corrected"] for r in rows] if r0["tv_corrected"] is not None else None,
            "reference_share": r0["reference"]["share"] if r0["reference"] else None,
            "reference_corrected": r0["reference"]["corrected"] if r0["reference"] else None,
        }
    report["truncation_sweep"] = {"psi": psis, **describe_center(centers), "num": len(seed_list),
                                  "file": "truncation.png", "tasks": tasks}
    plots.plot_truncation(report["truncation_sweep"], out / "truncation.png")


# ---------------------------------------------------------------------------- score


def score(options: ScoreOptions, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Score generated (or any) faces with trained classifiers and write the report.

    Writes into ``options.outdir`` (new or empty): ``report.json``, ``report.md``,
    ``attributes.png``, per task ``confidence_<task>.png`` and ``samples_<task>.png``,
    ``consistency_<task>.png`` for a conditional G, ``closest_pairs.png``
    (memorization), ``identity_leaks.png`` (with a face-recognition classifier),
    ``truncation.png`` (with ``trunc_sweep``) and ``options.predictions`` when asked.
    Progress and the summary go to ``echo``.
    Returns the report dict (plus ``outdir``).
    """
    o = options
    out = Path(o.outdir)
    _check_options(o)
    dev = pick_device(o.device)
    clfs = check_classifiers([c if isinstance(c, Classifier) else load_classifier(c, dev) for c in o.classifiers])

    # The reference, and what the generator was trained on.
    train_archive = _gan_training_archive(o.network) if o.network is not None else None
    reference = o.reference
    if reference is None and o.network is not None:
        if train_archive is None:
            raise UserError(f"--network {_network_name(o.network)}: its config names no training archive that exists "
                            f"here (data.path); pass --reference ZIP|DIR with real images to compare with")
        reference = train_archive
    if reference is None and o.predictions is None:
        raise UserError("--images needs --reference ZIP|DIR: real images to compare the attribute shares with "
                        "(for pseudo-labels only, pass --predictions FILE.csv)")

    echo(f"score: classifiers for {', '.join(clfs)}; device {dev}")
    G, centers = None, None
    if o.network is not None:
        label_archives = [train_archive, Path(reference) if reference else None]
        gen, G, gen_info, centers = _score_generator(o, clfs, dev, label_archives, echo)
    else:
        echo(f"score: reading {o.images}")
        gen = score_source(o.images, clfs, o.num, o.batch, option="--images")
        gen_info = {"kind": "images", "images": str(o.images)}
    gen_info.update(num=len(gen), resolution=gen.resolution)
    ref = None
    if reference is not None:
        echo(f"score: reading the reference {reference}")
        ref = score_source(reference, clfs, o.reference_num, o.batch, option="--reference")

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "version": R.REPORT_VERSION, "generated": gen_info,
        "reference": None if ref is None else {"path": str(reference), "num": len(ref), "resolution": ref.resolution,
                                                "is_training_archive": train_archive is not None and
                                                Path(reference).resolve() == Path(train_archive).resolve()},
        "tasks": {}, "consistency": None, "memorization": None, "identity_leak": None, "predictions": None,
        "truncation_sweep": None,
    }
    ref_true = _task_sections(report, clfs, gen, ref, out)
    if o.trunc_sweep:
        _sweep_section(report, o, G, gen, centers, clfs, ref, ref_true, out)
    if G is not None and G.c_dim > 0:
        _consistency_section(report, G, clfs, gen, ref, ref_true, out)
    _leak_sections(report, o, clfs, gen, ref, out)
    if o.predictions is not None:  # one row per scored image
        report["predictions"] = pseudo_labels.scored_predictions(
            gen, list(clfs.values()), Path(o.predictions), o.min_confidence, o.person_csv, o.person_column,
            o.images, o.vote)

    R.write_report(report, out)
    for line in R.summary_lines(report):
        echo(line)
    echo(f"score: report in {out / 'report.md'} (numbers: report.json; bars: {out / 'attributes.png'})")
    report["outdir"] = str(out)
    return report
