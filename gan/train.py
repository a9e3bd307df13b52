"""The StyleGAN2-ADA training loop: phases, EMA, ADA, ticks, snapshots, resume.

``train(cfg, run_dir)`` is a plain function (a test or a notebook calls it directly);
``mtf-gan train`` is a thin shell around it; the config and its checks live in
:mod:`gan.run_config`. The loop is cut into named steps: :func:`build` (networks, ADA,
loss, optimizers), :func:`restore` (a checkpoint's state), the phases, :func:`update_ema`,
:func:`check_finite` and :func:`report_tick` at every tick, :func:`snapshot`. One training *step* consumes one global
batch of reals and runs the phases of :mod:`gan.loss` (``Gmain`` every step, ``Greg``
every ``pl_interval``, ``Dmain`` every step, ``Dreg`` every ``r1_interval``), each
followed by ``nan_to_num`` on the gradients and an Adam step; then the EMA generator
is updated and the ADA controller counts the step (Karras et al. 2020, ADA, sec. 3).

Progress is counted in images (``cur_nimg``; ticks and snapshots in kimg). Every tick
(``tick_kimg``) the statistics are flushed to ``stats.jsonl`` and TensorBoard and the
losses are checked for non-finite values (only then: a check every step would force a
GPU sync); every ``snap_kimg``, and at the end, ``fakes-<kimg>.png`` and
``checkpoint-<kimg>.pt`` are written.

Data parallel (``torchrun``, :mod:`gan.distributed`). ``train.batch`` is the global
batch; each rank computes its rows (:func:`gan.distributed.shard_batch`: whole
minibatch-std groups, split as evenly as the groups allow, any number of ranks), in
rounds of at most ``train.batch_gpu`` rows. Each call's loss is scaled by its share of
the global batch and the gradients of a phase are summed over ranks with one flattened
all-reduce, so every rank takes the same Adam step. Path-length means, ``w_avg``, ADA's
sign statistics, the non-finite guard and the tick statistics are reduced over ranks
too; only rank 0 writes files. The trajectory equals the one-process run with the same
global batch up to the order of float reductions, so a checkpoint resumes on any
number of ranks.

Exact resume. Nothing random depends on RNG state carried from step to step: every
draw is a function of ``(seed, cur_nimg, phase)`` (:class:`gan.loss.StepRandom`) and
the data order comes from :class:`gan.dataset.InfiniteSampler` started at ``cur_nimg``. A
checkpoint holds the networks, both optimizers' moments, the EMA generator, the ADA
controller, ``pl_mean`` and the counters, so a run resumed from a snapshot continues
bit-identically on the same device and thread count (``tests/gan/test_train.py``).

Transfer learning (:mod:`gan.transfer`). ``train.init`` starts a new run from another
network's weights (copied into the freshly built networks by :func:`build`; counters,
optimizers and ADA at zero); ``train.freeze_d`` keeps D's first layers out of D's optimizer
and never lets them require a gradient, so they stay bit-identical to SRC's. A resumed run
rebuilds the same optimizer layout and takes its weights from the checkpoint, never from SRC.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from gan import distributed as dist
from gan import monitor
from gan import transfer
from gan.augment import AdaController, AugmentPipe
from gan.checkpoint import checkpoint_name, load_resume_state, prune_checkpoints, read_network, save_checkpoint
from gan.config import from_dict, save_config, to_dict
from gan.dataset import ImageDataset, InfiniteSampler
from gan.images import images_to_uint8, make_grid, save_png
from gan.loss import StepRandom, StyleGAN2Loss, lazy_adam, load_optimizer_state, nan_to_num_grads
from gan.metrics import TrainingMetrics
from gan.networks import NetworkConfig, build_discriminator, build_generator
from gan.run_config import RunConfig, TrainConfig, batch_plans
from gan.util import UserError

__all__ = ["train", "TrainingDiverged", "TrainingStopped", "EXIT_STOPPED", "build", "restore", "update_ema", "check_finite", "report_tick", "snapshot"]

log = logging.getLogger(monitor.LOGGER_NAME)


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the message names the phase and the kimg."""


#: Exit status of ``mtf-gan train`` stopped by a signal after writing its checkpoint (0 is a
#: finished run, 1 an error, 2 a usage error or a missing weights file).
EXIT_STOPPED = 3
#: Under torchrun the ranks agree whether to stop every this many steps (one CPU all-reduce).
STOP_CHECK_STEPS = 4


class TrainingStopped(UserError):
    """The run stopped on SIGTERM, SIGUSR1 or SIGINT at a step boundary after writing a
    checkpoint of its exact state (``checkpoint``); ``--resume latest`` continues it
    bit-identically. The CLI exits with :data:`EXIT_STOPPED`."""

    exit_code = EXIT_STOPPED

    def __init__(self, message: str, checkpoint: Optional[Path] = None):
        super().__init__(message)
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------------- grids


def _grid_setup(dataset, cfg: RunConfig, device: torch.device):
    """Reals for ``reals.png`` and the fixed z, c of every fakes grid.

    Conditional runs give each row one label (cycling through the distinct labels of the
    data), so the grid shows what each class looks like.
    """
    cols, rows = cfg.train.grid
    n = cols * rows
    labels = dataset.labels if cfg.data.cond else torch.zeros(len(dataset.names), 0)  # [n_img, c_dim]
    g = torch.Generator().manual_seed(cfg.train.seed)
    # A seeded shuffle: archives are sorted by source path, so the first images are often
    # all of one person; a random sample shows the data's variety.
    order = torch.randperm(len(dataset.names), generator=g)  # [n_img]
    if cfg.data.cond:
        uniq, inverse = torch.unique(labels, dim=0, return_inverse=True)
        groups = [order[inverse[order] == k].tolist() for k in range(len(uniq))]
        idx = []
        for r in range(rows):  # row r: class r % K, the next unused images of that class
            grp = groups[r % len(groups)]
            idx += [grp[((r // len(groups)) * cols + col) % len(grp)] for col in range(cols)]
    else:
        idx = [int(order[i % len(order)]) for i in range(n)]
    reals = torch.stack([dataset[i][0] for i in idx])  # [n, C, H, W] uint8
    c = labels[idx].to(device)  # [n, c_dim]
    z = torch.randn([n, cfg.network.z_dim], generator=g).to(device)  # [n, z_dim]
    return reals, z, c


@torch.no_grad()
def _fakes(G_ema: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """uint8 ``[n, C, H, W]`` from the EMA generator with constant noise (comparable over time)."""
    out = [images_to_uint8(G_ema(zz, cc, noise_mode="const")) for zz, cc in zip(z.split(chunk), c.split(chunk))]
    return torch.cat(out)


# ---------------------------------------------------------------------------- the run's state


@dataclass
class _Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int
    params: list[torch.nn.Parameter]  # what the phase trains: all of module's but Freeze-D's frozen layers


@dataclass
class Run:
    """Everything the loop updates: networks, optimizers, ADA, loss and the counters."""

    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    G_opt: torch.optim.Optimizer
    D_opt: torch.optim.Optimizer
    pipe: Optional[AugmentPipe]
    ada: AdaController
    loss: StyleGAN2Loss
    phases: list[_Phase]
    cur_nimg: int = 0
    batch_idx: int = 0
    tick: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)  # init and Freeze-D lines for the log


def build(cfg: RunConfig, device: torch.device, collect_w: bool = False, src: Optional[dict] = None) -> Run:
    """Networks (initialisation a function of the seed alone), EMA copy, ADA, loss, the lazy
    Adam optimizers and the phase list (Karras et al. 2020, StyleGAN2 sec. 3.1 lazy regularization).
    ``collect_w``: the batch is computed in pieces, so the loss sums the latents that move
    ``w_avg`` for the trainer to rebuild the global update. ``src``: the network of ``--init``
    (:func:`gan.transfer.transfer_weights`); D's optimizer leaves out Freeze-D's frozen layers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        G = build_generator(cfg.network).train().requires_grad_(False).to(device)
        D = build_discriminator(cfg.network).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    notes = []
    if src is not None:  # new tensors keep the seed's initialisation, the same in G and G_ema
        notes += transfer.describe_transfer(transfer.transfer_weights(G, D, G_ema, src, cfg), src, cfg)
    d_params, frozen = transfer.freeze_d(D, cfg.train.freeze_d)  # kept out of D_opt, never requiring grad
    notes += transfer.describe_freeze(cfg, D, frozen)
    pipe = None
    if cfg.augment.mode != "none":
        pipe = AugmentPipe.from_config(cfg.augment).train().requires_grad_(False).to(device)
    ada = AdaController(cfg.augment)  # owns p: the loss reads it when it augments D's inputs
    loss = StyleGAN2Loss(G, D, cfg.loss, augment_pipe=pipe, device=device, ada=ada, collect_w=collect_w)
    lc, oc = cfg.loss, cfg.optim
    g_reg = lc.pl_interval if lc.pl_weight > 0 else None
    d_reg = lc.r1_interval if lc.r1_gamma > 0 else None
    g_params = list(G.parameters())
    G_opt = lazy_adam(g_params, oc.g_lr, oc.betas, oc.eps, g_reg)
    D_opt = lazy_adam(d_params, oc.d_lr, oc.betas, oc.eps, d_reg)
    phases = [_Phase("Gmain", G, G_opt, 1, g_params)]
    if g_reg:
        phases.append(_Phase("Greg", G, G_opt, g_reg, g_params))
    phases.append(_Phase("Dmain", D, D_opt, 1, d_params))
    if d_reg:
        phases.append(_Phase("Dreg", D, D_opt, d_reg, d_params))
    return Run(G, D, G_ema, G_opt, D_opt, pipe, ada, loss, phases, notes=notes)


def restore(run: Run, state: dict, device: torch.device, rank0: bool) -> None:
    """Load a checkpoint's networks, optimizer moments, ADA controller, ``pl_mean`` and counters."""
    run.G.load_state_dict(state["G"])
    run.D.load_state_dict(state["D"])
    run.G_ema.load_state_dict(state["G_ema"])
    load_optimizer_state(run.G_opt, state["G_opt"])  # keeps the fused implementation
    load_optimizer_state(run.D_opt, state["D_opt"])
    # ADA's sign statistics are saved reduced over ranks: rank 0 resumes with them.
    run.ada.load_state_dict(state["ada_stats"] if rank0 else {**state["ada_stats"], "signs_sum": 0.0,
                                                                   "signs_count": 0.0})
    run.loss.pl_mean.copy_(state["pl_mean"].to(device))
    run.cur_nimg, run.batch_idx = int(state["cur_nimg"]), int(state["batch_idx"])
    run.tick = int(state.get("tick", 0))


def check_resume_network(cfg: RunConfig, state: dict, resume: Any) -> None:
    """A checkpoint resumes only into the same network and the same Freeze-D (its optimizer
    layout), and never re-applies an init: a clear error listing what differs."""
    saved_cfg = from_dict(RunConfig, state["config"])
    saved = saved_cfg.network
    if saved != cfg.network:
        diff = [f"{f.name} {getattr(saved, f.name)!r} (checkpoint) vs {getattr(cfg.network, f.name)!r}"
                for f in dataclasses.fields(NetworkConfig) if getattr(saved, f.name) != getattr(cfg.network, f.name)]
        raise UserError(f"--resume {resume}: the network differs from this run's: {'; '.join(diff)}; "
                        f"resume with the checkpoint's config (omit --config) or start a new run")
    if saved_cfg.train.freeze_d != cfg.train.freeze_d:
        raise UserError(f"--resume {resume}: freeze_d {saved_cfg.train.freeze_d} (checkpoint) vs "
                        f"{cfg.train.freeze_d}; a run resumes with the layers it froze: drop --freeze-d "
                        f"(or pass --freeze-d {saved_cfg.train.freeze_d})")
    if cfg.train.init is not None and cfg.train.init != saved_cfg.train.init:
        raise UserError(f"--resume {resume} with --init {cfg.train.init}: --init and --resume are exclusive "
                        f"(a resumed run takes its weights from the checkpoint); pass one of them")


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, t: TrainConfig, cur_nimg: int) -> None:
    """EMA of G (Karras et al. 2018, appendix; half-life ``ema_kimg``, ramped up early in training)."""
    ema_nimg = t.ema_kimg * 1000
    if t.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * t.ema_rampup)
    beta = 0.5 ** (t.batch / max(ema_nimg, 1e-8))
    params_ema, params = list(G_ema.parameters()), list(G.parameters())
    # p.lerp(p_ema, beta) as one multi-tensor kernel (values bit-identical to a per-tensor loop).
    torch._foreach_copy_(params_ema, torch._foreach_lerp(params, params_ema, beta))
    torch._foreach_copy_(list(G_ema.buffers()), list(G.buffers()))


# ---------------------------------------------------------------------------- entry point


def train(cfg: RunConfig, run_dir: str | Path, resume: Optional[str | Path] = None, progress: bool = True,
          console: bool = True, dist_timeout: float = dist.DEFAULT_TIMEOUT_S, *,
          dataset: Optional[ImageDataset] = None, state: Optional[dict] = None, init_state: Optional[dict] = None,
          explicit: Iterable[str] = ()) -> dict[str, Any]:
    """Train per ``cfg`` into the existing folder ``run_dir``; returns a summary dict.

    ``resume``: a checkpoint to continue from (its network config must equal ``cfg``'s;
    counters, optimizers, EMA, ADA state and ``pl_mean`` come from it). ``cfg.train.init``
    on a new run: start from that network (:mod:`gan.transfer`; ``explicit``: the dotted keys
    the caller set on purpose, which SRC must not contradict and the transfer conventions
    leave alone). ``progress`` shows a tqdm bar; ``console`` logs to stdout besides
    ``log.txt``. A caller that has already run :func:`gan.transfer.prepare` passes its
    ``dataset`` and SRC (``init_state``) with ``cfg`` as it returned them, and one that has
    read the checkpoint passes it as ``state``: nothing is opened, resolved, checked or read twice.

    Raises :class:`gan.util.UserError` for bad input (before anything heavy starts) and
    :class:`TrainingDiverged` when a loss turns non-finite (checked at tick boundaries;
    the last good checkpoint is kept).

    Under ``torchrun`` every rank calls this with the same arguments (``run_dir`` is
    written by rank 0 only); ``dist_timeout`` (seconds) bounds every collective, so a
    hung rank ends the job. Without torchrun it is a plain single-process run.
    """
    with dist.session(cfg.train.device, dist_timeout) as device:
        if state is None and resume is not None:
            state = load_resume_state(resume)
        if dataset is None:
            cfg, dataset, init_state = transfer.prepare(cfg, dist.world_size(), explicit=explicit,
                                                        resuming=state is not None, src=init_state,
                                                        resume_state=state)
        if state is not None:
            check_resume_network(cfg, state, resume)
        elif cfg.train.init is not None and init_state is None:
            init_state = read_network(cfg.train.init)  # a caller that resolved cfg but kept SRC
        return _train_on(cfg, Path(run_dir), device, dataset, state, resume, progress, console,
                         None if state is not None else init_state)


def _train_on(cfg: RunConfig, run_dir: Path, device: torch.device, dataset: ImageDataset, state: Optional[dict],
              resume: Any, progress: bool, console: bool, src: Optional[dict] = None) -> dict[str, Any]:
    if dist.is_rank0():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    monitor.setup_logging(run_dir, rank=dist.rank(), console=console)
    threads = torch.get_num_threads()
    if cfg.train.threads is not None:
        # Small networks on a busy CPU: one thread is often fastest; several threads on
        # oversubscribed cores can be tens of times slower (OpenMP barriers wait on
        # descheduled threads).
        torch.set_num_threads(cfg.train.threads)
    try:
        with monitor.Monitor(run_dir, rank=dist.rank()) as mon:
            return _train(cfg, run_dir, device, dataset, state, resume, mon, progress and dist.is_rank0(), src)
    finally:
        torch.set_num_threads(threads)
        monitor.close_logging()


def _log_setup(cfg: RunConfig, run_dir: Path, device: torch.device, dataset: ImageDataset, run: Run,
               main_plan: dist.BatchPlan) -> None:
    world = dist.world_size()
    log.info("run folder: %s", run_dir)
    log.info("device: %s%s; torch %s, %d threads", device,
             f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else " (float32)",
             torch.__version__, torch.get_num_threads())
    if world > 1 or len(main_plan.rounds) > 1:
        log.info("data parallel: %d process(es), global batch %d; rank 0 computes %d rows in %d round(s)",
                 world, cfg.train.batch, len(main_plan.rows), len(main_plan.rounds))
    log.info("dataset: %r", dataset)
    log.info("G: %s parameters; D: %s parameters", f"{sum(p.numel() for p in run.G.parameters()):,}",
             f"{sum(p.numel() for p in run.D.parameters()):,}")
    for line in run.notes:
        log.info("%s", line)


class _Batches:
    """The data loader's iterator behind a :meth:`close`. Its workers ignore stop signals
    (:func:`gan.distributed.ignore_stop_signals`), so they must be shut down in order when the
    loop ends, also on an exception, rather than left for multiprocessing's exit-time
    ``terminate()`` (a SIGTERM they would ignore): dropping the iterator does that."""

    def __init__(self, it) -> None:
        self._it = it

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._it = None  # the iterator's __del__ asks each worker to exit and joins it


def _loader(cfg: RunConfig, dataset: ImageDataset, device: torch.device, start: int, rows: list[int]) -> _Batches:
    """This rank's rows of every global batch from image position ``start`` on, forever."""
    sampler = InfiniteSampler(len(dataset), cfg.train.seed, start=start, batch=cfg.train.batch, rows=rows)
    return _Batches(iter(torch.utils.data.DataLoader(
        dataset, batch_size=len(rows), sampler=sampler, num_workers=cfg.data.workers,
        pin_memory=device.type == "cuda", prefetch_factor=2 if cfg.data.workers > 0 else None,
        persistent_workers=False,
        # A scheduler that signals the whole process group must not kill the workers before the
        # main process has written its checkpoint; the main process ends them.
        worker_init_fn=dist.ignore_stop_signals if cfg.data.workers > 0 else None)))


def _train(cfg: RunConfig, run_dir: Path, device: torch.device, dataset: ImageDataset, state: Optional[dict],
           resume: Any, mon: monitor.Monitor, progress: bool, src: Optional[dict] = None) -> dict[str, Any]:
    from tqdm import tqdm

    t = cfg.train
    clock = _Clock(time.time())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
    rank0, world = dist.is_rank0(), dist.world_size()
    main_plan, greg_plan = batch_plans(cfg, world, dist.rank())
    run = build(cfg, device, collect_w=world > 1 or any(max(p.rounds_per_rank) > 1 for p in (main_plan, greg_plan)),
                src=src)
    _log_setup(cfg, run_dir, device, dataset, run, main_plan)
    if state is not None:
        restore(run, state, device, rank0)
        log.info("resumed from %s at kimg %.3f", resume, run.cur_nimg / 1000)

    label_table = (dataset.labels if cfg.data.cond else torch.zeros(len(dataset.names), 0)).to(device)
    grid = _grid_setup(dataset, cfg, device)
    if state is None and rank0:
        _write_initial_grids(run_dir, run, grid, t.grid, mon)
    # In-training metrics: every rank generates and extracts its share of the fakes (and of
    # the uncached reals); rank 0 computes the values and writes them.
    metrics = TrainingMetrics.from_config(t, cfg.data.path, run_dir, device, monitor=mon) if t.metrics else None
    data_iter = _loader(cfg, dataset, device, run.cur_nimg, main_plan.rows)

    total_nimg = int(round(t.kimg * 1000))
    clock.tick_start(run.cur_nimg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info("training from kimg %.3f to %.3f (batch %d, tick %g kimg, snapshot %g kimg)",
             run.cur_nimg / 1000, total_nimg / 1000, t.batch, t.tick_kimg, t.snap_kimg)
    bar = tqdm(total=total_nimg, initial=run.cur_nimg, unit="img", unit_scale=True, dynamic_ncols=True,
               disable=not progress, file=sys.stderr, desc="train")

    try:
        with dist.StopSignals() as stops:  # SIGTERM, SIGUSR1, SIGINT: stop at a step boundary with a checkpoint
            last_ckpt, last_stats = _loop(cfg, run, run_dir, device, dataset, resume, mon, bar, clock, stops, grid,
                                          metrics, data_iter, label_table, main_plan, greg_plan,
                                          run.cur_nimg >= total_nimg)
    finally:
        data_iter.close()
    bar.close()
    log.info("done: kimg %.3f in %s", run.cur_nimg / 1000, monitor.format_time(time.time() - clock.start))
    return {"run_dir": run_dir, "cur_nimg": run.cur_nimg, "checkpoint": last_ckpt, "stats": last_stats,
            "G": run.G, "D": run.D, "G_ema": run.G_ema}


def _loop(cfg: RunConfig, run: Run, run_dir: Path, device: torch.device, dataset: ImageDataset, resume: Any,
          mon: monitor.Monitor, bar, clock: "_Clock", stops: dist.StopSignals, grid: tuple, metrics, data_iter,
          label_table: torch.Tensor, main_plan: dist.BatchPlan, greg_plan: dist.BatchPlan, done: bool
          ) -> tuple[Optional[Path], dict[str, Any]]:
    """The steps from ``run.cur_nimg`` to ``train.kimg``; ``(last checkpoint, last tick's means)``.

    A stop signal (:class:`gan.distributed.StopSignals`) ends the loop at a step boundary: every
    rank agrees on the step (every :data:`STOP_CHECK_STEPS` steps under torchrun, one CPU
    all-reduce, no device sync), the state is written by :func:`snapshot` (the same path as a
    periodic checkpoint, so ADA's per-rank sign sums are reduced first) and
    :class:`TrainingStopped` is raised."""
    t, world = cfg.train, dist.world_size()
    total_nimg = int(round(t.kimg * 1000))
    tick_nimg, snap_nimg = max(int(t.tick_kimg * 1000), 1), max(int(t.snap_kimg * 1000), 1)
    # Non-finite guard: per phase, the first cur_nimg with a non-finite loss (-1 = none), on device.
    first_bad = {p.name: torch.full([], -1, dtype=torch.int64, device=device) for p in run.phases}
    last_stats: dict[str, Any] = {}
    last_ckpt: Optional[Path] = None
    while not done:
        real_u8, real_c = next(data_iter)  # [b, C, H, W] uint8, [b, c_dim]: this rank's rows
        real_img = real_u8.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1  # [b, C, H, W] in [-1, 1]
        real_c = real_c.to(device, non_blocking=True)
        for ph in run.phases:
            if run.batch_idx % ph.interval == 0:
                _run_phase(ph, run.loss, greg_plan if ph.name == "Greg" else main_plan, real_img, real_c,
                           label_table, t.seed, run.cur_nimg, device, t.batch, run.ada, first_bad[ph.name])
        update_ema(run.G_ema, run.G, t, run.cur_nimg)
        run.cur_nimg += t.batch
        run.batch_idx += 1
        run.ada.step(t.batch, all_reduce=dist.all_reduce_ if world > 1 else None)
        bar.update(t.batch)

        done = run.cur_nimg >= total_nimg
        stop = stops.received is not None
        if world > 1:  # every rank stops at the same step
            stop = run.batch_idx % STOP_CHECK_STEPS == 0 and dist.agree_stop(stop)
        stop = stop and not done  # a signal on the last step: the run is complete, not stopped
        snap = done or stop or (run.cur_nimg // snap_nimg) > ((run.cur_nimg - t.batch) // snap_nimg)
        if not (snap or run.cur_nimg >= clock.tick_nimg + tick_nimg):
            continue
        run.tick += 1
        check_finite(first_bad, run, last_ckpt, resume, bar)
        last_stats = report_tick(run, mon, clock, device)
        if snap:
            last_ckpt = snapshot(cfg, run, run_dir, dataset, grid, mon, last_stats)
            if stop:
                bar.close()
                why = stops.received or "a stop signal on another rank"
                msg = (f"stopped on {why} at kimg {run.cur_nimg / 1000:.3f}: wrote {last_ckpt}; continue with "
                       f"`mtf-gan train --outdir {run_dir.parent} --resume latest` (or --resume auto)")
                log.info("%s", msg)
                raise TrainingStopped(msg, last_ckpt)
            if metrics is not None:
                metrics.evaluate(run.G_ema, run.cur_nimg, last_ckpt)
        clock.tick_start(run.cur_nimg)
    return last_ckpt, last_stats


# ---------------------------------------------------------------------------- tick and snapshot


class _Clock:
    """Wall time of the run and of the current tick."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.tick_nimg, self.tick_time = 0, start

    def tick_start(self, cur_nimg: int) -> None:
        self.tick_nimg, self.tick_time = cur_nimg, time.time()


def _write_initial_grids(run_dir: Path, run: Run, grid: tuple, shape: tuple[int, int], mon: monitor.Monitor) -> None:
    reals, z, c = grid
    cols, rows = shape
    save_png(run_dir / "reals.png", make_grid(reals, cols, rows))
    init = make_grid(_fakes(run.G_ema, z, c), cols, rows)
    save_png(run_dir / "fakes_init.png", init)
    mon.image("Fakes", init, 0)


def check_finite(first_bad: dict[str, torch.Tensor], run: Run, last_ckpt: Optional[Path], resume: Any, bar) -> None:
    """Raise :class:`TrainingDiverged` if any phase saw a non-finite loss since the last tick.

    Checked only at ticks (a check every step would force a GPU sync); under torchrun
    every rank stops together, at the earliest bad step of any rank."""
    if dist.world_size() > 1:
        fbs = torch.stack(list(first_bad.values()))  # [phases] int64
        fbs = dist.all_reduce_(torch.where(fbs < 0, torch.full_like(fbs, 1 << 62), fbs), "min")
        for fb, v in zip(first_bad.values(), torch.where(fbs == 1 << 62, torch.full_like(fbs, -1), fbs)):
            fb.copy_(v)
    bad = {name: int(v) for name, v in first_bad.items() if int(v) >= 0}
    if not bad:
        return
    name, at = min(bad.items(), key=lambda kv: kv[1])
    bar.close()
    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else (
        "no checkpoint of this run was written" if resume is None else f"resume from {resume} again")
    raise TrainingDiverged(
        f"training diverged: a non-finite loss in phase {name} at kimg {at / 1000:.3f} "
        f"(tick {run.tick}, checked at kimg {run.cur_nimg / 1000:.3f}); {where}. Lower the learning rate "
        f"(--set optim.g_lr=..., optim.d_lr=...) or raise --gamma, then --resume")


def report_tick(run: Run, mon: monitor.Monitor, clock: _Clock, device: torch.device) -> dict[str, float]:
    """Progress, timing and resource scalars; flush the tick's statistics (reduced over
    ranks) to ``stats.jsonl`` and TensorBoard; one log line. Returns the tick's means."""
    now = time.time()
    tick_time = now - clock.tick_time
    tick_kimg_done = (run.cur_nimg - clock.tick_nimg) / 1000
    monitor.report("Progress/tick", run.tick)
    monitor.report("Progress/kimg", run.cur_nimg / 1000)
    monitor.report("Progress/augment_p", run.ada.p)
    monitor.report("Progress/pl_mean", run.loss.pl_mean)
    if math.isfinite(run.ada.last_rt):
        monitor.report("Progress/ada_rt", run.ada.last_rt)
    monitor.report("Timing/sec_per_tick", tick_time)
    monitor.report("Timing/sec_per_kimg", tick_time / max(tick_kimg_done, 1e-9))
    monitor.report("Timing/images_per_s", tick_kimg_done * 1000 / max(tick_time, 1e-9))
    monitor.report("Timing/total_hours", (now - clock.start) / 3600)
    monitor.report("Resources/peak_rss_mb", monitor.peak_rss_mb())
    if device.type == "cuda":
        monitor.report("Resources/peak_gpu_mem_gb", torch.cuda.max_memory_allocated(device) / 2 ** 30)
        torch.cuda.reset_peak_memory_stats(device)
    if dist.world_size() > 1:  # the monitor's per-name moments, summed over ranks (gan.distributed.reduce_stats)
        mon.reduce(dist.reduce_stats)
    stats = {k: v["mean"] for k, v in mon.flush(run.cur_nimg).items()}

    def s(name: str) -> str:
        v = stats.get(name)
        return "-" if v is None else f"{v:.3f}"

    log.info("tick %d kimg %.3f time %s sec/kimg %.2f img/s %.1f augment %.3f | G %s pl %s | D %s r1 %s | rss %d MB",
             run.tick, run.cur_nimg / 1000, monitor.format_time(now - clock.start), stats["Timing/sec_per_kimg"],
             stats["Timing/images_per_s"], run.ada.p, s("Loss/G/main"), s("Loss/G/pl_length"),
             s("Loss/D/main"), s("Loss/D/r1_penalty"), monitor.peak_rss_mb())
    return stats


def snapshot(cfg: RunConfig, run: Run, run_dir: Path, dataset: ImageDataset, grid: tuple, mon: monitor.Monitor,
             stats: dict[str, float]) -> Path:
    """``fakes-<kimg>.png`` and ``checkpoint-<kimg>.pt`` (rank 0 writes; every rank joins the
    reduction of ADA's sign statistics). Returns the checkpoint's path."""
    name = checkpoint_name(run.cur_nimg)[len("checkpoint-"):-len(".pt")]
    ada_state = run.ada.state_dict()
    if dist.world_size() > 1:  # save the sign statistics of all ranks (a resume on any world size continues them)
        signs = torch.tensor([ada_state["signs_sum"], ada_state["signs_count"]], dtype=torch.float64)
        ada_state["signs_sum"], ada_state["signs_count"] = dist.all_reduce_(signs).tolist()
    path = run_dir / checkpoint_name(run.cur_nimg)
    failure = None
    if dist.is_rank0():
        try:
            _write_snapshot(cfg, run, run_dir, dataset, grid, mon, stats, path, name, ada_state)
        except OSError as exc:  # disk full, folder gone: the previous checkpoint stays as it was
            failure = (f"could not write {path.name} in {run_dir} ([Errno {exc.errno}] {exc.strerror or exc}); "
                       f"the previous checkpoint is intact and no partial file was left: free space (or fix the "
                       f"folder), then continue with --resume latest")
    failure = dist.broadcast_object(failure)  # every rank stops together, with rank 0's sentence
    if failure is not None:
        raise UserError(failure)
    return path


def _write_snapshot(cfg: RunConfig, run: Run, run_dir: Path, dataset: ImageDataset, grid: tuple,
                    mon: monitor.Monitor, stats: dict[str, float], path: Path, name: str, ada_state: dict) -> None:
    """Rank 0's files of a snapshot: ``fakes-<kimg>.png``, ``checkpoint-<kimg>.pt`` (atomic), then
    ``--keep``'s pruning of older checkpoints (only once the new one is complete)."""
    _, z, c = grid
    cols, rows = cfg.train.grid
    fakes = make_grid(_fakes(run.G_ema, z, c), cols, rows)
    save_png(run_dir / f"fakes-{name}.png", fakes)
    mon.image("Fakes", fakes, run.cur_nimg)
    save_checkpoint(path, {
        "config": to_dict(cfg),
        "cur_nimg": run.cur_nimg,
        "batch_idx": run.batch_idx,
        "tick": run.tick,
        "class_names": _class_names(dataset, cfg),
        "G": run.G.state_dict(), "D": run.D.state_dict(), "G_ema": run.G_ema.state_dict(),
        "G_opt": run.G_opt.state_dict(), "D_opt": run.D_opt.state_dict(),
        "augment_p": run.ada.p, "ada_stats": ada_state,
        "pl_mean": run.loss.pl_mean.detach().cpu().clone(),
        "stats": stats,
    })
    log.info("wrote %s and fakes-%s.png", path.name, name)
    if cfg.train.keep is not None:
        try:  # a checkpoint that cannot be deleted costs disk space, not the run
            gone = prune_checkpoints(run_dir, cfg.train.keep, path)
        except OSError as exc:
            log.warning("--keep %d: could not delete older checkpoints in %s (%s)", cfg.train.keep, run_dir, exc)
            gone = []
        if gone:
            log.info("--keep %d: removed %s", cfg.train.keep, ", ".join(p.name for p in gone))


# ---------------------------------------------------------------------------- phases


def _global_pl_mean(ph: _Phase, loss: StyleGAN2Loss, plan: dist.BatchPlan, label_table: torch.Tensor, seed: int,
                    cur_nimg: int, device: torch.device, batch: int):
    """``lengths [m] -> mean over the global batch`` for a Greg phase split over ranks or rounds:
    one all-reduce inside the round when every rank has one round; otherwise a first pass
    that measures the lengths without a graph."""
    if max(plan.rounds_per_rank) == 1:
        def pl_batch_mean(lengths: torch.Tensor) -> torch.Tensor:  # [m] -> mean over the global batch
            n = lengths.new_full([], float(lengths.numel()), dtype=torch.float64)  # a fill: no copy, no sync
            moments = torch.stack([lengths.sum().double(), n])
            dist.all_reduce_(moments)
            return (moments[0] / moments[1]).to(lengths.dtype)
        return pl_batch_mean
    moments = torch.zeros([2], dtype=torch.float64, device=device)
    for rows in plan.rounds:
        rnd = StepRandom(seed, cur_nimg, ph.name, device=device, rows=rows, global_batch=plan.global_batch)
        _, _, lengths = loss.path_lengths(label_table, rnd, batch, create_graph=False, update_w_avg=False)
        moments += torch.stack([lengths.detach().sum().double(), moments.new_full([], float(len(rows)))])
    dist.all_reduce_(moments)
    mean = (moments[0] / moments[1]).float()
    return lambda lengths: mean


def _run_phase(ph: _Phase, loss: StyleGAN2Loss, plan: dist.BatchPlan, real_img: torch.Tensor, real_c: torch.Tensor,
               label_table: torch.Tensor, seed: int, cur_nimg: int, device: torch.device, batch: int,
               ada: AdaController, first_bad: torch.Tensor) -> None:
    """One phase on this rank's rows (``plan``, in rounds), gradients summed over ranks, one Adam step.

    Each round's loss is weighted by its share of the global batch, so the summed
    gradient is that of the global mean. What one process computes from the whole batch
    is rebuilt from reduced sums: the path-length mean (:func:`_global_pl_mean`) and the
    ``w_avg`` update (:class:`gan.networks.MappingNetwork` updates it from its own rows;
    the global mean replaces that). A single process with one round takes none of these
    detours and computes exactly what it always did.
    """
    world = dist.world_size()
    split = world > 1 or max(plan.rounds_per_rank) > 1
    mapping = loss.G.mapping
    w_avg = getattr(mapping, "w_avg", None)
    w_sync = split and w_avg is not None and getattr(mapping, "w_avg_beta", None) is not None
    w0 = w_avg.detach().clone() if w_sync else None
    loss.take_w_sum()  # start this phase's sum afresh

    for p in ph.params:  # not Freeze-D's layers: they never require a gradient (R1 still reaches the reals)
        p.requires_grad_(True)
    ph.opt.zero_grad(set_to_none=True)
    pl0 = pl_batch_mean = None
    if ph.name == "Greg" and split:
        pl0 = loss.pl_mean.detach().clone()
        pl_batch_mean = _global_pl_mean(ph, loss, plan, label_table, seed, cur_nimg, device, batch)
    offset = 0
    for rows in plan.rounds:
        if pl0 is not None:
            loss.pl_mean.copy_(pl0)  # every round moves pl_mean from the same value, once
        rnd = StepRandom(seed, cur_nimg, ph.name, device=device, rows=rows, global_batch=plan.global_batch)
        sl = slice(offset, offset + len(rows)) if ph.name != "Greg" else slice(None)
        offset += len(rows)
        terms = loss.accumulate_gradients(ph.name, real_img[sl], real_c[sl], label_table, rnd, batch,
                                          gain=ph.interval, weight=len(rows) / plan.global_batch,
                                          pl_batch_mean=pl_batch_mean)
        real_logits = terms.pop("real_logits", None)
        if real_logits is not None:
            ada.accumulate(real_logits)
        finite = torch.stack([torch.isfinite(v).all() for v in terms.values()]).all()
        first_bad.copy_(torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, cur_nimg), first_bad))
    for p in ph.params:
        p.requires_grad_(False)
    nan_to_num_grads(ph.module, all_reduce=dist.all_reduce_ if world > 1 else None)  # one flat buffer for both
    ph.opt.step()

    if w_sync:
        moments = loss.take_w_sum()
        if moments is None:
            moments = torch.zeros([w_avg.numel() + 1], dtype=torch.float64, device=device)
        moments = dist.all_reduce_(moments)  # [w_dim + 1]: sum of w, count
        with torch.no_grad():  # no latents anywhere (count 0): keep w_avg; decided on the device, no sync
            new = (moments[:-1] / moments[-1]).to(w_avg.dtype).lerp(w0, mapping.w_avg_beta)
            w_avg.copy_(torch.where(moments[-1] > 0, new, w_avg))


def _class_names(dataset, cfg: RunConfig) -> Optional[list[str]]:
    """Names of the label vector's entries (``column=value`` for several CSV columns), or None."""
    if not cfg.data.cond:
        return None
    if dataset.label_groups:
        return [f"{g['column']}={c}" for g in dataset.label_groups for c in g["classes"]]
    if isinstance(dataset.class_names, list):
        return [str(c) for c in dataset.class_names]
    return [str(i) for i in range(dataset.label_dim)]
