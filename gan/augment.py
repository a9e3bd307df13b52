"""Adaptive discriminator augmentation (ADA): a differentiable augmentation pipe and its p controller.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"
(NeurIPS 2020; arXiv:2006.06676). Every image the discriminator sees, real or
generated, goes through the same random augmentations; because the pipe is
differentiable, the generator is trained through it. An augmentation does not
*leak* into the generated images as long as the distribution it induces is
invertible (sec. 2.2 of the paper), which holds when each transform is skipped with
probability ``1 - p`` (``p`` well below 1) and the resampling adds no cues of its
own (no black borders, no aliasing): hence reflection at the borders and
upsample-filter-warp-downsample resampling (appendix B).

The pipe here is the paper's ``bgc`` pipe: the *blit* group (x-flip, 90-degree
rotations, integer translation), the *geom* group (isotropic scale, pre-rotation,
anisotropic scale, post-rotation, fractional translation) and the *color* group
(brightness, contrast, luma flip, hue rotation, saturation). Each transform is
applied to each sample independently with probability ``p`` times its multiplier.
Strengths are those of the paper (appendix B) and its published code
(``training/augment.py`` of NVlabs/stylegan2-ada-pytorch; the ``bgc`` preset in
``train.py`` sets every multiplier of these twelve transforms to 1)::

    xint_max 0.125 (of the image size)   scale_std 0.2 (log2)    rotate_max 1 (x pi)
    aniso_std 0.2 (log2)                 xfrac_std 0.125 (of the image size)
    brightness_std 0.2                   contrast_std 0.5 (log2) hue_max 1 (x pi)
    saturation_std 1 (log2)

All geometric transforms of a sample compose into one 3x3 matrix and all color
transforms into one 4x4 matrix, so each image is resampled once and recolored once.

Randomness. A step's augmentation is a pure function of a ``torch.Generator``
passed in, never the global RNG: :meth:`AugmentPipe.sample_params` draws a fixed
number of values per sample for the whole *global* batch (independent of ``p``,
of the image size and of the device the images live on), and :meth:`AugmentPipe.apply`
applies a slice of them. The trainer seeds the generator from
``(seed, cur_nimg, phase)`` and each rank applies rows ``[rank * n, (rank + 1) * n)``,
so the result is the same for any world size and survives a resume:
``pipe.apply(images, pipe.sample_params(global_batch, g)[offset:offset + n])``, or in one
call ``pipe(images, generator=g, batch_offset=offset, global_batch=global_batch)``.

The p controller (:class:`AdaController`, paper sec. 3 and eq. 1) uses the
overfitting heuristic ``r_t = E[sign(D(x_real))]``: every ``interval`` (4) steps it
moves ``p`` by ``sign(r_t - target) * batch * interval / (kimg * 1000)``, so ``p`` can
go from 0 to 1 in ``kimg`` (500) thousand real images; target 0.6.

Resampling uses :mod:`gan.ops.upfirdn2d` (``impl`` passes through) for the 2x up- and
downsampling with the orthogonal ``sym6`` wavelet low-pass filter (the paper's choice,
appendix B) and :func:`gan.ops.grid_sample.grid_sample_reflect` (bilinear, mirrored borders)
for the warp: ``F.grid_sample`` where first derivatives suffice, its own twice-differentiable
sampler for lazy R1, which differentiates through the pipe's backward (torch 2.11 on CUDA
lacks that derivative for ``grid_sample``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch

from gan.ops.grid_sample import homogeneous_grid, mirror_index, warp_reflect
from gan.ops.upfirdn2d import setup_filter
from gan.util import to_device

__all__ = ["AugmentConfig", "AugmentPipe", "AugmentParams", "AugmentTransforms", "AdaController", "PIPES",
           "make_generator"]

# Low-pass decomposition filter of the Symlet wavelet with 6 vanishing moments
# (12 taps; values as tabulated by PyWavelets, ``pywt.Wavelet('sym6').dec_lo``).
# It is orthogonal (sum_k h[k] h[k + 2n] = delta[n]), so upsampling with it and
# downsampling with its mirror image reconstructs an image exactly: an identity warp
# is lossless and only the warp itself filters the image.
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

#: Probability multipliers of the named groups of the paper (sec. 2.2, appendix B);
#: ``bgc`` is the published default (``--augpipe=bgc`` of stylegan2-ada-pytorch).
_BLIT = dict(xflip=1.0, rotate90=1.0, xint=1.0)
_GEOM = dict(scale=1.0, rotate=1.0, aniso=1.0, xfrac=1.0)
_COLOR = dict(brightness=1.0, contrast=1.0, lumaflip=1.0, hue=1.0, saturation=1.0)
PIPES: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
}
_MULTIPLIERS = tuple(PIPES["bgc"])

# Columns of the draws of one sample. Every sample always takes all of them, in this
# order, whatever p and the multipliers are, so a generator state always yields the
# same parameters and a slice of the global batch is a slice of the draws.
_UNIFORM = ("xflip", "xflip_gate", "rotate90", "rotate90_gate", "xint_x", "xint_y", "xint_gate",
            "scale_gate", "rotate_pre", "rotate_pre_gate", "aniso_gate", "rotate_post",
            "rotate_post_gate", "xfrac_gate", "brightness_gate", "contrast_gate", "lumaflip",
            "lumaflip_gate", "hue", "hue_gate", "saturation_gate")
_NORMAL = ("scale", "aniso", "xfrac_x", "xfrac_y", "brightness", "contrast", "saturation")
_U = {name: i for i, name in enumerate(_UNIFORM)}
_Z = {name: i for i, name in enumerate(_NORMAL)}


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (any non-negative int)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


# ----------------------------------------------------------------------------
# Config.


@dataclass(frozen=True)
class AugmentConfig:
    """How the discriminator's inputs are augmented: the ``augment:`` keys of a run config
    (``--config`` YAML, or ``--set augment.mode=fixed --set augment.p=0.2`` on ``mtf-gan train``).

    ``mode``: ``ada`` adapts p (starting at ``p``), ``fixed`` keeps ``p``, ``none``
    turns augmentation off. ``target`` is the paper's 0.6 for ``r_t = E[sign(D(real))]``;
    ``kimg`` is how many thousand real images p needs to go from 0 to 1 (500);
    ``interval`` is how often, in training steps, p is adjusted (4).
    """

    mode: Literal["ada", "fixed", "none"] = "ada"
    p: float = 0.0
    target: float = 0.6
    interval: int = 4
    kimg: float = 500.0
    pipe: Literal["blit", "geom", "color", "bg", "bgc"] = "bgc"

    def __post_init__(self) -> None:
        if self.mode not in ("ada", "fixed", "none"):
            raise ValueError(f"augment.mode={self.mode!r}; choose ada, fixed or none")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augment.p={self.p} is not a probability; set augment.p between 0 and 1, "
                             "e.g. --set augment.p=0.2")
        if self.mode == "none" and self.p != 0.0:
            raise ValueError(f"augment.p={self.p} has no effect with augment.mode=none; "
                             "drop augment.p or use --set augment.mode=fixed")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"augment.target={self.target} must lie strictly between 0 and 1 "
                             "(the paper uses 0.6)")
        if self.interval < 1:
            raise ValueError(f"augment.interval={self.interval} must be >= 1 (the paper uses 4)")
        if not self.kimg > 0:
            raise ValueError(f"augment.kimg={self.kimg} must be > 0 (the paper uses 500)")
        if self.pipe not in PIPES:
            raise ValueError(f"augment.pipe={self.pipe!r}; choose one of {', '.join(PIPES)}")


# ----------------------------------------------------------------------------
# Parameters: the raw random draws of a batch.


@dataclass(frozen=True)
class AugmentParams:
    """The random draws of a batch: ``uniform [N, 21]`` in [0, 1), ``normal [N, 7]`` ~ N(0, 1).

    They do not depend on p, the image size or the device the images are on; p gates
    them in :meth:`AugmentPipe.transforms`. Slice with ``params[a:b]`` to get the rows
    of one rank.
    """

    uniform: torch.Tensor  # [N, len(_UNIFORM)]
    normal: torch.Tensor   # [N, len(_NORMAL)]

    def __post_init__(self) -> None:
        assert self.uniform.ndim == 2 and self.uniform.shape[1] == len(_UNIFORM), self.uniform.shape
        assert self.normal.ndim == 2 and self.normal.shape[1] == len(_NORMAL), self.normal.shape
        assert self.uniform.shape[0] == self.normal.shape[0]

    def __len__(self) -> int:
        return int(self.uniform.shape[0])

    def __getitem__(self, index: slice) -> "AugmentParams":
        if not isinstance(index, slice):
            raise TypeError("AugmentParams: index with a slice, e.g. params[offset:offset + n]")
        return AugmentParams(self.uniform[index], self.normal[index])


class AugmentTransforms(NamedTuple):
    """What one batch's parameters mean at a given p and image size.

    ``geom_inv [N, 3, 3]`` maps output pixel coordinates to input pixel coordinates
    (homogeneous, origin at the image center, x right, y down, one unit per pixel).
    ``color [N, 4, 4]`` maps homogeneous RGB ``[r, g, b, 1]`` to the output colour.
    ``blit`` / ``geom`` / ``color_on`` ``[N]`` bool say which samples got any transform
    of that group; a sample with none of them is passed through bit-exactly.
    """

    geom_inv: torch.Tensor
    color: torch.Tensor
    blit: torch.Tensor
    geom: torch.Tensor
    color_on: torch.Tensor


# ----------------------------------------------------------------------------
# Batched matrix helpers (float64: the blit group must stay exactly on the pixel grid).


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, dtype=torch.float64, device=device).expand(n, size, size).clone()


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m  # [N, 3, 3]


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation (in x-right/y-up terms) given cos and sin of the angle."""
    m = _eye(cos.shape[0], 3, cos.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _filter_delay(taps) -> float:
    """How far (in input pixels) 2x upsampling with ``taps`` shifts low frequencies.

    The centroid of the taps minus their middle, in upsampled pixels, halved; 0 for a
    symmetric filter. The resampler turns about the image centre shifted by this much
    (a rotation about the unshifted centre would move the content by ~0.4 pixels).
    """
    h = torch.tensor(taps, dtype=torch.float64)
    k = torch.arange(len(taps), dtype=torch.float64)
    return float(((h * k).sum() / h.sum() - (len(taps) - 1) / 2) / 2)


class _Draws:
    """One batch's draws by name, in float64: ``U(name)``, ``Z(name)`` and ``gate(name, prob)`` ``[N]``."""

    def __init__(self, params: AugmentParams):
        self.u = params.uniform.to(torch.float64)
        self.z = params.normal.to(torch.float64)
        self.n = self.u.shape[0]
        self.device = self.u.device

    def U(self, name: str) -> torch.Tensor:
        return self.u[:, _U[name]]

    def Z(self, name: str) -> torch.Tensor:
        return self.z[:, _Z[name]]

    def gate(self, name: str, prob: float) -> torch.Tensor:
        return self.U(name + "_gate") < prob  # [N] bool


# ----------------------------------------------------------------------------
# The pipe.


class AugmentPipe(torch.nn.Module):
    """The ``bgc`` ADA pipe: blit, general geometric and colour transforms, each with probability p.

    Args:
        xflip ... saturation: probability multipliers (1 = applied with probability p,
            0 = off); defaults are the paper's ``bgc`` pipe. ``PIPES[name]`` lists presets;
            ``AugmentPipe.from_config(cfg)`` builds one from an :class:`AugmentConfig`.
        xint_max ... saturation_std: strengths, as in the paper (see the module docstring).
        impl: passed to :func:`gan.ops.upfirdn2d` (``'auto'``, ``'ref'``, ``'cpp'``, ``'cuda'``).

    ``forward`` / ``apply`` / ``transforms`` take the overall probability per call
    (``p=...``; in training the loss passes :attr:`AdaController.p`, the one owner of p);
    ``pipe.p`` (a float in [0, 1], settable) is only the default of calls that pass
    none. ``p = 0`` returns the input tensor itself. The pipe is affine in the images for fixed parameters,
    so gradients reach G to any order. Images are assumed square (90-degree rotations
    of a non-square image are rounded to the pixel grid and mirrored at the borders).
    """

    def __init__(self,
                 xflip: float = 1, rotate90: float = 1, xint: float = 1,
                 scale: float = 1, rotate: float = 1, aniso: float = 1, xfrac: float = 1,
                 brightness: float = 1, contrast: float = 1, lumaflip: float = 1, hue: float = 1,
                 saturation: float = 1,
                 xint_max: float = 0.125,        # integer translation range, of the image size
                 scale_std: float = 0.2,         # log2 std of isotropic scaling
                 rotate_max: float = 1.0,        # rotation range, 1 = full circle (x pi)
                 aniso_std: float = 0.2,         # log2 std of anisotropic scaling
                 xfrac_std: float = 0.125,       # std of fractional translation, of the image size
                 brightness_std: float = 0.2,    # std of the added brightness
                 contrast_std: float = 0.5,      # log2 std of contrast
                 hue_max: float = 1.0,           # hue rotation range, 1 = full circle (x pi)
                 saturation_std: float = 1.0,    # log2 std of saturation
                 p: float = 0.0,
                 impl: str = "auto"):
        super().__init__()
        self.mult = {name: float(v) for name, v in zip(
            _MULTIPLIERS,
            (xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast, lumaflip, hue, saturation))}
        for name, v in self.mult.items():
            if v < 0:
                raise ValueError(f"AugmentPipe: {name}={v}; probability multipliers must be >= 0")
        self.xint_max = float(xint_max)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)
        self.impl = impl
        self.p = p
        # Separable 12-tap low-pass; a buffer so it follows .to(device), not saved.
        self.register_buffer("filter", setup_filter(list(SYM6)), persistent=False)
        self.delay = _filter_delay(SYM6)     # ~0.2 input pixels for sym6
        self._constants: dict[tuple, torch.Tensor] = {}  # per-size grids and indices (_blit, warp_reflect)

    @classmethod
    def from_config(cls, cfg: AugmentConfig, impl: str = "auto") -> "AugmentPipe":
        """The pipe ``cfg.pipe`` (transforms not in it are off) at ``p = cfg.p``."""
        mult = {name: 0.0 for name in _MULTIPLIERS}
        mult.update(PIPES[cfg.pipe])
        return cls(**mult, p=cfg.p, impl=impl)

    # -- p as a plain float: no device sync to read it, and p = 0 is decided on the host.
    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"AugmentPipe.p={value} is not a probability in [0, 1]")
        self._p = value

    def get_extra_state(self) -> dict:
        return {"p": self._p}

    def set_extra_state(self, state: dict) -> None:
        self.p = state["p"]

    def extra_repr(self) -> str:
        on = ", ".join(f"{k}={v:g}" for k, v in self.mult.items() if v)
        return f"p={self._p:g}, {on}"

    # ------------------------------------------------------------------ randomness
    @staticmethod
    def sample_params(batch_size: int, generator: torch.Generator | int) -> AugmentParams:
        """Draw the parameters of ``batch_size`` samples from ``generator`` (or an int seed).

        Draws happen on the generator's device (CPU by default, which makes a CPU run
        and a GPU run augment identically). Always the same number of draws, so the
        generator's stream does not depend on p or on which transforms are enabled.
        """
        if isinstance(generator, int):
            generator = make_generator(generator)
        if not isinstance(generator, torch.Generator):
            raise TypeError("AugmentPipe.sample_params: pass a torch.Generator or an int seed; "
                            "the global RNG is never used so that resume and rank slicing are exact")
        if batch_size < 0:
            raise ValueError(f"AugmentPipe.sample_params: batch_size={batch_size} must be >= 0")
        dev = generator.device
        uniform = torch.rand([batch_size, len(_UNIFORM)], generator=generator, device=dev)
        normal = torch.randn([batch_size, len(_NORMAL)], generator=generator, device=dev)
        return AugmentParams(uniform, normal)

    # ------------------------------------------------------------------ parameters -> matrices
    def transforms(self, params: AugmentParams, height: int, width: int,
                   p: float | None = None) -> AugmentTransforms:
        """Gate the draws with probability ``p * multiplier`` and compose the matrices.

        Inverse geometric matrices are composed left to right in the order the
        transforms apply (x-flip, rot90, integer translation, scale, pre-rotation,
        anisotropic scale, post-rotation, fractional translation), so that
        ``geom_inv = A1^-1 A2^-1 ... An^-1`` maps an output pixel back to its source.
        The colour matrix composes ``C = An ... A1`` (brightness, contrast, luma flip,
        hue, saturation), acting on RGB in the image's [-1, 1] scale.
        """
        p = self._p if p is None else float(p)
        d = _Draws(params)
        G, blit, geom = self._geometry(d, p, height, width)
        C, color_on = self._colour(d, p)
        return AugmentTransforms(G, C, blit & ~geom, geom, color_on)

    def _geometry(self, d: "_Draws", p: float, height: int, width: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inverse geometric matrices ``[N, 3, 3]`` and the ``[N]`` masks of blit and geom samples."""
        U, Z, gate, n, dev, m = d.U, d.Z, d.gate, d.n, d.device, self.mult
        G = _eye(n, 3, dev)
        no = torch.zeros(n, dtype=torch.bool, device=dev)
        blit, geom = no.clone(), no.clone()

        # -- Blit group ("pixel blitting", sec. 2.2): exact on the pixel grid.
        on = gate("xflip", p * m["xflip"]) & (U("xflip") >= 0.5)  # flip half of the gated samples
        G = G @ _scale2d(torch.where(on, -1.0, 1.0).double(), torch.ones(n, dtype=torch.float64, device=dev))
        blit |= on
        k = torch.where(gate("rotate90", p * m["rotate90"]), torch.floor(U("rotate90") * 4), 0.0)
        k = k.clamp(0, 3).long()
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=dev)[k]  # exact
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=dev)[k]
        G = G @ _rotate2d(cos, -sin)  # inverse of a rotation by k * 90 degrees
        blit |= k != 0
        on = gate("xint", p * m["xint"])
        tx = torch.where(on, torch.round((U("xint_x") * 2 - 1) * self.xint_max * width), 0.0)
        ty = torch.where(on, torch.round((U("xint_y") * 2 - 1) * self.xint_max * height), 0.0)
        G = G @ _translate2d(-tx, -ty)
        blit |= (tx != 0) | (ty != 0)

        # -- General geometric group (sec. 2.2): needs resampling.
        on = gate("scale", p * m["scale"])
        s = torch.where(on, torch.exp2(Z("scale") * self.scale_std), 1.0)
        G = G @ _scale2d(1 / s, 1 / s)
        geom |= on
        # Two rotations, each with probability 1 - sqrt(1 - p), so that P(any) = p.
        p_rot = 1 - math.sqrt(max(0.0, 1 - min(1.0, p * m["rotate"]))) if m["rotate"] else 0.0
        for name in ("rotate_pre", "rotate_post"):
            if name == "rotate_post":  # anisotropic scaling sits between the two rotations
                on = gate("aniso", p * m["aniso"])
                s = torch.where(on, torch.exp2(Z("aniso") * self.aniso_std), 1.0)
                G = G @ _scale2d(1 / s, s)
                geom |= on
            on = gate(name, p_rot)
            theta = torch.where(on, (U(name) * 2 - 1) * math.pi * self.rotate_max, 0.0)
            G = G @ _rotate2d(torch.cos(theta), -torch.sin(theta))
            geom |= on
        on = gate("xfrac", p * m["xfrac"])
        tx = torch.where(on, Z("xfrac_x") * self.xfrac_std * width, 0.0)
        ty = torch.where(on, Z("xfrac_y") * self.xfrac_std * height, 0.0)
        G = G @ _translate2d(-tx, -ty)
        geom |= on
        return G, blit, geom

    def _colour(self, d: "_Draws", p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour matrices ``[N, 4, 4]`` and the ``[N]`` mask of recoloured samples."""
        # -- Colour group (sec. 2.2), on homogeneous RGB; luma axis v = [1, 1, 1] / sqrt(3).
        U, Z, gate, n, dev, m = d.U, d.Z, d.gate, d.n, d.device, self.mult
        C = _eye(n, 4, dev)
        color_on = torch.zeros(n, dtype=torch.bool, device=dev)
        v = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, device=dev) / math.sqrt(3)
        vv = torch.outer(v, v)                                         # [3, 3] projection on luma
        I3 = torch.eye(3, dtype=torch.float64, device=dev)

        def colour(A3: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
            A = _eye(n, 4, dev)
            if A3 is not None:
                A[:, :3, :3] = A3
            if t is not None:
                A[:, :3, 3] = t
            return A

        on = gate("brightness", p * m["brightness"])
        b = torch.where(on, Z("brightness") * self.brightness_std, 0.0)
        C = colour(t=b[:, None] * torch.ones(3, dtype=torch.float64, device=dev)) @ C  # add b to r, g, b
        color_on |= on
        on = gate("contrast", p * m["contrast"])
        c = torch.where(on, torch.exp2(Z("contrast") * self.contrast_std), 1.0)
        C = colour(A3=c[:, None, None] * I3) @ C  # scale about mid-grey (0 in [-1, 1])
        color_on |= on
        on = gate("lumaflip", p * m["lumaflip"]) & (U("lumaflip") >= 0.5)
        C = colour(A3=I3 - 2 * vv * on[:, None, None].double()) @ C  # Householder reflection of luma
        color_on |= on
        on = gate("hue", p * m["hue"])
        theta = torch.where(on, (U("hue") * 2 - 1) * math.pi * self.hue_max, 0.0)
        a = 1 / math.sqrt(3)
        cross = torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]],
                             dtype=torch.float64, device=dev)            # [v]_x, the cross product with v
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        C = colour(A3=cos * I3 + sin * cross + (1 - cos) * vv) @ C  # Rodrigues rotation about v
        color_on |= on
        on = gate("saturation", p * m["saturation"])
        s = torch.where(on, torch.exp2(Z("saturation") * self.saturation_std), 1.0)
        C = colour(A3=vv + (I3 - vv) * s[:, None, None]) @ C  # scale chroma, keep luma
        color_on |= on
        return C, color_on

    # ------------------------------------------------------------------ application
    def forward(self, images: torch.Tensor, p: float | None = None,
                generator: torch.Generator | int | None = None,
                batch_offset: int = 0, global_batch: int | None = None) -> torch.Tensor:
        """Augment ``images [N, C, H, W]`` (float, [-1, 1]) -> ``[N, C, H, W]``.

        Draws parameters for ``global_batch`` samples (default ``N``) from ``generator``
        and applies rows ``[batch_offset, batch_offset + N)`` of them: every rank of a
        data-parallel run calls this with the same generator state and its own offset.
        ``p=None`` uses ``self.p``; at ``p = 0`` the input is returned as is and no
        generator is needed.
        """
        p = self._p if p is None else float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AugmentPipe: p={p} is not a probability in [0, 1]")
        assert isinstance(images, torch.Tensor) and images.ndim == 4, "AugmentPipe: images must be [N, C, H, W]"
        if p == 0.0:
            return images
        n = images.shape[0]
        global_batch = n if global_batch is None else int(global_batch)
        if batch_offset < 0 or batch_offset + n > global_batch:
            raise ValueError(f"AugmentPipe: rows [{batch_offset}, {batch_offset + n}) do not fit in a "
                             f"global batch of {global_batch}")
        if generator is None:
            raise ValueError("AugmentPipe: pass generator= (a torch.Generator or an int seed) when p > 0; "
                             "the global RNG is never used so that resume and rank slicing are exact")
        params = self.sample_params(global_batch, generator)
        return self.apply(images, params[batch_offset:batch_offset + n], p=p)

    def apply(self, images: torch.Tensor, params: AugmentParams, p: float | None = None,
              second_order: bool = True) -> torch.Tensor:
        """Apply ``params`` (one row per image) at probability ``p`` to ``images [N, C, H, W]``.

        ``second_order=False`` when nothing differentiates through this call's backward
        (Gmain, Dmain): the warp then uses ``F.grid_sample`` (one kernel each way), which gives
        the same values (:func:`gan.ops.grid_sample.grid_sample_reflect`); R1 keeps the default.
        """
        p = self._p if p is None else float(p)
        assert isinstance(images, torch.Tensor) and images.ndim == 4, "AugmentPipe: images must be [N, C, H, W]"
        N, C, H, W = images.shape
        if len(params) != N:
            raise ValueError(f"AugmentPipe.apply: {len(params)} parameter rows for {N} images; "
                             "slice the global batch's params to this rank's rows")
        if p == 0.0 or N == 0:
            return images
        # Matrices and masks are built where the params live (the host for a CPU generator), so
        # choosing which samples to touch reads no device memory; the chosen indices and their
        # matrices then reach the device in one pinned, non-blocking copy (gan.util.to_device).
        t = self.transforms(params, H, W, p=p)
        groups = []
        resample = functools.partial(self._resample, second_order=second_order)
        for mask, op, mats in ((t.blit, self._blit, t.geom_inv), (t.geom, resample, t.geom_inv),
                               (t.color_on, self._recolor, t.color)):
            idx = torch.nonzero(mask).flatten()  # [k] on the host
            if idx.numel():
                groups.append((op, idx, mats[idx]))
        moved = to_device([u for _, idx, mats in groups for u in (idx, mats)], images.device)
        x = images
        for k, (op, _, _) in enumerate(groups):
            sel = moved[2 * k]
            x = x.index_copy(0, sel, op(x.index_select(0, sel), moved[2 * k + 1]))
        return x

    def _blit(self, x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Exact pixel copy for flips, 90-degree rotations and integer shifts (mirrored borders)."""
        n, C, H, W = x.shape
        key = ("blit", H, W, x.device)
        if key not in self._constants:  # [3, H*W] pixel centres, built once per size
            ys, xs = (torch.arange(k, dtype=torch.float64, device=x.device) - (k - 1) / 2 for k in (H, W))
            self._constants[key] = homogeneous_grid(ys, xs)
        src = G @ self._constants[key]                                           # [n, 3, H*W]
        sx = mirror_index(torch.round(src[:, 0] + (W - 1) / 2).long(), W)
        sy = mirror_index(torch.round(src[:, 1] + (H - 1) / 2).long(), H)
        flat = (sy * W + sx)[:, None, :].expand(n, C, H * W)                     # [n, C, H*W]
        return x.reshape(n, C, H * W).gather(2, flat).reshape(n, C, H, W)

    def _resample(self, x: torch.Tensor, G: torch.Tensor, second_order: bool = True) -> torch.Tensor:
        """Warp ``x [n, C, H, W]`` by ``G`` (output -> input pixels) without aliasing or black borders
        (appendix B: :func:`gan.ops.grid_sample.warp_reflect`)."""
        return warp_reflect(x, G, self.filter, self.delay, impl=self.impl, second_order=second_order,
                            cache=self._constants)

    @staticmethod
    def _recolor(x: torch.Tensor, Cm: torch.Tensor) -> torch.Tensor:
        """``x [n, C, H, W]`` -> ``A @ rgb + t`` per pixel; grayscale is treated as equal RGB."""
        n, C, H, W = x.shape
        A = Cm[:, :3, :3].to(x.dtype)      # [n, 3, 3]
        t = Cm[:, :3, 3].to(x.dtype)       # [n, 3]
        if C == 3:
            return torch.einsum("nij,njhw->nihw", A, x) + t[:, :, None, None]
        if C == 1:  # (r, g, b) = (y, y, y); the output grey is the mean of the output RGB
            return x * A.sum(dim=2).mean(dim=1)[:, None, None, None] + t.mean(dim=1)[:, None, None, None]
        raise ValueError(f"AugmentPipe: colour transforms need 1 or 3 channels, got {C}; "
                         "use a pipe without colour (augment.pipe=bg)")


# ----------------------------------------------------------------------------
# The p controller.


class AdaController:
    """Adjusts the augmentation probability from ``r_t = E[sign(D(real))]`` (paper sec. 3).

    It is the one owner of p: the pipe takes p per call, and
    ``gan.loss.StyleGAN2Loss(..., augment_pipe=pipe, ada=ada)`` passes ``ada.p`` to it, so
    nothing copies p around. Usage, once per training step (``batch`` is the *global*
    batch size)::

        ada.accumulate(d_real_logits)         # in the Dmain phase, this rank's logits
        ada.step(batch, all_reduce=fn)        # at the end of the step; may move ada.p

    No host-device sync per step: the sum of signs is a float64 scalar on the logits' device,
    the count a host float. In ``ada`` mode p (a host float: it decides on the host whether
    and how much to augment) needs the sum read once per ``interval`` steps, as the published
    loop reads its ADA statistics once per ``ada_interval``. In ``fixed`` and ``none`` mode p
    does not move and the step reads nothing; ``r_t`` is still measured and read only when
    :attr:`last_rt` is asked for (the trainer logs it at ticks). Under torchrun pass
    ``all_reduce=`` (an in-place sum) and every rank gets the same p. Sums of signs and counts
    are integers, exact in float64, so a resume from :meth:`state_dict` is bit-identical.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.p = float(cfg.p) if cfg.mode != "none" else 0.0
        self.steps = 0                     # training steps seen (adjustment every cfg.interval)
        self._last_rt = float("nan")       # r_t of the last completed interval, for logging
        self._rt_stats: torch.Tensor | None = None  # its [sum, count] on the device, not read yet
        self._sum = torch.zeros([], dtype=torch.float64)  # sum of signs, where the logits are
        self._count = 0.0                  # how many logits, on the host

    @property
    def step_size(self) -> float:
        """Unsigned change of p per adjustment for a batch of one image; times the batch size."""
        return self.cfg.interval / (self.cfg.kimg * 1000)

    @property
    def last_rt(self) -> float:
        """``r_t`` of the last completed interval (NaN before one); reads the device here, lazily."""
        if self._rt_stats is not None:
            total, count = self._rt_stats.tolist()
            self._rt_stats = None
            if count > 0:
                self._last_rt = total / count
        return self._last_rt

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add ``sign(D(real))`` of one batch of real logits (any shape) to the statistics."""
        if self._sum.device != real_logits.device:
            self._sum = to_device(self._sum, real_logits.device)
        self._sum += real_logits.detach().sign().sum(dtype=torch.float64)
        self._count += real_logits.numel()

    def step(self, batch_size: int, all_reduce: Callable[[torch.Tensor], None] | None = None) -> bool:
        """Count one training step; every ``interval`` steps update p. True when p was adjusted.

        ``p += sign(r_t - target) * batch_size * interval / (kimg * 1000)``, clamped to [0, 1]
        (paper eq. 1 and sec. 3: p can go from 0 to 1 in ``kimg`` thousand images).
        """
        self.steps += 1
        if self.steps % self.cfg.interval != 0:
            return False
        if all_reduce is None and self._count <= 0:
            return False  # nothing measured yet: keep waiting, keep p
        stats = torch.stack([self._sum, self._sum.new_full([], self._count)])  # [sum, count]; a fill, no copy
        if all_reduce is not None:
            all_reduce(stats)
        ada = self.cfg.mode == "ada"
        total, count = stats.tolist() if ada else (None, 1.0)  # ada: the one host read per interval
        if count <= 0:
            return False
        self._sum.zero_()
        self._count = 0.0
        if not ada:  # r_t stays on the device for last_rt; under torchrun no rank may have measured
            keep = all_reduce is not None and self._rt_stats is not None
            self._rt_stats = torch.where(stats[1] > 0, stats, self._rt_stats) if keep else stats
            return False
        self._rt_stats, self._last_rt = None, total / count
        direction = (self._last_rt > self.cfg.target) - (self._last_rt < self.cfg.target)  # sign()
        self.p = min(1.0, max(0.0, self.p + direction * batch_size * self.step_size))
        return True

    def state_dict(self) -> dict:
        """Plain data for the checkpoint (``augment_p`` and ``ada_stats``)."""
        return {"p": self.p, "steps": self.steps, "signs_sum": float(self._sum), "signs_count": self._count,
                "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        missing = {"p", "steps", "signs_sum", "signs_count"} - set(state)
        if missing:
            raise KeyError(f"AdaController.load_state_dict: checkpoint lacks {sorted(missing)}")
        p = float(state["p"])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AdaController.load_state_dict: p={p} is not a probability")
        self.p = p if self.cfg.mode == "ada" else self.p
        self.steps = int(state["steps"])
        self._last_rt, self._rt_stats = float(state.get("last_rt", float("nan"))), None
        self._sum = to_device(torch.tensor(float(state["signs_sum"]), dtype=torch.float64), self._sum.device)
        self._count = float(state["signs_count"])
