"""StyleGAN2-ADA losses: non-saturating logistic loss, lazy R1, path-length regularization.

One call, :meth:`StyleGAN2Loss.accumulate_gradients`, per training *phase*:

==========  ============================================================  ==================
phase       what                                                          how often
==========  ============================================================  ==================
``Gmain``   ``softplus(-D(G(z)))`` (Goodfellow et al. 2014, the           every step
            non-saturating loss)
``Greg``    path-length penalty ``w_pl (|J_w^T y|_2 - a)^2``              every ``pl_interval`` (4)
            (Karras et al. 2020, StyleGAN2, eq. 4), batch / ``pl_batch_shrink``
``Dmain``   ``softplus(D(G(z))) + softplus(-D(x))``                       every step
``Dreg``    R1 ``gamma/2 |grad_x D(x)|^2`` on reals (Mescheder et al.     every ``r1_interval`` (16)
            2018, eq. 9)
==========  ============================================================  ==================

Regularization is *lazy* (StyleGAN2, sec. 3.1): a regularization phase runs every k steps
with its loss multiplied by k (``gain``), and the optimizer's learning rate and betas
are raised to the power ``k / (k + 1)`` to make up for the extra steps
(:func:`lazy_adam`). Style mixing (StyleGAN, sec. 3.1) with probability 0.9 switches
to a second latent from a random layer on.

Randomness. A step's draws do not come from a global RNG that would have to be saved
and restored: :class:`StepRandom` derives a fresh ``torch.Generator`` for every
``(seed, cur_nimg, phase, stream)``, draws the values of the whole *global* batch on
the CPU (so CPU and GPU runs draw the same numbers) and hands each rank its rows.
z, labels, mixing cutoffs and latents, and augmentation parameters are all drawn that
way, so a resumed run, or the same run on another number of ranks, sees the same
numbers. The large draws, the per-pixel noise inputs of the synthesis network
(:meth:`StepRandom.noise`, passed as the network's ``noise_source``) and the path-length
noise, are drawn for the global batch from ``(seed, cur_nimg, phase, stream)`` on the
training device (copying them from the host every step would cost more than drawing
them) and sliced per rank.

No host-device sync. A step only queues work on the GPU: the small host draws reach it
through :func:`gan.util.to_device` (pinned memory, one non-blocking copy), rows are picked
by slicing where they are a range, and the only host reads of random numbers are of CPU
tensors (the style-mixing gate and cutoff), never of device tensors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F

from gan import monitor
from gan.augment import AdaController, AugmentParams, AugmentPipe
from gan.util import derive_seed, to_device

__all__ = ["LossConfig", "StepRandom", "StyleGAN2Loss", "lazy_adam", "load_optimizer_state", "nan_to_num_grads",
           "PHASES"]

Phase = Literal["Gmain", "Greg", "Dmain", "Dreg"]
PHASES: tuple[Phase, ...] = ("Gmain", "Greg", "Dmain", "Dreg")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights and lazy-regularization intervals (StyleGAN2-ADA defaults except ``r1_gamma``,
    which the presets set with the published rule ``0.0002 res^2 / batch``)."""

    r1_gamma: float = 10.0          # R1 weight gamma (penalty gamma/2 |grad|^2); 0 disables Dreg
    r1_interval: int = 16           # lazy R1: every N steps, gain N
    pl_weight: float = 2.0          # path-length weight; 0 disables Greg
    pl_interval: int = 4            # lazy path length: every N steps, gain N
    pl_batch_shrink: int = 2        # Greg runs on batch / N samples
    pl_decay: float = 0.01          # running mean a of path lengths: a <- a + decay (mean - a)
    style_mixing_prob: float = 0.9  # probability of mixing two latents in a batch

    def __post_init__(self) -> None:
        for k in ("r1_gamma", "pl_weight"):
            if getattr(self, k) < 0:
                raise ValueError(f"loss.{k}={getattr(self, k)} must be >= 0")
        for k in ("r1_interval", "pl_interval", "pl_batch_shrink"):
            if getattr(self, k) < 1:
                raise ValueError(f"loss.{k}={getattr(self, k)} must be >= 1")
        if not 0 <= self.pl_decay <= 1:
            raise ValueError(f"loss.pl_decay={self.pl_decay} must lie in [0, 1]")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ValueError(f"loss.style_mixing_prob={self.style_mixing_prob} is not a probability")


# ----------------------------------------------------------------------------
# Optimizers.


def lazy_adam(params, lr: float, betas: tuple[float, float], eps: float, reg_interval: Optional[int]
              ) -> torch.optim.Adam:
    """Adam corrected for lazy regularization: ``lr * r`` and ``beta ** r`` with ``r = k / (k + 1)``.

    StyleGAN2 appendix B: with a regularization step every k main steps, the optimizer
    takes k + 1 steps where k were planned. Betas are passed as a tuple of floats
    (torch 2.14 rejects a list).

    Implementation (:func:`adam_impl`): on CUDA the fused kernel (every parameter and moment in
    one launch, its step counters on the device: no host read either). On the CPU ``foreach``,
    which gives the per-tensor loop's numbers bit for bit at a fraction of its Python overhead.
    Not fused there: fused CPU Adam is faster still (about 7x ``foreach`` on 27 M parameters, 2
    threads) but rounds differently, and on the demo network it made a two-process run and its
    one-process twin drift apart ~30x faster (``tests/gan/test_distributed.py``'s resume check).
    """
    params = list(params)
    r = 1.0 if not reg_interval else reg_interval / (reg_interval + 1)
    return torch.optim.Adam(params, lr=lr * r, betas=(float(betas[0] ** r), float(betas[1] ** r)), eps=eps,
                            **adam_impl({p.device.type for p in params}))


def adam_impl(device_types: set[str]) -> dict[str, bool]:
    """The ``torch.optim.Adam`` flags :func:`lazy_adam` takes for parameters on these device types."""
    if device_types == {"cuda"}:
        return {"fused": True}
    if device_types == {"cpu"}:
        return {"foreach": True}
    return {}


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own implementation (fused or not).

    ``load_state_dict`` takes every group setting from the checkpoint, ``fused`` and
    ``foreach`` included: a checkpoint written before the optimizers were fused would
    quietly turn them back into the slow path (and a fused one would force fusing where it
    is not supported). Hyperparameters and moments come from ``state``; the step counters
    are moved where this implementation keeps them (the parameters' device, float32, when fused).
    """
    impl = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, impl):
        group.update(own)
        for p in group["params"]:
            st = opt.state.get(p, {})
            if torch.is_tensor(st.get("step")):
                on_device = own["fused"] or own["capturable"]
                st["step"] = st["step"].to(dtype=torch.float32, device=p.device if on_device else "cpu")


@torch.no_grad()
def nan_to_num_grads(params, all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
    """In place: NaN gradients -> 0, +-inf -> +-1e5 (as the published training loop does),
    so one bad sample cannot poison Adam's moments; the trainer still stops on a
    non-finite *loss* at the next tick. ``params``: a module or its parameters (those
    without a gradient are left alone).

    On a GPU, over one flat buffer: one ``cat``, one ``nan_to_num``, one ``_foreach_copy_`` back,
    where a loop would launch a kernel per parameter. ``all_reduce`` (under torchrun,
    :func:`gan.distributed.all_reduce_`) sums the flat buffer over ranks first, so the
    gradients are flattened once for both (as :func:`gan.distributed.all_reduce_grads` does).
    On the CPU without ``all_reduce`` a loop in place: no launches to save there, and the flat
    buffer would cost two more passes over every gradient.
    """
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if all_reduce is None and all(g.device.type == "cpu" for g in grads):
        for g in grads:
            torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5, out=g)
        return
    flat = torch.cat([g.flatten() for g in grads])  # [sum of numels]
    if all_reduce is not None:
        all_reduce(flat)
    torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])


# ----------------------------------------------------------------------------
# Stateless randomness.


class StepRandom:
    """Random draws of one training step as pure functions of ``(seed, cur_nimg, phase, stream)``.

    Every method draws for the *global* batch and returns this rank's rows: :meth:`randn` and
    :meth:`randint` draw on the CPU and return the rows on ``device`` (one pinned, non-blocking
    copy), :meth:`augment_params` keeps them on the host (the pipe decides there), and
    :meth:`randn_device` / :meth:`noise` draw on ``device``. The rows are
    ``[rank * n, (rank + 1) * n)`` with ``n = global_batch // world_size``,
    or, when ``rows`` is given, exactly those rows of the global batch, in that order (the
    trainer's :func:`gan.distributed.shard_batch` layout, which keeps minibatch-std
    groups whole and allows uneven splits). ``global_batch`` (needed with ``rows``) is
    the batch ``rows`` index into; :meth:`noise` draws that many rows.
    """

    def __init__(self, seed: int, cur_nimg: int, phase: str, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, rows: Optional[Sequence[int]] = None,
                 global_batch: Optional[int] = None):
        self.seed, self.cur_nimg, self.phase = int(seed), int(cur_nimg), phase
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.rows = None if rows is None else torch.as_tensor(list(rows), dtype=torch.int64)  # [n] on the host
        # Which rows of a global draw are this rank's: a slice when they are one ascending run
        # (the usual case: a view, no gather kernel), else the index ``rows``.
        self._sel: slice | torch.Tensor | None = None
        if self.rows is not None:
            if global_batch is None:
                raise ValueError("StepRandom: rows=... needs global_batch (the batch the rows index into)")
            if self.rows.numel() and not (0 <= int(self.rows.min()) and int(self.rows.max()) < global_batch):
                raise ValueError(f"StepRandom: rows must lie in [0, {global_batch})")
            first = int(self.rows[0]) if self.rows.numel() else 0
            if torch.equal(self.rows, torch.arange(first, first + self.rows.numel())):
                self._sel = slice(first, first + self.rows.numel())
        self.global_batch = global_batch
        self._rows_dev: Optional[torch.Tensor] = None

    def num_rows(self, global_batch: int) -> int:
        """How many rows of a ``global_batch`` draw this rank gets."""
        return self.rows.numel() if self.rows is not None else global_batch // self.world_size

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global draw ``x`` (on any device; a view when they are a range)."""
        if self.rows is None:
            n = x.shape[0] // self.world_size
            return x[self.rank * n:(self.rank + 1) * n]
        if self._sel is not None:
            return x[self._sel]
        if x.device.type == "cpu":
            return x[self.rows]
        if self._rows_dev is None:  # once per step and phase, not per layer; no sync
            self._rows_dev = to_device(self.rows, x.device)
        return x[self._rows_dev]

    def stream_seed(self, stream: str, rank: Optional[int] = None) -> int:
        """A 63-bit seed from a hash of (seed, cur_nimg, phase, stream[, rank]); stable across
        Python processes and versions (unlike ``hash()``)."""
        key = f"{self.seed}/{self.cur_nimg}/{self.phase}/{stream}" + ("" if rank is None else f"/{rank}")
        return derive_seed(key) & ((1 << 63) - 1)  # the key's SHA-256, first 8 bytes little-endian

    def generator(self, stream: str) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(self.stream_seed(stream))
        return g

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a host draw ``x``, on ``device`` (pinned, non-blocking: no sync)."""
        return to_device(self._select(x), self.device)

    def randn(self, stream: str, global_shape: list[int]) -> torch.Tensor:
        """N(0, 1) drawn for ``global_shape``; this rank's rows of it (``global_shape[0] // world_size``
        of them, or ``rows``)."""
        return self._rows(torch.randn(global_shape, generator=self.generator(stream)))

    def randint(self, stream: str, high: int, global_batch: int) -> torch.Tensor:
        """Uniform integers in ``[0, high)`` drawn for ``global_batch``; this rank's rows of them (int64)."""
        return self._rows(torch.randint(high, [global_batch], generator=self.generator(stream)))

    def uniform_scalar(self, stream: str) -> float:
        """One U[0, 1) float shared by all ranks (e.g. whether to mix styles in this batch)."""
        return float(torch.rand([], generator=self.generator(stream)))

    def augment_params(self, stream: str, global_batch: int) -> AugmentParams:
        """This rank's rows of :meth:`gan.augment.AugmentPipe.sample_params` for the global batch,
        kept on the host (the pipe builds its matrices there and sends them in one copy)."""
        params = AugmentPipe.sample_params(global_batch, self.generator(stream))
        return AugmentParams(self._select(params.uniform), self._select(params.normal))

    def randn_device(self, stream: str, global_shape: list[int]) -> torch.Tensor:
        """N(0, 1) drawn for ``global_shape`` *on* ``device``, then this rank's rows of it.

        For large draws (noise inputs, path-length noise) that would cost a host-to-device
        copy of their full size every step. The generator lives on ``device``, seeded from
        (seed, cur_nimg, phase, stream), so no sync either; the numbers depend on the device
        type (on the CPU they are :meth:`randn`'s), never on the world size or saved RNG state.
        """
        g = _device_generator(self.device, self.stream_seed(stream))
        return self._select(torch.randn(global_shape, generator=g, device=self.device))

    def noise(self, key: str, n: int, resolution: int) -> torch.Tensor:
        """Noise inputs of one synthesis layer (a :data:`gan.layers.NoiseSource`): N(0, 1)
        ``[n, 1, R, R]``, this rank's rows of a :meth:`randn_device` draw for the global
        batch (``global_batch`` rows when ``rows`` is given, else ``n * world_size``)."""
        if self.rows is not None:
            assert n == self.rows.numel(), (n, self.rows.numel())
            return self.randn_device(key, [self.global_batch, 1, resolution, resolution])  # [n, 1, R, R]
        return self.randn_device(key, [n * self.world_size, 1, resolution, resolution])


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: seeding a CUDA generator sets its
    Philox seed and offset on the host, so it queues no copy and waits for nothing."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# ----------------------------------------------------------------------------
# The loss.


class StyleGAN2Loss:
    """Gradients of the four phases for a generator ``G`` and discriminator ``D``.

    ``augment_pipe`` (an :class:`gan.augment.AugmentPipe` or None) is applied to every
    image D sees, real or generated (ADA); its parameters come from :class:`StepRandom`,
    its probability from ``ada`` (the :class:`gan.augment.AdaController`, the one owner
    of p; without one, the pipe's own ``p``). ``pl_mean`` (a float32 scalar tensor on
    G's device) is the running mean ``a`` of path lengths, saved in checkpoints.

    Data-parallel training (:mod:`gan.distributed`) needs two things so that each rank's
    share of a global batch yields what one process computes on all of it:

    * ``pl_batch_mean`` (an argument of :meth:`accumulate_gradients`) maps this call's
      detached path lengths ``[m]`` to their mean over the global batch (default: the
      local mean), and :meth:`pl_penalty` gives each call its exact share of the whole
      batch's gradient;
    * ``collect_w=True`` makes every ``w_avg`` update add ``[sum of w, count]`` of its
      latents to a float64 ``[w_dim + 1]`` sum that :meth:`take_w_sum` hands out, so the
      trainer can replace each rank's local ``w_avg`` update with the global one.
    """

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, cfg: LossConfig,
                 augment_pipe: Optional[AugmentPipe] = None, device: torch.device | str = "cpu", *,
                 ada: Optional[AdaController] = None, collect_w: bool = False):
        self.G, self.D, self.cfg, self.augment_pipe, self.ada = G, D, cfg, augment_pipe, ada
        self.device = torch.device(device)
        self.pl_mean = torch.zeros([], device=self.device)
        self.collect_w = collect_w
        self._w_sum: Optional[torch.Tensor] = None  # float64 [w_dim + 1] while collecting

    @property
    def augment_p(self) -> float:
        """The augmentation probability D's inputs get now: the controller's, else the pipe's."""
        if self.augment_pipe is None:
            return 0.0
        return self.ada.p if self.ada is not None else self.augment_pipe.p

    def take_w_sum(self) -> Optional[torch.Tensor]:
        """``[sum of w, count]`` (float64 ``[w_dim + 1]``) of the latents that updated ``w_avg``
        since the last call, and start a new sum; ``None`` when none did (or not ``collect_w``)."""
        w_sum, self._w_sum = self._w_sum, None
        return w_sum

    # -- forward passes
    def run_G(self, z: torch.Tensor, c: torch.Tensor, rnd: StepRandom, global_batch: int,
              update_w_avg: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` ``[n, z_dim]``, ``c`` ``[n, c_dim]`` -> (img ``[n, C, R, R]``, ws ``[n, num_ws, w_dim]``).

        Style mixing: with probability ``style_mixing_prob``, layers from a random cutoff
        in ``[1, num_ws)`` on take the ws of a second latent (one cutoff per batch, as
        published). ``w_avg`` is not updated by the second latent.
        """
        G = self.G
        ws = G.mapping(z, c, update_w_avg=update_w_avg)  # [n, num_ws, w_dim]
        if update_w_avg and self.collect_w:  # ws[:, 0] is what w_avg tracks
            w0 = ws[:, 0].detach().to(torch.float64)  # [n, w_dim]
            moments = torch.cat([w0.sum(0), w0.new_full([1], float(w0.shape[0]))])  # [w_dim + 1]; a fill, no copy
            self._w_sum = moments if self._w_sum is None else self._w_sum + moments
        if self.cfg.style_mixing_prob > 0 and rnd.uniform_scalar("mix_gate") < self.cfg.style_mixing_prob:
            num_ws = ws.shape[1]
            cutoff = int(torch.randint(1, num_ws, [], generator=rnd.generator("mix_cutoff"))) if num_ws > 1 else num_ws
            z2 = rnd.randn("mix_z", [global_batch, z.shape[1]])  # [n, z_dim]
            ws2 = G.mapping(z2, c, update_w_avg=False)  # [n, num_ws, w_dim]
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)  # [n, num_ws, w_dim]
        img = G.synthesis(ws, noise_source=rnd.noise)  # [n, C, R, R]
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, rnd: StepRandom, stream: str,
              global_batch: int, second_order: bool = True) -> torch.Tensor:
        """``img`` ``[n, C, R, R]`` -> logits ``[n, 1]``, through the augment pipe when
        :attr:`augment_p` ``> 0`` (passed to the pipe, which keeps no p of its own here).
        ``second_order=False``: nothing differentiates through the pipe's backward (Gmain,
        Dmain), so the pipe may warp with ``F.grid_sample``; R1 (Dreg) keeps the default."""
        p = self.augment_p
        if p > 0:
            img = self.augment_pipe.apply(img, rnd.augment_params(stream, global_batch), p=p,
                                          second_order=second_order)
        return self.D(img, c)

    # -- the phases
    def gen_labels(self, label_table: torch.Tensor, rnd: StepRandom, global_batch: int) -> torch.Tensor:
        """Labels to generate: rows of ``label_table`` ``[num_images, c_dim]`` drawn uniformly,
        so classes are generated as often as they occur in the data (as published). An
        unconditional table (``c_dim = 0``) draws nothing: every stream is seeded on its own,
        so skipping this one changes no other draw."""
        if label_table.shape[1] == 0:
            return label_table.new_zeros([rnd.num_rows(global_batch), 0])  # [n, 0]
        idx = rnd.randint("c", label_table.shape[0], global_batch)  # [n] on rnd.device
        return label_table[idx.to(label_table.device)]  # [n, c_dim]

    def path_lengths(self, label_table: torch.Tensor, rnd: StepRandom, global_batch: int,
                     create_graph: bool = True, update_w_avg: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Greg's forward: (img ``[m, C, R, R]``, ws ``[m, num_ws, w_dim]``, ``|J_w^T y|``
        ``[m]`` with its graph), ``m`` this rank's rows of ``global_batch // pl_batch_shrink``.

        ``y ~ N(0, I) / sqrt(H W)``, so the expected length does not depend on the
        resolution (StyleGAN2, sec. 3.2). ``create_graph=False, update_w_avg=False`` only
        measures the lengths (the trainer's first pass when a rank splits Greg in rounds).
        """
        gb = global_batch // self.cfg.pl_batch_shrink
        gen_c = self.gen_labels(label_table, rnd, gb)  # [m, c_dim]
        z = rnd.randn("z", [gb, self.G.z_dim])  # [m, z_dim]
        img, ws = self.run_G(z, gen_c, rnd, gb, update_w_avg=update_w_avg)  # [m, C, R, R], [m, num_ws, w_dim]
        pl_noise = rnd.randn_device("pl_noise", [gb, *img.shape[1:]]) / math.sqrt(img.shape[2] * img.shape[3])
        (pl_grads,) = torch.autograd.grad(outputs=[(img * pl_noise).sum()], inputs=[ws], create_graph=create_graph)
        return img, ws, pl_grads.square().sum(2).mean(1).sqrt()  # [m]  |J_w^T y|, averaged over the ws

    def pl_penalty(self, pl_lengths: torch.Tensor,
                   pl_batch_mean: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """The path-length penalty ``(|J_w^T y| - a')^2`` ``[m]`` with ``a' = a + decay (mean - a)``;
        moves the running mean :attr:`pl_mean` to ``a'`` (detached).

        As published (StyleGAN2-ADA, ``training/loss.py``), the penalty keeps the graph
        through the batch mean in ``a'``; only the stored running mean is detached. When
        this call holds part of the batch (``pl_batch_mean`` gives the global mean), the
        value is the same and the gradient is this call's exact share of the whole batch's:
        through ``a'`` the published penalty contributes ``2 (a' - mean) decay d(mean)``,
        and ``d(mean)`` is the sum over calls of ``d(local sum) / global count``, which the
        zero-valued term ``2 (a' - mean) decay (local mean - its detached copy)``, averaged
        over this call's rows and weighted by its share of the batch, gives.
        """
        decay = self.cfg.pl_decay
        if pl_batch_mean is None:  # this call holds the whole batch: the published formula
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), decay)
            self.pl_mean.copy_(pl_mean.detach())
            return (pl_lengths - pl_mean).square()  # [m]
        batch_mean = pl_batch_mean(pl_lengths.detach()).detach()
        pl_mean = self.pl_mean.lerp(batch_mean, decay)
        self.pl_mean.copy_(pl_mean)
        local_mean = pl_lengths.mean()
        through_mean = 2 * (pl_mean - batch_mean) * decay * (local_mean - local_mean.detach())
        return (pl_lengths - pl_mean).square() + through_mean  # [m]

    def accumulate_gradients(self, phase: Phase, real_img: torch.Tensor, real_c: torch.Tensor,
                             label_table: torch.Tensor, rnd: StepRandom, global_batch: int, gain: float = 1.0,
                             weight: float = 1.0,
                             pl_batch_mean: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                             ) -> dict[str, torch.Tensor]:
        """Backpropagate the loss of ``phase`` (scaled by ``gain``) into the parameters' ``.grad``.

        Args:
            real_img: ``[n, C, R, R]`` float32 in [-1, 1], this rank's reals.
            real_c: ``[n, c_dim]`` their labels.
            label_table: ``[num_images, c_dim]`` the data set's labels (``[num_images, 0]``
                when unconditional); generated labels are drawn from its rows.
            rnd: the step's :class:`StepRandom` for this phase (it knows this call's rows).
            global_batch: the step's batch over all ranks and rounds (``--batch``), not
                this call's rows; Greg works on ``global_batch // pl_batch_shrink`` of it.
            gain: the lazy-regularization interval for reg phases, 1 otherwise.
            weight: this call's share of the global batch (``rows / global rows``; 1 in a
                single pass). Losses are means over the call's rows times ``weight``, so
                the gradients summed over ranks and rounds are those of the global mean.
            pl_batch_mean: Greg only: maps this call's detached path lengths ``[m]`` to
                their mean over the global batch (an all-reduce, or a mean measured in a
                first pass); ``None`` = this call's rows are the whole batch.

        Returns the phase's detached loss terms (for the trainer's non-finite guard);
        everything is also sent to :func:`gan.monitor.report`.
        """
        cfg = self.cfg
        z_dim = self.G.z_dim
        out: dict[str, torch.Tensor] = {}

        if phase == "Gmain":
            gen_c = self.gen_labels(label_table, rnd, global_batch)  # [n, c_dim]
            z = rnd.randn("z", [global_batch, z_dim])  # [n, z_dim]
            img, _ = self.run_G(z, gen_c, rnd, global_batch)
            logits = self.run_D(img, gen_c, rnd, "aug_gen", global_batch, second_order=False)  # [n, 1]
            loss = F.softplus(-logits)  # [n, 1]  -log sigmoid(D(G(z)))
            monitor.report("Loss/scores/fake", logits)
            monitor.report("Loss/signs/fake", logits.sign())
            monitor.report("Loss/G/main", loss)
            loss.mean().mul(gain * weight).backward()
            out["Loss/G/main"] = loss.detach().mean()

        elif phase == "Greg":
            img, ws, pl_lengths = self.path_lengths(label_table, rnd, global_batch)  # [m, C, R, R], ..., [m]
            penalty = self.pl_penalty(pl_lengths, pl_batch_mean)  # [m]
            loss = penalty * cfg.pl_weight
            monitor.report("Loss/G/pl_length", pl_lengths)
            monitor.report("Loss/G/pl_penalty", penalty)
            monitor.report("Loss/G/pl", loss)
            # img[:, 0, 0, 0] * 0 keeps every synthesis parameter in the graph (as published).
            (img[:, 0, 0, 0] * 0 + loss).mean().mul(gain * weight).backward()
            out["Loss/G/pl"] = loss.detach().mean()

        elif phase == "Dmain":
            gen_c = self.gen_labels(label_table, rnd, global_batch)
            z = rnd.randn("z", [global_batch, z_dim])
            with torch.no_grad():
                img, _ = self.run_G(z, gen_c, rnd, global_batch)
            gen_logits = self.run_D(img, gen_c, rnd, "aug_gen", global_batch, second_order=False)  # [n, 1]
            loss_gen = F.softplus(gen_logits)  # -log(1 - sigmoid(D(G(z))))
            loss_gen.mean().mul(gain * weight).backward()
            real_logits = self.run_D(real_img.detach(), real_c, rnd, "aug_real", global_batch,
                                     second_order=False)  # [n, 1]
            loss_real = F.softplus(-real_logits)  # -log sigmoid(D(x))
            loss_real.mean().mul(gain * weight).backward()
            monitor.report("Loss/scores/fake", gen_logits)
            monitor.report("Loss/signs/fake", gen_logits.sign())
            monitor.report("Loss/scores/real", real_logits)
            monitor.report("Loss/signs/real", real_logits.sign())
            monitor.report("Loss/D/main", loss_gen + loss_real)
            out["Loss/D/main"] = (loss_gen + loss_real).detach().mean()
            out["real_logits"] = real_logits.detach()

        elif phase == "Dreg":
            real = real_img.detach().requires_grad_(True)
            logits = self.run_D(real, real_c, rnd, "aug_real", global_batch)  # [n, 1]; R1 needs second order
            (r1_grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True)
            penalty = r1_grads.square().sum([1, 2, 3])  # [n]  |grad_x D(x)|^2
            loss = penalty * (cfg.r1_gamma / 2)
            monitor.report("Loss/D/r1_penalty", penalty)
            monitor.report("Loss/D/r1", loss)
            (logits[:, 0] * 0 + loss).mean().mul(gain * weight).backward()
            out["Loss/D/r1"] = loss.detach().mean()

        else:
            raise ValueError(f"accumulate_gradients: unknown phase {phase!r}; one of {', '.join(PHASES)}")
        return out
