"""Upsample, pad, FIR-filter and downsample a batch of images in one op.

StyleGAN2 resamples with a low-pass FIR filter instead of nearest/bilinear
interpolation to avoid aliasing (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN", sec. 4 and appendix B; the [1,3,3,1] binomial filter of
Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"). The semantics
follow scipy.signal.upfirdn and the published StyleGAN2-ADA op exactly, so a network
ported from there gives the same outputs:

1. upsample by inserting ``up - 1`` zeros after each pixel;
2. pad with zeros ``[x0, x1, y0, y1]`` (negative = crop);
3. convolve with the FIR filter ``f`` (true convolution, i.e. correlation with the
   flipped filter, unless ``flip_filter``), keeping only fully-overlapping outputs;
4. keep every ``down``-th pixel.

Implementations: ``ref`` (:func:`upfirdn2d_ref`, plain torch: reshape, ``F.pad``,
depthwise ``F.conv2d``), ``cpp`` and ``cuda`` (``upfirdn2d.cpp`` / ``upfirdn2d.cu`` sharing
``upfirdn2d.h``). The gradient of upfirdn2d is again an upfirdn2d (up and down swapped,
filter flipped, padding mirrored), so the compiled paths differentiate to any order.
:func:`self_test` checks the kernels against the reference; the build manager runs it
on the first load of the ``cuda`` target on a GPU, ``mtf-gan doctor`` on every target.

CUDA kernels: ``cuda`` runs the per-pixel kernel (one thread per output) unless
``MTF_OPS_CUDA_TILED=1`` is set, which sends every ``cuda`` call (``impl='cuda'`` and
``'auto'`` on CUDA tensors), its gradients included, through the tiled kernel: an
output tile per block, its input staged in shared memory, 32-bit indices, compiled
specializations for the passes StyleGAN2 runs (``upfirdn2d.h``). The tiled kernel
stays behind this switch until its parity tests (``pytest -m cuda tests/gan/test_ops.py``)
have passed on a GPU; its CPU twin (``TiledKernel`` on CPU tensors: the same tile math
run block by block) is tested on every run.

The compiled paths prepare the taps (gain, rounding to half for half inputs, flip)
once per filter tensor and cache them (:func:`_prepared_taps`), so a steady-state call
launches no filter-preparation kernel and copies no filter to the device.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from gan.ops import _build

IMPLS = ("auto", "ref", "cpp", "cuda")

#: Environment switch for the tiled CUDA kernel (see the module docstring).
TILED_ENV = "MTF_OPS_CUDA_TILED"


def _parse_scaling(scaling: int | Sequence[int]) -> tuple[int, int]:
    """``s`` or ``(sx, sy)`` -> ``(sx, sy)``, each an int >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2
            and all(isinstance(s, int) and s >= 1 for s in scaling)):
        raise ValueError(f"upfirdn2d: up/down must be an int >= 1 or a pair (x, y) of them, got {scaling!r}")
    sx, sy = scaling
    return sx, sy


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` -> ``(x0, x1, y0, y1)``."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and len(padding) in (2, 4)
            and all(isinstance(p, int) for p in padding)):
        raise ValueError(f"upfirdn2d: padding must be an int, (x, y) or (x0, x1, y0, y1) of ints, got {padding!r}")
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(fw, fh)`` of a 1-D separable (``[k]`` -> ``k x k``) or 2-D ``[fh, fw]`` filter."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), "upfirdn2d: f must be a 1-D or 2-D tensor"
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    assert fw >= 1 and fh >= 1
    return fw, fh


def setup_filter(f, device: torch.device = torch.device("cpu"), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """Turn a list/array/tensor of taps into the float32 filter that :func:`upfirdn2d` takes.

    Args:
        f:           ``[fh, fw]`` (non-separable), ``[taps]`` (separable), ``[]`` (impulse)
                     or ``None`` (identity).
        normalize:   divide by the sum so a constant (DC) signal keeps its magnitude.
        flip_filter: flip the taps.
        gain:        overall gain, spread as ``gain ** (ndim / 2)`` over the dimensions.
        separable:   ``None`` = 1-D for 1-D input with >= 8 taps, else the outer product
                     (as published: short filters such as ``[1, 3, 3, 1]`` become a 4x4
                     2-D filter, which keeps parameter/buffer shapes of published
                     checkpoints; long ones stay separable because that is cheaper).

    Returns:
        float32 ``[taps]`` (separable) or ``[fh, fw]`` on ``device``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: f must be a scalar, 1-D or 2-D and non-empty, got shape {list(f.shape)}")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("setup_filter: separable=True needs a 1-D filter")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 1,
              down: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, flip_filter: bool = False,
              gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Pad, upsample, filter and downsample ``x`` ``[N, C, H, W]`` with the FIR filter ``f``.

    Args:
        x:           ``[N, C, H, W]`` float16/32/64.
        f:           float32 ``[fh, fw]``, ``[taps]`` (separable) or ``None`` (identity),
                     usually from :func:`setup_filter`.
        up, down:    int or ``(x, y)`` integer factors.
        padding:     int, ``(x, y)`` or ``(x0, x1, y0, y1)`` with respect to the
                     upsampled image; negative values crop.
        flip_filter: ``False`` = convolution, ``True`` = correlation.
        gain:        overall gain (``gain ** (ndim / 2)`` per filter pass).
        impl:        ``'auto'`` (the fixed table ``gan.ops._build.AUTO_TABLE`` by shape class
                     up/down/filter; ``cuda`` for CUDA tensors; ``$MTF_OPS=ref`` sends every
                     ``'auto'`` call to the reference), ``'ref'``, ``'cpp'`` or ``'cuda'``.

    Returns:
        ``[N, C, (H*upy + y0 + y1 - fh) // downy + 1, (W*upx + x0 + x1 - fw) // downx + 1]``.
    """
    assert isinstance(x, torch.Tensor)
    if impl not in IMPLS:
        raise ValueError(f"upfirdn2d: impl={impl!r}; choose one of {IMPLS}")
    chosen = _build.choose_impl("upfirdn2d", x, impl, shape_class=_shape_class(x, f, up, down))
    if chosen != "ref":
        plugin = _build.get_plugin(chosen, verify=self_test)
        if plugin is not None:
            if chosen == "cuda" and tiled_enabled():
                plugin = tiled(plugin)
            return upfirdn2d_compiled(x, f, up, down, padding, flip_filter, gain, plugin)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def tiled_enabled() -> bool:
    """Whether ``$MTF_OPS_CUDA_TILED`` asks for the tiled CUDA kernel (``1``/``0``, unset = no)."""
    value = os.environ.get(TILED_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{TILED_ENV}={value!r} is not understood; set it to 1 (tiled CUDA kernel) or 0 (per-pixel).")


class TiledKernel:
    """A plugin's tiled upfirdn2d in the shape of a plugin (``.upfirdn2d(x, w, upx, ...)``).

    On CUDA tensors the tiled kernel; on CPU tensors its emulation (the same tile math run
    block by block, thread by thread), which the CPU parity tests check. ``max_grid_z``
    caps the channel images one launch has in flight, so tests can make blocks loop.
    """

    def __init__(self, plugin: Any, max_grid_z: int = 65535) -> None:
        self.plugin, self.max_grid_z = plugin, max_grid_z

    def upfirdn2d(self, x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1):
        return self.plugin.upfirdn2d_tiled(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1,
                                           self.max_grid_z)


_tiled_kernels: dict[int, TiledKernel] = {}


def tiled(plugin: Any) -> TiledKernel:
    """The (one) :class:`TiledKernel` of ``plugin``."""
    kernel = _tiled_kernels.get(id(plugin))
    if kernel is None or kernel.plugin is not plugin:
        kernel = _tiled_kernels[id(plugin)] = TiledKernel(plugin)
    return kernel


def _shape_class(x, f, up, down) -> str:
    """The shape class the ``auto`` table is keyed on (see ``_build.AUTO_TABLE``)."""
    if max(_parse_scaling(up)) > 1:
        return "up"
    if max(_parse_scaling(down)) > 1:
        return "down"
    return "filter"


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
                  flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Reference twin of :func:`upfirdn2d` in plain torch ops (reshape, pad, depthwise conv2d, strided slice)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4, "upfirdn2d: x must be [N, C, H, W]"
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), "upfirdn2d: f must be 1-D or 2-D"
    assert not f.requires_grad, "upfirdn2d: gradients with respect to the filter are not supported"
    n, c, h, w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    # 1. Upsample: a zero after each pixel, via a [.., H, 1, W, 1] view padded to [.., H, upy, W, upx].
    x = x.reshape([n, c, h, 1, w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, h * upy, w * upx])  # [N, C, H*upy, W*upx]

    # 2. Pad (positive part) then crop (negative part).
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]

    # 3. Filter: conv2d correlates, so flip to convolve unless the caller asked for correlation.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].repeat([c, 1, 1, 1])  # [C, 1, fh, fw]
        x = F.conv2d(x, weight, groups=c)
    else:
        weight = f[None, None].repeat([c, 1, 1])  # [C, 1, k]
        x = F.conv2d(x, weight.unsqueeze(2), groups=c)  # horizontal pass, [C, 1, 1, k]
        x = F.conv2d(x, weight.unsqueeze(3), groups=c)  # vertical pass,   [C, 1, k, 1]

    # 4. Downsample by keeping every down-th pixel.
    return x[:, :, ::downy, ::downx]


def upfirdn2d_compiled(x: torch.Tensor, f: torch.Tensor | None, up, down, padding, flip_filter: bool,
                       gain: float, plugin) -> torch.Tensor:
    """Run the compiled kernels of ``plugin`` (any object with the extension's ``upfirdn2d``)
    with the reference's semantics; what :func:`upfirdn2d` calls once it has chosen a plugin."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4, "upfirdn2d: x must be [N, C, H, W]"
    if f is None:
        f = _identity_filter(x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), "upfirdn2d: f must be 1-D or 2-D"
    assert not f.requires_grad, "upfirdn2d: gradients with respect to the filter are not supported"
    params = (*_parse_scaling(up), *_parse_scaling(down), *_parse_padding(padding), bool(flip_filter), float(gain))
    return _Upfirdn2dCompiled.apply(x, f, params, plugin)


def self_test(plugin, device: torch.device, dtype: torch.dtype = torch.float32) -> list[str]:
    """This op's self-test: the cases in which the compiled kernels of ``plugin`` disagree
    with :func:`upfirdn2d_ref` (up, down, filter; 4 and 9 taps) on small inputs; empty when all agree.

    Passed as ``verify`` to :func:`gan.ops._build.get_plugin`; :mod:`gan.ops.doctor` runs it too.
    """
    x, _, tol = _build.self_test_inputs(device, dtype)
    kernels = [("", plugin)]
    if torch.device(device).type == "cuda" and tiled_enabled() and hasattr(plugin, "upfirdn2d_tiled"):
        # the kernel the cuda calls run
        kernels.append((" (tiled)", tiled(plugin)))
    bad = []
    for name, kernel in kernels:
        for kw in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=[1, 1, 1, 1]), dict(padding=[1, 2, 2, 1])):
            for taps in ([1, 3, 3, 1], [1, 2, 3, 4, 5, 4, 3, 2, 1]):
                f = setup_filter(taps, device=device)
                want = upfirdn2d_ref(x, f, **kw)
                got = upfirdn2d_compiled(x, f, kw.get("up", 1), kw.get("down", 1), kw["padding"], False, 1, kernel)
                if got.shape != want.shape or not torch.allclose(got.float(), want.float(), **tol):
                    bad.append(f"upfirdn2d{name} {kw} taps={len(taps)}")
    return bad


# ---------------------------------------------------------------------------- prepared taps

#: id(filter) -> {(device, half, gain, flip): (version, data_ptr, prepared taps)}; a filter's
#: entry leaves with it (weakref.finalize). See :func:`_prepared_taps`.
_taps_cache: dict[int, dict[tuple, tuple[int, int, tuple[torch.Tensor, ...]]]] = {}
#: Most filters cached at once (a network has tens, one per resampling layer and copy);
#: past it, further filters are prepared on every call.
TAPS_CACHE_FILTERS = 4096
_taps_lock = threading.Lock()
_identity_filters: dict[torch.device, torch.Tensor] = {}


def _identity_filter(device: torch.device) -> torch.Tensor:
    """``[[1.0]]`` on ``device``, made once per device (``f=None``)."""
    f = _identity_filters.get(device)
    if f is None:
        f = _identity_filters[device] = torch.ones([1, 1], dtype=torch.float32, device=device)
    return f


def _prepare_taps(f: torch.Tensor, device: torch.device, half: bool, gain: float,
                  flip_filter: bool) -> tuple[torch.Tensor, ...]:
    """What the kernels take: float32 taps on ``device``, times the gain, rounded to half
    precision for half inputs (as the reference, which filters in the input dtype) and
    flipped unless ``flip_filter`` (the kernels correlate). ``(w [fh, fw],)`` for a 2-D
    filter, ``(w [1, k], w [k, 1])`` (horizontal, vertical pass) for a separable one."""
    with torch.no_grad():
        w = f.to(device=device, dtype=torch.float32) * (gain ** (f.ndim / 2))
        if half:
            w = w.half().float()
        if not flip_filter:
            w = w.flip(list(range(w.ndim)))
        return (w,) if w.ndim == 2 else (w[None, :], w[:, None])


def _prepared_taps(f: torch.Tensor, device: torch.device, half: bool, gain: float,
                   flip_filter: bool) -> tuple[torch.Tensor, ...]:
    """:func:`_prepare_taps`, cached per filter tensor and (device, half or not, gain, flip),
    valid while the filter's version counter and storage are unchanged (an in-place change
    of the filter bumps the version, so it is seen).

    Preparing the taps costs 2-4 small kernels, and a host-to-device copy when the
    filter lives on the CPU, on every call; the layers call with the same filter buffers
    every step. The cache holds no reference to the filter: a filter's entry (its
    prepared taps) is dropped when the filter is freed, so a dead module leaves nothing
    behind, and at most :data:`TAPS_CACHE_FILTERS` filters are cached.
    """
    try:
        version = f._version  # bumped by every in-place change; the one place torch exposes it
    except RuntimeError:      # inference-mode tensors have no version counter: no caching
        return _prepare_taps(f, device, half, gain, flip_filter)
    key = (device, half, gain, flip_filter)
    entry = _taps_cache.get(id(f), {}).get(key)
    if entry is not None and entry[0] == version and entry[1] == f.data_ptr():
        return entry[2]
    taps = _prepare_taps(f, device, half, gain, flip_filter)
    with _taps_lock:
        per_filter = _taps_cache.get(id(f))
        if per_filter is None:
            if len(_taps_cache) >= TAPS_CACHE_FILTERS:
                return taps
            per_filter = _taps_cache[id(f)] = {}
            weakref.finalize(f, _taps_cache.pop, id(f), None)  # runs when f is freed, before its id is reused
        per_filter[key] = (version, f.data_ptr(), taps)
    return taps


class _Upfirdn2dCompiled(torch.autograd.Function):
    """upfirdn2d through the compiled kernels; its gradient is again an upfirdn2d.

    The adjoint of "upsample by u, pad p, convolve with f, downsample by d" is
    "upsample by d, pad p', convolve with flipped f, downsample by u", with p'
    chosen so the result has the input's shape; being the same Function, the
    backward is differentiable too (any order).
    """

    @staticmethod
    def forward(ctx, x, f, params, plugin):
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain = params
        taps = _prepared_taps(f, x.device, x.dtype == torch.float16, gain, flip_filter)
        if len(taps) == 1:
            y = plugin.upfirdn2d(x, taps[0], upx, upy, downx, downy, padx0, padx1, pady0, pady1)
        else:  # separable: horizontal pass [1, k], then vertical pass [k, 1], as the reference does
            y = plugin.upfirdn2d(x, taps[0], upx, 1, downx, 1, padx0, padx1, 0, 0)
            y = plugin.upfirdn2d(y, taps[1], 1, upy, 1, downy, 0, 0, pady0, pady1)
        ctx.save_for_backward(f)
        ctx.x_shape = x.shape
        ctx.params, ctx.plugin = params, plugin
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain = ctx.params
        _, _, ih, iw = ctx.x_shape
        _, _, oh, ow = dy.shape
        fw, fh = _get_filter_size(f)
        p = (fw - padx0 - 1, iw * upx - ow * downx + padx0 - upx + 1,
             fh - pady0 - 1, ih * upy - oh * downy + pady0 - upy + 1)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = _Upfirdn2dCompiled.apply(dy, f, (downx, downy, upx, upy, *p, not flip_filter, gain), ctx.plugin)
        return dx, None, None, None


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: int | Sequence[int] = 0,
             flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter ``x`` ``[N, C, H, W]`` with ``f``, padded so the output keeps ``H x W``.

    ``padding`` (with respect to the output) is added on top; negative crops.
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 2,
               padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1,
               impl: str = "auto") -> torch.Tensor:
    """Upsample ``x`` ``[N, C, H, W]`` -> ``[N, C, H*upy, W*upx]`` with the FIR filter ``f``.

    The gain is multiplied by ``upx * upy`` to make up for the inserted zeros, so a
    normalized filter keeps the mean. ``padding`` is with respect to the output.
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
         pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: int | Sequence[int] = 2,
                 padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1,
                 impl: str = "auto") -> torch.Tensor:
    """Downsample ``x`` ``[N, C, H, W]`` -> ``[N, C, H/downy, W/downx]`` after filtering with ``f``.

    ``padding`` is with respect to the input.
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
         pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
