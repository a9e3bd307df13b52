"""``mtf-gan``: a thin click shell over plain functions in the ``gan`` modules.

Each command validates its options, calls one function and prints where the
results went. Errors the user can fix are ``click.ClickException``s (exit 1, or
``UsageError`` exit 2) with a message that names the file or option; no tracebacks.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from gan.config import ConfigError
from gan.util import UserError, ensure_venv_bin_on_path


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the package's user-facing errors into click errors (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except UserError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = getattr(exc, "exit_code", 1)  # 2 for missing weights files
            raise err from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtf-faces")
def main() -> None:
    """mtf-gan: synthetic faces, data preparation, GAN training, generation and metrics for MTF."""
    ensure_venv_bin_on_path()


# ---------------------------------------------------------------------------- synth
# (commands are registered below; each lives beside the function it wraps)


@main.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New (or empty) folder to write.")
@click.option("--layout", type=click.Choice(["curated", "noncurated"]), default="curated", show_default=True,
              help="curated: task/split/class trees; noncurated: <person>/*.jpg + attributes.csv.")
@click.option("--people", type=click.IntRange(min=1), default=16, show_default=True, help="Number of identities.")
@click.option("--per-person", type=click.IntRange(min=1), default=10, show_default=True,
              help="Images per person (curated needs at least 3: one each for train, val, test).")
@click.option("--resolution", type=click.IntRange(16, 256), default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default=None,
              help="Image format [default: png for curated, jpg for noncurated].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@friendly_errors
def synth_cmd(out: str, layout: str, people: int, per_person: int, resolution: int, seed: int,
              image_format: str | None, progress: bool) -> None:
    """Draw procedural labelled faces as an MTF-like tree (for tests and the demo).

    OUT must not exist or be empty. Faces follow their race, gender and age labels with
    overlapping cues (see gan/synthetic.py); the same options give byte-identical files.
    """
    from gan.synthetic import write_synthetic

    s = write_synthetic(out, layout=layout, people=people, per_person=per_person,
                        resolution=resolution, seed=seed, image_format=image_format, progress=progress)
    click.echo(f"wrote {s['images']} {s['resolution']}-px {s['format']} images of {s['people']} people "
               f"({s['files']} files, {s['layout']} layout) to {s['out']}")
    if s["splits"]:
        click.echo("  splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()) + " images per task")
    for task, classes in s["classes"].items():
        shown = classes if len(classes) <= 8 else classes[:8] + [f"... ({len(classes)} in all)"]
        click.echo(f"  {task}: {', '.join(shown)}")
    if s["attributes_csv"]:
        click.echo(f"  labels: {s['attributes_csv']}")


# ---------------------------------------------------------------------------- prepare


@main.command("prepare")
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dest", type=click.Path(path_type=str))
@click.option("--resolution", "-r", type=int, required=True, help="Output side in pixels, a power of two (e.g. 64, 128, 256).")
@click.option("--labels", default=None, metavar="folder|FILE.csv",
              help="'folder': first-level folder names are the classes; FILE.csv: a CSV with a 'file' column "
                   "(paths relative to SRC) and the --label-column(s). Default: unlabelled.")
@click.option("--label-column", "label_columns", multiple=True, metavar="COL",
              help="CSV column to label by; repeat for a joint one-hot vector (e.g. gender, race, age).")
@click.option("--crop", type=click.Choice(["center", "none"]), default="center", show_default=True,
              help="center: crop non-square images to their central square; none: skip them (reported).")
@click.option("--filter", "filter_", type=click.Choice(["box", "lanczos"]), default="box", show_default=True,
              help="Downscaling filter (box averages without aliasing; FIDs compare only between data prepared "
                   "with the same filter); upscaling is always lanczos.")
@click.option("--min-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Skip (and report) images whose short side is below this many pixels.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that decode and resize; the output is the same for any number.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Stop after writing this many images.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable or unlabelled file instead of skipping it.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@friendly_errors
def prepare_cmd(src: str, dest: str, resolution: int, labels: str | None, label_columns: tuple[str, ...],
                crop: str, filter_: str, min_size: int, workers: int, max_images: int | None,
                strict: bool, progress: bool) -> None:
    """Turn a folder tree (or zip) of face images SRC into a training archive DEST.zip.

    Writes uncompressed PNGs (00000/img00000000.png, ...) and dataset.json in the
    StyleGAN2-ADA dataset_tool format, plus sizes.json, duplicates.json and skipped.txt.
    DEST must not exist.
    """
    from gan.prepare import prepare

    summary = prepare(
        src, dest, resolution=resolution, labels=labels, label_columns=label_columns, crop=crop,
        filter=filter_, min_size=min_size, workers=workers, max_images=max_images, strict=strict,
        progress=progress,
    )
    click.echo(summary.format())


# ---------------------------------------------------------------------------- doctor
@main.command("doctor")
@click.option("--target", "targets", multiple=True, type=click.Choice(["cpp", "cuda"]),
              help="Check only these op targets (repeatable; default: cpp and cuda).")
@friendly_errors
def doctor_cmd(targets: tuple[str, ...]) -> None:
    """Check the toolchain, build the compiled ops (cpp; cuda, compile-only without a GPU) and test parity.

    Prints one OK/FAIL/SKIP/INFO line per check, with the fix for each FAIL, and exits
    non-zero if anything FAILed. Builds are cached (see the 'extension cache' line).
    """
    from gan.ops.doctor import doctor

    if not doctor(targets or ("cpp", "cuda"), echo=click.echo):
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------- train
@main.command("train")
@click.option("--data", default=None, type=click.Path(), help="Training archive from `mtf-gan prepare` "
              "(default with --resume: the checkpoint's).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="Parent folder; each run gets a new numbered folder NNNNN-<desc> in it.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="YAML file or preset name (demo, mtf64, mtf128, mtf256) [default: the published auto "
                   "rule for the data's resolution; with --resume: the checkpoint's config].")
@click.option("--cond/--no-cond", default=None, help="Condition G and D on the archive's labels.")
@click.option("--mirror/--no-mirror", default=None, help="Add x-flipped copies of the images.")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Train until this many thousand real images.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Global batch size (over all torchrun processes).")
@click.option("--batch-gpu", type=click.IntRange(min=1), default=None,
              help="At most this many images per forward pass and process (gradient accumulation when "
                   "memory is short); a multiple of the minibatch-std group size.")
@click.option("--gamma", type=click.FloatRange(min=0), default=None, help="R1 weight.")
@click.option("--snap", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Checkpoint and fakes grid every N kimg.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of initialisation and every draw.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="auto = cuda when available [default: auto]; CPU runs in float32.")
@click.option("--resume", default=None, metavar="latest|auto|PATH",
              help="Continue from the newest checkpoint under --outdir (latest; auto: or start fresh when there "
                   "is none, for job scripts that are requeued), a run folder or a checkpoint file.")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Keep only the newest N checkpoints of the run (older ones are deleted once a new one is "
                   "complete) [default: all].")
@click.option("--init", "init", default=None, metavar="SRC",
              help="Start a new run from SRC's weights (transfer learning): a published StyleGAN2-ADA .pkl or a "
                   "checkpoint of ours; the network config comes from SRC. Not with --resume.")
@click.option("--freeze-d", "freeze_d", type=click.IntRange(min=0), default=None,
              help="Freeze the discriminator's first N layers, counted from the image as the published "
                   "--freezed (Freeze-D, Mo et al. 2020) [default: 0].")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and G/D parameter counts, then exit.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set augment.mode=none (repeatable; wins over flags).")
@click.option("--metrics", "metric_list", default=None, metavar="fid10k,kid10k",
              help="Evaluate G_ema at every snapshot: fid<N>k / kid<N>k (N thousand fakes vs all reals), "
                   "to metrics.jsonl and TensorBoard Metrics/<name>.")
@click.option("--inception-weights", default=None, type=click.Path(dir_okay=False),
              help="Inception file for --metrics (default: torch's hub cache).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Under torchrun: seconds a collective may wait for the other processes before the job "
                   "stops (a hung or dead process ends the run).")
@friendly_errors
def train_cmd(data: str | None, outdir: str, config_path: str | None, cond: bool | None, mirror: bool | None,
              kimg: float | None, batch: int | None, batch_gpu: int | None, gamma: float | None,
              snap: float | None, seed: int | None, device: str | None, resume: str | None, keep: int | None,
              init: str | None,
              freeze_d: int | None, dry_run: bool, overrides: tuple[str, ...], metric_list: str | None,
              inception_weights: str | None, progress: bool, dist_timeout: float) -> None:
    """Train a StyleGAN2-ADA generator on a prepared archive (writes OUTDIR/NNNNN-<desc>/).

    Several GPUs or nodes: launch with torchrun, e.g. `torchrun --standalone --nproc_per_node=8
    $(which mtf-gan) train ...`; --batch stays the global batch and only rank 0 writes files.

    SIGTERM, SIGUSR1 or Ctrl-C stop the run at the next step with a checkpoint of its exact
    state and exit status 3; `--resume latest` (or `auto`) continues it bit-identically.
    """
    from pathlib import Path

    from gan import distributed as dist
    from gan import run_config as RC
    from gan.checkpoint import load_resume_state, new_run_dir, resolve_resume
    from gan.train import check_resume_network, train
    from gan.transfer import prepare, preview

    if init is not None and resume is not None and resume != "auto":
        raise click.UsageError("--init and --resume are exclusive: --init starts a new run from SRC's weights, "
                               "--resume continues a run (its weights come from the checkpoint); pass one "
                               "(--resume auto with --init: --init only when there is nothing to resume)")
    resume_path = resolve_resume(resume, outdir) if resume else None  # auto: None when there is nothing yet
    state = load_resume_state(resume_path) if resume_path is not None else None  # read once
    base = state["config"] if state is not None and config_path is None else None
    flags = {"data.path": data, "data.cond": cond, "data.mirror": mirror, "train.kimg": kimg,
             "train.batch": batch, "train.batch_gpu": batch_gpu, "loss.r1_gamma": gamma, "train.snap_kimg": snap,
             "train.seed": seed, "train.device": device, "train.inception_weights": inception_weights,
             "train.init": init, "train.freeze_d": freeze_d, "train.keep": keep,
             "train.metrics": [m.strip() for m in metric_list.split(",") if m.strip()] if metric_list else None}
    values = {k: v for k, v in flags.items() if v is not None}  # typed, as click parsed them
    cfg = RC.load_run_config(config_path, overrides, base=base, values=values)
    dataset = RC.open_dataset(cfg.data)  # opened once, for the auto rule and every check
    explicit = RC.explicit_keys(values, overrides)
    if base is None and config_path is None:
        cfg = RC.with_auto(cfg, dataset.resolution, explicit)
    # Resolve (with --init: SRC's network, the transfer conventions) and check: fail before any folder.
    cfg, dataset, src = prepare(cfg, dataset=dataset, explicit=explicit, resuming=state is not None,
                                resume_state=state)
    if state is not None:
        check_resume_network(cfg, state, resume_path)  # a mismatch leaves no empty run folder behind
    if dry_run:
        if dist.env_world()[0] == 0:
            click.echo(RC.dry_run(cfg, dataset), nl=False)
            for line in preview(cfg, src):  # what --init and --freeze-d would do
                click.echo(f"# {line}")
        return
    desc = RC.describe(cfg, Path(cfg.data.path).stem) + ("-resume" if resume_path else "")
    with dist.session(cfg.train.device, dist_timeout):
        # Under torchrun rank 0 numbers and creates the run folder; every rank trains into it.
        made = ("", "")
        if dist.is_rank0():
            try:
                made = ("ok", str(new_run_dir(outdir, desc)))
            except UserError as exc:
                made = ("error", str(exc))
        status, value = dist.broadcast_object(made)
        if status == "error":
            raise UserError(value)
        run_dir = Path(value)
        result = train(cfg, run_dir, resume=resume_path, progress=progress, dist_timeout=dist_timeout,
                       dataset=dataset, state=state, init_state=src)
    if dist.env_world()[0] == 0:
        click.echo(f"done: {result['cur_nimg'] / 1000:g} kimg; run folder {run_dir}; last checkpoint "
                   f"{result['checkpoint'].name if result['checkpoint'] else '-'}")


# ---------------------------------------------------------------------------- import
@main.command("import")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False))
@friendly_errors
def import_cmd(src: str, dest: str) -> None:
    """Convert a published StyleGAN2-ADA network pickle SRC.pkl into a checkpoint DEST.pt.

    Nothing in SRC is executed: the pickle is read with a closed list of allowed globals
    and its embedded Python sources are only hashed. DEST (G, D, G_ema, the network
    config and where it came from) loads with weights_only=True; it must not exist.
    """
    from gan.checkpoint import import_network
    from gan.published import describe_import

    state = import_network(src, dest)
    for line in describe_import(state):
        click.echo(line)
    click.echo(f"wrote {dest} (G, D, G_ema{'' if state['provenance']['has_G_ema'] else ' = G'}); use it with "
               f"--network or `mtf-gan train --init {dest}`")


# ---------------------------------------------------------------------------- generate
@main.command("generate")
@click.option("--network", required=True, type=click.Path(dir_okay=False),
              help="A checkpoint-*.pt of `mtf-gan train`, a file of `mtf-gan import`, or a published StyleGAN2-ADA "
                   ".pkl (read without executing it).")
@click.option("--seeds", default="0-63", show_default=True, help="Seeds, e.g. 0-63 or 1,5,10-12.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True,
              help="Truncation psi (0.7 is typical; 1 = none).")
@click.option("--trunc-center", type=click.Choice(["global", "class"]), default="global", show_default=True,
              help="Truncate towards w_avg (global, as published) or, for a conditional network, towards the mean w "
                   "of the --class (estimated from 1000 seeded z), so truncated faces keep their class.")
@click.option("--class", "class_name", default=None, metavar="NAME|INDEX",
              help="Class to generate with a conditional network (names come from the checkpoint).")
@click.option("--noise", "noise_mode", type=click.Choice(["const", "random"]), default="const", show_default=True,
              help="Noise inputs: the stored constant draw or a draw from the seed.")
@click.option("--grid", is_flag=True, help="Write one grid.png instead of one PNG per seed.")
@click.option("--interpolate", "interpolate_steps", type=click.IntRange(min=0), default=0,
              help="Frames per consecutive seed pair, linear in W: an N-frame strip per pair in --outdir, and the "
                   "frame count of --video.")
@click.option("--outdir", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNGs (optional with --video).")
@click.option("--video", type=click.Path(dir_okay=False), default=None, metavar="FILE.mp4|FILE.gif",
              help="Also (or only) write an interpolation video through the seeds: (seeds - 1) x (N - 1) + 1 frames "
                   "for --interpolate N; MP4 (H.264, imageio-ffmpeg) or GIF (Pillow); never overwrites a file.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Frames per second of --video.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar (--video).")
@friendly_errors
def generate_cmd(network: str, seeds: str, truncation_psi: float, trunc_center: str, class_name: str | None,
                 noise_mode: str, grid: bool, interpolate_steps: int, outdir: str | None, video: str | None,
                 fps: float, device: str, progress: bool) -> None:
    """Draw images (and an interpolation video) from a checkpoint's EMA generator.

    \b
    mtf-gan generate --network CKPT --seeds 0-7 --class Female --trunc 0.5 --trunc-center class --outdir out
    mtf-gan generate --network CKPT --seeds 0-7 --class Female --interpolate 60 --video out.mp4
    """
    from gan.generate import generate, parse_seeds
    from gan.distributed import pick_device

    if outdir is None and video is None:
        raise click.UsageError("pass --outdir DIR (PNGs), --video FILE.mp4|.gif, or both")
    written = generate(network, parse_seeds(seeds), outdir, truncation_psi=truncation_psi, class_name=class_name,
                       noise_mode=noise_mode, grid=grid, interpolate_steps=interpolate_steps,
                       device=pick_device(device), trunc_center=trunc_center, video=video, fps=fps,
                       progress=progress, echo=click.echo)
    pngs = [p for p in written if p.suffix == ".png"]
    if outdir is not None:
        click.echo(f"wrote {len(pngs)} PNG file(s) to {outdir}")
    if video is not None:
        from gan.generate import video_frame_count

        frames = video_frame_count(len(parse_seeds(seeds)), interpolate_steps)
        click.echo(f"wrote {video} ({frames} frames at {fps:g} fps, {frames / fps:.1f} s)")


@main.command("metrics")
@click.option("--real", required=True, type=click.Path(exists=True), help="Prepared archive (zip) or image folder.")
@click.option("--network", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (ours, imported, or a published .pkl): fakes are drawn from its G_ema "
                   "(seeds 0..num-1).")
@click.option("--fake", type=click.Path(exists=True, file_okay=False), default=None, help="Folder of fake images.")
@click.option("--metrics", "metric_list", default="fid,kid", show_default=True,
              help="Comma list of fid, kid, is (Inception score), pr (precision/recall, VGG16).")
@click.option("--num", type=int, default=None, help="Fakes to draw (default: as many as the reals).")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--trunc", type=float, default=1.0, show_default=True, help="Truncation psi (protocol: 1.0).")
@click.option("--trunc-center", type=click.Choice(["global", "class"]), default="global", show_default=True,
              help="With --network and --trunc < 1: truncate towards w_avg (global, the protocol) or towards each "
                   "fake's class mean w (class; a conditional network; 1000 seeded z per class, in the rows).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--inception-weights", type=click.Path(), default=None,
              help="weights-inception-2015-12-05-6726825d.pth (default: torch's hub cache).")
@click.option("--vgg-weights", type=click.Path(), default=None,
              help="vgg16-397923af.pth for --metrics pr (default: torch's hub cache).")
@click.option("--per-class", is_flag=True,
              help="Also FID/KID per class of a conditional network, equal fake and real counts per class.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for metrics.jsonl (default: next to the checkpoint, or the current folder).")
@click.option("--stats-cache", type=click.Path(file_okay=False), default=None,
              help="Folder caching the real side's features, keyed by content, count, size, extractor and weights "
                   "hash [default: $MTF_CACHE_DIR/stats; MTF_CACHE_DIR defaults to ~/.cache/mtf-faces].")
@click.option("--no-stats-cache", is_flag=True,
              help="Neither read nor write cached real features (extract them again).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@friendly_errors
def metrics_cmd(real: str, network: str | None, fake: str | None, metric_list: str, num: int | None, batch: int,
                trunc: float, trunc_center: str, device: str, inception_weights: str | None, vgg_weights: str | None,
                per_class: bool, as_json: bool, out: str | None, stats_cache: str | None, no_stats_cache: bool,
                progress: bool) -> None:
    """FID/KID/IS/precision-recall between real images and a generator or a fake folder (torch-fidelity).

    Weights are never downloaded: a missing file stops with where to put it (exit status 2).
    The real side's features are cached (see --stats-cache); where and how big goes to stderr.
    """
    import json
    from pathlib import Path

    from gan.distributed import pick_device
    from gan.metrics import PER_CLASS_NOTE, MetricsOptions, compute_metrics, default_stats_cache, result_rows

    if (network is None) == (fake is None):
        raise click.UsageError("pass exactly one of --network CKPT or --fake DIR")
    if no_stats_cache and stats_cache is not None:
        raise click.UsageError("--stats-cache DIR and --no-stats-cache contradict each other; pass one")
    if batch < 1 or (num is not None and num < 1):
        raise click.BadParameter("--batch and --num must be >= 1")
    names = tuple(m.strip().lower() for m in metric_list.split(",") if m.strip())
    # A missing weights file is gan.util.MissingWeights: friendly_errors exits with status 2.
    res = compute_metrics(real, network or fake, MetricsOptions(
        metrics=names, num=num, batch=batch, device=pick_device(device), inception_weights=inception_weights,
        vgg_weights=vgg_weights, truncation_psi=trunc, trunc_center=trunc_center, per_class=per_class,
        progress=progress,
        cache_dir=None if no_stats_cache else (stats_cache or default_stats_cache()),
        echo=lambda line: click.echo(line, err=True)))  # stderr: --json keeps stdout parseable
    rows = result_rows({**res, "fake": str(network or fake)})
    dest = Path(out) if out else (Path(network).parent if network else Path("."))
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "metrics.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            std = f" +- {r['std']:.3g}" if "std" in r else ""
            click.echo(f"{r['metric']:<16} {r['value']:.6g}{std}   ({r['n_real']} real, {r['n_fake']} fake, "
                       f"{r['resolution']} px, {r['seconds']} s)")
        if per_class:
            click.echo(f"note: {PER_CLASS_NOTE}")
        if res.get("trunc_center") == "class":
            click.echo(f"truncation centre: each fake's class mean w over {res['trunc_center_samples']} z "
                       f"(torch seed {res['trunc_center_seed']})")
        click.echo(f"appended {len(rows)} row(s) to {dest / 'metrics.jsonl'}")


if __name__ == "__main__":
    main()
