"""Bilinear sampling with mirrored borders, and the alias-free warp of the ADA pipe built on it.

The ADA pipe (:mod:`gan.augment`) warps images by sampling an upsampled copy on an
arbitrary grid (:func:`warp_reflect`), and lazy R1 differentiates through that warp's
backward. ``torch.nn.functional.grid_sample`` does not qualify there: torch 2.11 with CUDA
(which ``setup.cfg`` allows) lacks the derivative of ``aten::grid_sampler_2d_backward`` and
R1 fails. :func:`grid_sample_reflect` gives the same values from floor, ``gather`` and
arithmetic, which autograd differentiates to any order on every device, using public torch
APIs only; having no compiled kernel, it is its own reference (``tests/gan/test_ops.py``
checks it against ``F.grid_sample`` and checks its first and second derivatives
numerically). Where only first derivatives are needed (the pipe in Gmain and Dmain),
``second_order=False`` takes ``F.grid_sample`` itself: one kernel forward and one backward
instead of some twenty (``tests/gan/test_augment.py`` checks that both agree on the pipe's grids).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

from gan.ops.upfirdn2d import upfirdn2d, upsample2d

__all__ = ["grid_sample_reflect", "homogeneous_grid", "mirror_index", "warp_reflect"]


def mirror_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Fold integer indices into ``[0, size)`` by mirroring about the image edges.

    Symmetric extension (``-1 -> 0``, ``-2 -> 1``, ``size -> size - 1``), the same
    extension ``grid_sample(padding_mode='reflection', align_corners=False)`` uses, and
    valid for any distance from the image (it repeats with period ``2 * size``).
    """
    i = torch.remainder(i, 2 * size)
    return torch.where(i >= size, 2 * size - 1 - i, i)


def grid_sample_reflect(images: torch.Tensor, grid: torch.Tensor, second_order: bool = True) -> torch.Tensor:
    """Bilinear sampling with mirrored borders, in plain differentiable torch ops.

    Same result as ``F.grid_sample(images, grid, mode='bilinear', padding_mode='reflection',
    align_corners=False)``: ``images [N, C, H, W]``, ``grid [N, Ho, Wo, 2]`` holding
    ``(x, y)`` in ``[-1, 1]`` over the pixels' outer edges (values outside mirror back
    in, at any distance) -> ``[N, C, Ho, Wo]``.

    Why not ``F.grid_sample`` itself: lazy R1 differentiates through the pipe's
    backward, i.e. needs the derivative of ``aten::grid_sampler_2d_backward``, which
    torch 2.11 with CUDA does not implement ("derivative for
    aten::grid_sampler_2d_backward is not implemented"), and we support torch >= 2.11.
    Built from floor, ``gather`` and arithmetic, autograd differentiates this to any
    order, in the images and in the grid, on every device and torch version; CPU and
    GPU run the same code.

    Reflection then bilinear interpolation equals bilinear interpolation of the
    symmetrically extended image (``... p1 p0 | p0 p1 ... | p[W-1] p[W-2] ...``), so the
    four integer neighbours are folded back with :func:`mirror_index` and blended with
    the usual weights. Coordinates are computed in the grid's dtype (pass float64 for
    exact pixel positions); the weights are then cast to the images' dtype.
    Memory: four gathered ``[N, C, Ho*Wo]`` tensors and their ``[N, 1, Ho*Wo]`` indices.

    ``second_order=False``: ``F.grid_sample`` itself (bilinear, ``padding_mode='reflection'``,
    ``align_corners=False``), for callers that never differentiate the backward. It reflects
    the continuous coordinate about the outer edges (as often as needed) and then clamps it to
    the pixel centres, which for linear interpolation is the same as interpolating the
    symmetric extension: the values agree at any distance. It samples in float32 (images and
    grid), so positions are rounded to about 1e-7 of the image size whatever the images' dtype
    (a float16 grid would be off by a quarter pixel at 512 px); the result has the images' dtype.
    """
    if not second_order:
        return F.grid_sample(images.float(), grid.float(), mode="bilinear", padding_mode="reflection",
                             align_corners=False).to(images.dtype)
    assert images.ndim == 4 and grid.ndim == 4 and grid.shape[-1] == 2, (images.shape, grid.shape)
    assert grid.shape[0] == images.shape[0], (images.shape, grid.shape)
    N, C, H, W = images.shape
    _, Ho, Wo, _ = grid.shape
    # Normalised -> pixel coordinates (align_corners=False: -1 and 1 are the outer edges).
    px = ((grid[..., 0] + 1) * W - 1) / 2                                  # [N, Ho, Wo]
    py = ((grid[..., 1] + 1) * H - 1) / 2
    x0f, y0f = torch.floor(px), torch.floor(py)
    fx = (px - x0f).to(images.dtype).reshape(N, 1, Ho * Wo)                # [N, 1, Ho*Wo] in [0, 1)
    fy = (py - y0f).to(images.dtype).reshape(N, 1, Ho * Wo)
    x0, y0 = x0f.long(), y0f.long()
    xs = (mirror_index(x0, W), mirror_index(x0 + 1, W))
    ys = (mirror_index(y0, H) * W, mirror_index(y0 + 1, H) * W)
    flat = images.reshape(N, C, H * W)

    def tap(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (yi + xi).reshape(N, 1, Ho * Wo).expand(N, C, Ho * Wo)     # a view, not a copy
        return flat.gather(2, index)                                       # [N, C, Ho*Wo]

    top = tap(ys[0], xs[0]) * (1 - fx) + tap(ys[0], xs[1]) * fx
    bottom = tap(ys[1], xs[0]) * (1 - fx) + tap(ys[1], xs[1]) * fx
    return (top * (1 - fy) + bottom * fy).reshape(N, C, Ho, Wo)


def warp_reflect(x: torch.Tensor, G: torch.Tensor, f: torch.Tensor, delay: float, impl: str = "auto",
                 second_order: bool = True, cache: dict | None = None) -> torch.Tensor:
    """Warp ``x [n, C, H, W]`` by ``G [n, 3, 3]`` (float64, output -> input pixels, centred)
    without aliasing or black borders (Karras et al. 2020, ADA, appendix B).

    Pad by mirroring, upsample 2x with the orthogonal low-pass ``f`` (``sym6``), sample
    bilinearly (mirroring again beyond the padded area; ``F.grid_sample`` when ``second_order``
    is False and ``impl`` is not the reference), then low-pass and downsample 2x with
    the mirrored filter. An identity ``G`` gives back ``x`` up to float rounding. ``delay``:
    how far 2x upsampling with ``f`` shifts low frequencies (input pixels). ``cache``: a dict
    that keeps the per-size index and grid constants between calls (kernels not relaunched).
    """
    n, C, H, W = x.shape
    L = f.shape[0]                       # 12 taps
    M = L // 2 - 1                       # extra output samples per side for the downsampling filter
    # Mirrored margin kept around the image: at least the 3 pixels the extra samples
    # reach, and a quarter of the image so that typical shifts see a true mirror
    # image; farther out the sampler folds the padded image back (still seamless).
    ey, ex = max(M // 2 + 1, H // 4), max(M // 2 + 1, W // 4)
    r = L // 4 + 1                       # reach of the upsampling filter, in input pixels
    dev, f64 = x.device, torch.float64

    def constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if cache is None:
            return make()
        key = (*key, H, W, L, delay, dev)
        if key not in cache:
            cache[key] = make()
        return cache[key]

    iy = constant(("iy",), lambda: mirror_index(torch.arange(-ey - r, H + ey + r, device=dev), H))
    ix = constant(("ix",), lambda: mirror_index(torch.arange(-ex - r, W + ex + r, device=dev), W))
    xp = x.index_select(2, iy).index_select(3, ix)                     # [n, C, H+2ey+2r, W+2ex+2r]
    up = upsample2d(xp, f, up=2, impl=impl)                            # twice that
    up = up[:, :, 2 * r:up.shape[2] - 2 * r, 2 * r:up.shape[3] - 2 * r]  # [n, C, 2H+4ey, 2W+4ex]

    # Output samples at twice the resolution, with M extra on each side so that the
    # downsampling filter below needs no padding: sample j sits at output pixel
    # (j - M + 0.5) / 2 - 0.5. An identity warp samples the upsampled image exactly
    # on its grid, and the orthogonal filter pair then reconstructs the input.
    #
    # sym6 is not symmetric: its taps' centroid lies ``delay`` input pixels off the middle,
    # so the upsampled image is shifted by ``delay`` and the downsampling shifts back by as
    # much. That cancels for shifts but not for rotations and scalings, which must
    # therefore turn about the image centre as seen in the upsampled frame.
    cy, cx = (H - 1) / 2 + delay, (W - 1) / 2 + delay
    Ho, Wo = 2 * H + 2 * M, 2 * W + 2 * M
    pos = constant(("pos",), lambda: homogeneous_grid(
        (torch.arange(Ho, dtype=f64, device=dev) - M + 0.5) / 2 - 0.5 - cy,
        (torch.arange(Wo, dtype=f64, device=dev) - M + 0.5) / 2 - 0.5 - cx))  # [3, Ho*Wo]
    src = G @ pos                                                      # [n, 3, Ho*Wo] centered input pixels
    # The upsampled image spans input pixels [-ex - 0.5, W + ex - 0.5]; with
    # align_corners=False its edges are -1 and 1. Beyond them the sampler mirrors.
    # The grid is float64 so that positions are exact whatever the image dtype.
    gx = (2 * (src[:, 0] + cx + ex) + 1) / (W + 2 * ex) - 1
    gy = (2 * (src[:, 1] + cy + ey) + 1) / (H + 2 * ey) - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(n, Ho, Wo, 2)         # [n, Ho, Wo, 2]
    # F.grid_sample where first derivatives suffice, unless the reference is asked for
    # (impl='ref' or $MTF_OPS=ref, as gan.ops._build.choose_impl reads it).
    ref = impl == "ref" or os.environ.get("MTF_OPS", "").strip().lower() == "ref"
    warped = grid_sample_reflect(up, grid, second_order or ref)        # [n, C, 2H+2M, 2W+2M]
    out = upfirdn2d(warped, f, down=2, flip_filter=True, impl=impl)    # [n, C, H, W]
    assert out.shape == x.shape, (out.shape, x.shape)
    return out


def homogeneous_grid(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Homogeneous ``[x, y, 1]`` columns ``[3, len(ys) * len(xs)]`` of the grid ``ys`` x ``xs``, row-major."""
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten(), torch.ones_like(xx.flatten())])
