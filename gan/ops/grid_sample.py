"""Bilinear sampling with mirrored borders that autograd differentiates to any order.

The ADA pipe (:mod:`gan.augment`) warps images by sampling an upsampled copy on an
arbitrary grid, and lazy R1 differentiates through that warp's backward.
``torch.nn.functional.grid_sample`` does not qualify: torch 2.11 with CUDA (which
``setup.cfg`` allows) lacks the derivative of ``aten::grid_sampler_2d_backward`` and R1
fails there. :func:`grid_sample_reflect` gives the same values from floor, ``gather``
and arithmetic, which autograd differentiates to any order on every device, using
public torch APIs only; having no compiled kernel, it is its own reference
(``tests/gan/test_ops.py`` checks it against ``F.grid_sample`` and checks its first
and second derivatives numerically).
"""

from __future__ import annotations

import torch

__all__ = ["grid_sample_reflect", "mirror_index"]


def mirror_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Fold integer indices into ``[0, size)`` by mirroring about the image edges.

    Symmetric extension (``-1 -> 0``, ``-2 -> 1``, ``size -> size - 1``), the same
    extension ``grid_sample(padding_mode='reflection', align_corners=False)`` uses, and
    valid for any distance from the image (it repeats with period ``2 * size``).
    """
    i = torch.remainder(i, 2 * size)
    return torch.where(i >= size, 2 * size - 1 - i, i)


def grid_sample_reflect(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
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
    """
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
