"""Custom ops for the StyleGAN2 layers: fused bias+activation and up/FIR/down resampling.

Each op is one module with a public function, a plain-torch reference twin and an
``impl=`` switch (``auto``, ``ref``, ``cpp``, ``cuda``). Compiled kernels are built
lazily on first use by :mod:`gan.ops._build`, never at import.
"""

from gan.ops.bias_act import activation_funcs, bias_act
from gan.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["activation_funcs", "bias_act", "setup_filter", "upfirdn2d", "filter2d", "upsample2d",
           "downsample2d"]
