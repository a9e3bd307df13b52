"""Custom ops for the StyleGAN2 layers: fused bias+activation, up/FIR/down resampling, and
the bilinear sampler with mirrored borders that the augmentation pipe warps with.

Each compiled op is one module with a public function, a plain-torch reference twin
(``*_ref``), its own ``self_test`` and an ``impl=`` switch (``auto``, ``ref``, ``cpp``,
``cuda``). Compiled kernels are built lazily on first use by :mod:`gan.ops._build`
(which imports no op), never at import; :mod:`gan.ops.doctor` checks them all.
"""

from gan.ops.bias_act import activation_funcs, bias_act
from gan.ops.grid_sample import grid_sample_reflect
from gan.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["activation_funcs", "bias_act", "setup_filter", "upfirdn2d", "filter2d", "upsample2d",
           "downsample2d", "grid_sample_reflect"]
