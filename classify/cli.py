"""``mtf-classify``: a thin click shell over :mod:`classify.train`, :mod:`classify.evaluate`,
:mod:`classify.baselines` and :mod:`classify.score`.

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
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="ImageNet weights file for --model [default: torch's cache, never downloaded].")
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
              class_name: str | None, classifiers: tuple[str, ...], reference: str | None, reference_num: int | None,
              outdir: str, heldout: str | None, no_memorization: bool, nn_space: str, identity_heldout: str | None,
              strangers: str | None, identity_quantile: float, false_match_rate: float, predictions: str | None,
              person_csv: str | None, person_column: str | None, vote: bool, min_confidence: float, device: str,
              batch: int, threads: int | None) -> None:
    """Score generated faces by attribute: shares vs the reference, BBSE, consistency, leaks.

    \b
    mtf-classify score --network run/checkpoint-000400.pt --num 1000 \\
        --classifier cls/gender/tiny_cnn/best.pt --classifier cls/race/tiny_cnn/best.pt --outdir report
    """
    from classify.score import ScoreOptions, score
    from gan.generate import parse_seeds

    if (network is None) == (images is None):
        raise click.UsageError("pass exactly one of --network CKPT or --images DIR")
    if seeds is not None and images is not None:
        raise click.BadParameter("--seeds picks generator seeds; with --images use --num", param_hint="--seeds")
    _set_threads(threads)
    options = ScoreOptions(
        outdir=outdir, classifiers=tuple(classifiers), network=network, images=images, num=num,
        seeds=parse_seeds(seeds) if seeds is not None else None, truncation_psi=truncation_psi,
        class_name=class_name, reference=reference, reference_num=reference_num, heldout=heldout,
        strangers=strangers, memorization=not no_memorization, nn_space=nn_space, identity_heldout=identity_heldout,
        identity_quantile=identity_quantile, false_match_rate=false_match_rate, predictions=predictions,
        person_csv=person_csv, person_column=person_column, min_confidence=min_confidence, vote=vote,
        device=device, batch=batch)
    score(options, echo=click.echo)


if __name__ == "__main__":
    main()
