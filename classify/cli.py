"""``mtf-classify``: a thin click shell over :mod:`classify.train`, :mod:`classify.evaluate`,
:mod:`classify.baselines`, :mod:`classify.score` and :mod:`classify.cas`.

Each command parses options, calls one plain function and prints where the results went.
User-fixable errors print without a traceback through :func:`gan.cli.friendly_errors`
(exit 1; 2 for bad options and for missing ImageNet weights, :class:`gan.util.MissingWeights`,
which this tool never downloads).
"""

from __future__ import annotations

from pathlib import Path

import click

from gan.cli import friendly_errors
from gan.util import ensure_venv_bin_on_path


def _model_names() -> list[str]:
    from classify.models import MODELS

    return list(MODELS)


_DATA = click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Root of the curated MTF trees (<task>/{train,val,test}/<class>/*) or one task folder.")
_DEVICE = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
_CACHE = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                      help="Where decoded images are cached [default: $MTF_CACHE_DIR/classify; MTF_CACHE_DIR "
                           "defaults to ~/.cache/mtf-faces].")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a recipe key, e.g. --set train.epochs=20 (repeatable; unknown keys are errors).")
_RECIPE = click.option("--recipe", default=None, metavar="NAME|FILE.yaml",
                       help="Preset (notebook, improved, demo: configs/classify/) or a YAML file [default: notebook].")
_WEIGHTS = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                        help="ImageNet weights file for --model [default: torch's cache, never downloaded].")
_PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
_DIST_TIMEOUT = click.option(
    "--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
    help="Under torchrun: seconds a collective may wait for the other processes before the job stops.")
_THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="CPU threads for torch (torch.set_num_threads) [default: torch's choice]. "
                             "1 is often fastest for the tiny demo model on a busy machine.")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtf-faces")
def main() -> None:
    """mtf-classify: classifier baselines on the curated MTF set (gender, race, age, face recognition)."""
    ensure_venv_bin_on_path()


@main.command("train")
@_DATA
@click.option("--task", required=True, help="gender, race, age or face_recognition (folder spellings accepted).")
@click.option("--model", required=True, type=click.Choice(_model_names()), help="Registry model.")
@_RECIPE
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="Run folder to create (must be new or empty unless --resume).")
@_SET
@_DEVICE
@click.option("--resume", is_flag=True, help="Continue the run in --outdir from its last.pt.")
@_WEIGHTS
@_CACHE
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe and exit.")
@_PROGRESS
@_THREADS
@_DIST_TIMEOUT
@friendly_errors
def train_cmd(data: str, task: str, model: str, recipe: str | None, outdir: str, overrides: tuple[str, ...],
              device: str, resume: bool, weights: str | None, cache_dir: str | None, dry_run: bool,
              progress: bool, threads: int | None, dist_timeout: float) -> None:
    """Train MODEL on one TASK with a recipe; test the best checkpoint and write the metrics.

    Several GPUs: `torchrun --standalone --nproc_per_node=N $(which mtf-classify) train ...`
    (DistributedDataParallel; the recipe's batch_size stays the global batch; rank 0 writes files).
    """
    from classify.recipe import load_recipe
    from classify.train import train
    from gan import distributed as dist
    from gan.config import dump_config

    rec = load_recipe(recipe or "notebook", overrides)
    if dry_run:
        click.echo(dump_config(rec), nl=False)
        return
    _set_threads(threads)
    m = train(data, task, model, rec, outdir, device=device, resume=resume, weights=weights,
              cache_dir=cache_dir, progress=progress, dist_timeout=dist_timeout)
    if dist.env_world()[0] != 0:
        return
    lo, hi = m["accuracy_ci95"]
    click.echo(f"{m['task']} / {m['model']}: test accuracy {m['accuracy']:.2%} (95% CI {lo:.1%}-{hi:.1%}), "
               f"macro F1 {m['macro_f1']:.3f}; run folder {m['run_dir']}")


@main.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="best.pt or last.pt of a run.")
@_DATA
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--outdir", type=click.Path(file_okay=False), default=None,
              help="Where to write metrics.json, per_class.csv, confusion.png [default: the checkpoint's folder].")
@_DEVICE
@_CACHE
@_THREADS
@friendly_errors
def evaluate_cmd(checkpoint: str, data: str, split: str, outdir: str | None, device: str,
                 cache_dir: str | None, threads: int | None) -> None:
    """Test a trained checkpoint on a split of a task tree (classes matched through the aliases)."""
    _set_threads(threads)
    from classify.evaluate import evaluate, format_metrics

    m = evaluate(checkpoint, data, outdir=outdir, split=split, device=device, cache_dir=cache_dir,
                 log=click.echo)
    click.echo(f"{m['task']} / {m['model']} ({split}): " + format_metrics(m))


@main.command("baselines")
@_DATA
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="Grid folder: <outdir>/<task>/<model>/ runs, results.csv, results.md.")
@click.option("--models", default=None, metavar="M1,M2",
              help="Comma-separated registry models [default: convnext_base,resnet50,vgg16,efficientnet_b7,"
                   "mobilenet_v3_large].")
@click.option("--tasks", default=None, metavar="T1,T2",
              help="Comma-separated tasks [default: gender,race,age,face_recognition].")
@_RECIPE
@_SET
@_DEVICE
@_CACHE
@_PROGRESS
@_THREADS
@_DIST_TIMEOUT
@friendly_errors
def baselines_cmd(data: str, outdir: str, models: str | None, tasks: str | None, recipe: str | None,
                  overrides: tuple[str, ...], device: str, cache_dir: str | None, progress: bool,
                  threads: int | None, dist_timeout: float) -> None:
    """Train and test the models x tasks grid (finished cells are skipped); write results.csv/.md."""
    from classify.dataset import TASKS
    from classify.models import MODELS, PAPER_MODELS
    from classify.baselines import baselines

    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else list(PAPER_MODELS)
    bad = [m for m in model_list if m not in MODELS]
    if bad:
        raise click.BadParameter(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}",
                                 param_hint="--models")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(TASKS)
    _set_threads(threads)
    from gan import distributed as dist

    baselines(data, outdir, model_list, task_list, recipe or "notebook", overrides, device=device,
              cache_dir=cache_dir, progress=progress, echo=click.echo, dist_timeout=dist_timeout)
    if dist.env_world()[0] == 0:
        click.echo(Path(outdir, "results.md").read_text(encoding="utf-8").rstrip())


@main.command("models")
def models_cmd() -> None:
    """List the registry: name, ImageNet weights file, description."""
    from classify.models import MODELS, weights_file

    for name, spec in MODELS.items():
        wf = weights_file(name)
        have = "-" if wf is None else (f"{wf.name} (cached)" if wf.is_file() else f"{wf.name} (not cached)")
        click.echo(f"{name:<20} {have:<45} {spec.description}")


@main.command("score")
@click.option("--network", type=click.Path(dir_okay=False), default=None,
              help="GAN checkpoint (checkpoint-*.pt of mtf-gan train, a file of mtf-gan import, or a published "
                   "StyleGAN2-ADA .pkl, read without executing it) whose G_ema draws the faces to score.")
@click.option("--images", type=click.Path(exists=True), default=None,
              help="Instead of --network: a folder of images (read recursively) or a prepared archive.")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Images to draw (seeds 0..num-1) [default: 1000], or to sample from --images [default: all].")
@click.option("--seeds", default=None, metavar="SPEC", help="Seeds to draw instead of --num, e.g. 0-499 or 1,5,10-12.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True,
              help="Truncation psi (1 = none; what the generator's distribution really is).")
@click.option("--trunc-center", type=click.Choice(["global", "class"]), default="global", show_default=True,
              help="Truncate towards w_avg (global, as published) or, for a conditional G, towards each face's class "
                   "mean w (class; 1000 seeded z per class, recorded in report.json).")
@click.option("--trunc-sweep", default=None, metavar="PSI,PSI,...",
              help="Also score the same seeds at each psi, e.g. 1,0.9,0.7,0.5: per task the shares (raw and BBSE) "
                   "and the TV to the reference at each (report.json truncation_sweep, report.md, truncation.png).")
@click.option("--class", "class_name", default=None, metavar="NAME|INDEX",
              help="Conditional G: draw every face with this class [default: classes drawn with the training "
                   "archive's label mix, which also gives the conditional-consistency matrix].")
@click.option("--classifier", "classifiers", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="best.pt of mtf-classify train; repeat, one per task (gender, race, age, face_recognition).")
@click.option("--reference", type=click.Path(exists=True), default=None,
              help="Real images to compare with: archive or folder [default: the GAN's training archive named in "
                   "its checkpoint; required with --images].")
@click.option("--reference-num", type=click.IntRange(min=1), default=None,
              help="Sample this many reference images (seeded) [default: all].")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="New or empty folder for report.json, report.md, attributes.png and the PNG grids.")
@click.option("--heldout", type=click.Path(exists=True), default=None,
              help="Memorization baseline: real images NOT in the training archive [default: 10% of the reference "
                   "left out of the search set].")
@click.option("--no-memorization", is_flag=True, help="Skip the nearest-neighbour (memorization) check.")
@click.option("--nn-space", type=click.Choice(["auto", "face", "pixels"]), default="auto", show_default=True,
              help="Memorization feature space: the face-recognition classifier's penultimate features (auto, when "
                   "one is given) or 16-px pixels.")
@click.option("--identity-heldout", type=click.Path(exists=True, file_okay=False), default=None,
              help="<person>/* photos of the face-recognition classifier's people it did not train on, to calibrate "
                   "the identity-leak threshold [default: the val (else test) split of its training tree].")
@click.option("--strangers", type=click.Path(exists=True), default=None,
              help="Identity leak: faces of people the face-recognition classifier does not know; the threshold "
                   "is raised until at most --false-match-rate of them are flagged.")
@click.option("--identity-quantile", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Identity leak: the threshold is the confidence this share of correct "
                                      "held-out predictions reach.")
@click.option("--false-match-rate", type=click.FloatRange(0, 1, max_open=True), default=0.01, show_default=True,
              help="Identity leak with --strangers: the largest share of strangers flagged.")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help="Also write predictions.csv (one row per scored image, per-person vote) for "
                   "`mtf-gan prepare --labels FILE --label-column gender_vote`.")
@click.option("--person-csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with a 'file' column and --person-column [default: the person is the first folder level; "
                   "with --person-column alone, --images' attributes.csv].")
@click.option("--person-column", default=None, help="Column of --person-csv naming the person of each file.")
@click.option("--vote/--no-vote", default=True, show_default=True,
              help="Add per-person majority votes (person, <task>_vote, <task>_agreement) to --predictions.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Predictions below this confidence are dropped from predictions.csv and the vote (counted).")
@_DEVICE
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="Classifier batch size.")
@_THREADS
@friendly_errors
def score_cmd(network: str | None, images: str | None, num: int | None, seeds: str | None, truncation_psi: float,
              trunc_center: str, trunc_sweep: str | None, class_name: str | None, classifiers: tuple[str, ...],
              reference: str | None, reference_num: int | None,
              outdir: str, heldout: str | None, no_memorization: bool, nn_space: str, identity_heldout: str | None,
              strangers: str | None, identity_quantile: float, false_match_rate: float, predictions: str | None,
              person_csv: str | None, person_column: str | None, vote: bool, min_confidence: float, device: str,
              batch: int, threads: int | None) -> None:
    """Score generated faces by attribute: shares vs the reference, BBSE, consistency, leaks.

    \b
    mtf-classify score --network run/checkpoint-000400.pt --num 1000 \\
        --classifier cls/gender/tiny_cnn/best.pt --classifier cls/race/tiny_cnn/best.pt --outdir report
    """
    from classify.score import ScoreOptions, parse_trunc_sweep, score
    from gan.generate import parse_seeds

    if (network is None) == (images is None):
        raise click.UsageError("pass exactly one of --network CKPT or --images DIR")
    if seeds is not None and images is not None:
        raise click.BadParameter("--seeds picks generator seeds; with --images use --num", param_hint="--seeds")
    _set_threads(threads)
    options = ScoreOptions(
        outdir=outdir, classifiers=tuple(classifiers), network=network, images=images, num=num,
        seeds=parse_seeds(seeds) if seeds is not None else None, truncation_psi=truncation_psi,
        trunc_center=trunc_center, trunc_sweep=parse_trunc_sweep(trunc_sweep) if trunc_sweep is not None else None,
        class_name=class_name, reference=reference, reference_num=reference_num, heldout=heldout,
        strangers=strangers, memorization=not no_memorization, nn_space=nn_space, identity_heldout=identity_heldout,
        identity_quantile=identity_quantile, false_match_rate=false_match_rate, predictions=predictions,
        person_csv=person_csv, person_column=person_column, min_confidence=min_confidence, vote=vote,
        device=device, batch=batch)
    score(options, echo=click.echo)


_NETWORK = click.option("--network", required=True, type=click.Path(dir_okay=False),
                        help="GAN checkpoint (checkpoint-*.pt of mtf-gan train, a file of mtf-gan import, or a "
                             "published StyleGAN2-ADA .pkl) whose G_ema is used.")


_BATCH = click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
                      help="Classifier batch size.")


def _names(spec: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in spec.split(",") if s.strip()) if spec else ()


@main.command("directions")
@_NETWORK
@click.option("--classifier", "classifiers", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="best.pt of mtf-classify train for gender, race or age; repeat, one per task (a task the "
                   "generator was not conditioned on is fine).")
@click.option("--num", type=click.IntRange(min=20), default=2000, show_default=True,
              help="Faces to sample, render and classify (seeds --seed .. --seed+num-1); 20% are held out to "
                   "test the boundaries.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="First seed.")
@click.option("--orthogonal-to", "orthogonal_to", default=None, metavar="NAME,NAME",
              help="Conditional directions: project every other task's direction orthogonal to these "
                   "directions or tasks (e.g. race,gender; Gram-Schmidt), recorded in directions.pt.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of the faces held out for the boundary accuracy.")
@click.option("--reference", type=click.Path(exists=True), default=None,
              help="Conditional G: a prepared archive whose label mix the classes are drawn with [default: the "
                   "GAN's training archive when found, else uniform over the classes].")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="New or empty folder for directions.pt, directions.md and cosines.png.")
@_DEVICE
@_BATCH
@_PROGRESS
@_THREADS
@friendly_errors
def directions_cmd(network: str, classifiers: tuple[str, ...], num: int, seed: int, orthogonal_to: str | None,
                   test_fraction: float, reference: str | None, outdir: str, device: str, batch: int,
                   progress: bool, threads: int | None) -> None:
    """Fit attribute directions in W (InterFaceGAN): one boundary per binary task, one per class
    of a multi-class task, on faces the classifiers label.

    \b
    mtf-classify directions --network run/checkpoint-000400.pt --num 4000 \\
        --classifier cls/gender/best.pt --classifier cls/age/best.pt --outdir dirs
    """
    from classify.directions import DirectionsOptions, directions

    _set_threads(threads)
    directions(DirectionsOptions(network=network, classifiers=classifiers, outdir=outdir, num=num, seed=seed,
                                 orthogonal_to=_names(orthogonal_to), test_fraction=test_fraction,
                                 reference=reference, device=device, batch=batch, progress=progress),
               echo=click.echo)


def _strengths(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    from classify.edit import parse_strengths
    from gan.util import UserError

    try:
        return parse_strengths(value)
    except UserError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], ctx=ctx, param=param) from None


@main.command("edit")
@_NETWORK
@click.option("--directions", "directions_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="directions.pt of mtf-classify directions, made for this --network.")
@click.option("--attribute", required=True, metavar="NAME",
              help="Direction to move along: age, gender, race=White, ... (see directions.md).")
@click.option("--strengths", default="-3,-1.5,0,1.5,3", show_default=True, callback=_strengths,
              metavar="S,S,...", help="Strengths in units of the attribute's w_std (the columns of the grid); "
                                     "write --strengths=-3,0,3 (with '=') when the first is negative.")
@click.option("--seeds", default="0-7", show_default=True, metavar="SPEC", help="Faces (the rows), e.g. 0-7.")
@click.option("--orthogonal-to", "orthogonal_to", default=None, metavar="NAME,NAME",
              help="Conditional edit: project the direction orthogonal to these directions or tasks of the file.")
@click.option("--classifier", "classifiers", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="best.pt for gender, race or age (repeatable): edit.json and edit.png get each class's mean "
                   "probability per strength.")
@click.option("--class", "class_name", default=None, metavar="NAME|INDEX",
              help="Conditional G: draw every face with this class [default: the classes drawn as directions "
                   "draws them].")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="New or empty folder for grid.png, edit.json and edit.png.")
@click.option("--video", type=click.Path(dir_okay=False), default=None,
              help="Also write a sweep from -max to +max strength: .mp4 (H.264) or .gif; must not exist.")
@click.option("--frames", type=click.IntRange(min=2), default=60, show_default=True, help="Frames of --video.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Frame rate of --video.")
@_DEVICE
@_BATCH
@_PROGRESS
@_THREADS
@friendly_errors
def edit_cmd(network: str, directions_file: str, attribute: str, strengths: tuple[float, ...], seeds: str,
             orthogonal_to: str | None, classifiers: tuple[str, ...], class_name: str | None, outdir: str,
             video: str | None, frames: int, fps: float, device: str, batch: int, progress: bool,
             threads: int | None) -> None:
    """Move faces along an attribute direction: a grid (rows seeds, columns strengths), and with
    classifiers how each class's probability follows.

    \b
    mtf-classify edit --network run/checkpoint-000400.pt --directions dirs/directions.pt --attribute age \\
        --strengths=-3,-1.5,0,1.5,3 --seeds 0-7 --classifier cls/age/best.pt --outdir edit-age --video age.mp4
    """
    from classify.edit import EditOptions, edit
    from gan.generate import parse_seeds

    _set_threads(threads)
    edit(EditOptions(network=network, directions=directions_file, attribute=attribute, outdir=outdir,
                     strengths=strengths, seeds=parse_seeds(seeds), orthogonal_to=_names(orthogonal_to),
                     classifiers=classifiers, class_name=class_name, video=video, frames=frames, fps=fps,
                     device=device, batch=batch, progress=progress), echo=click.echo)


@main.command("cas")
@click.option("--network", required=True, type=click.Path(dir_okay=False),
              help="Conditional GAN checkpoint (checkpoint-*.pt, a file of mtf-gan import or a published .pkl) "
                   "whose G_ema draws the training faces.")
@_DATA
@click.option("--task", required=True,
              help="The attribute the generator is conditioned on: gender, race, age or face_recognition.")
@click.option("--model", required=True, type=click.Choice(_model_names()), help="Registry model to train.")
@_RECIPE
@_SET
@click.option("--per-class", type=click.IntRange(min=2), default=500, show_default=True,
              help="Generated faces per class (the validation split is carved from them).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="First seed: class k draws seeds SEED + k * PER_CLASS onwards.")
@click.option("--trunc", "truncation_psi", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Truncation psi (1 = none: the generator's real distribution).")
@click.option("--real-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="best.pt of the same model and recipe trained on the real train split [default: train it here].")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="New or empty folder for cas.json, cas.md, confusion.png, generated/, cas/ and real/.")
@_DEVICE
@_WEIGHTS
@_CACHE
@_PROGRESS
@_THREADS
@friendly_errors
def cas_cmd(network: str, data: str, task: str, model: str, recipe: str | None, overrides: tuple[str, ...],
            per_class: int, seed: int, truncation_psi: float, real_checkpoint: str | None, outdir: str, device: str,
            weights: str | None, cache_dir: str | None, progress: bool, threads: int | None) -> None:
    """Classification accuracy score: train on generated faces, test on the real test split.

    \b
    mtf-classify cas --network run/checkpoint-000400.pt --data MTF-curated --task gender \\
        --model resnet50 --recipe improved --per-class 1000 --outdir cas-gender
    """
    from classify.cas import CasOptions, cas

    _set_threads(threads)
    cas(CasOptions(network=network, data=data, task=task, model=model, outdir=outdir, recipe=recipe or "notebook",
                   overrides=overrides, per_class=per_class, seed=seed, truncation_psi=truncation_psi,
                   real_checkpoint=real_checkpoint, device=device, weights=weights, cache_dir=cache_dir,
                   progress=progress), echo=click.echo)


if __name__ == "__main__":
    main()
