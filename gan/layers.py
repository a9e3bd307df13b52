"""Building blocks of the StyleGAN2-ADA generator and discriminator.

Everything here follows Karras et al. 2020, "Analyzing and Improving the Image Quality
of StyleGAN" (StyleGAN2, CVPR 2020) and Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data" (StyleGAN2-ADA, NeurIPS 2020), and computes in
the same order as the published PyTorch networks (NVlabs/stylegan2-ada-pytorch, commit
d72cc7d) so that their weights produce our outputs to float32 rounding (see
``tests/gan/test_networks.py``). The code is our own; only the arithmetic is shared.

* Equalized learning rate (Karras et al. 2018, "Progressive Growing of GANs", sec. 4.1):
  weights are stored as N(0, 1) / lr_multiplier and scaled at run time by
  ``lr_multiplier / sqrt(fan_in)``, so Adam's per-parameter step sizes act on
  comparably scaled parameters in every layer.
* Weight modulation and demodulation (StyleGAN2, sec. 2.2, eq. 1-3) in
  :func:`modulated_conv2d`, either "fused" (one grouped convolution with per-sample
  weights) or as activation scaling before and after a shared convolution.
* Up/downsampling convolutions with the [1, 3, 3, 1] binomial FIR low-pass filter
  (StyleGAN's "bilinear" resampling, after Zhang 2019, "Making Convolutional Networks
  Shift-Invariant Again") in :func:`conv2d_resample`, built on
  :func:`gan.ops.upfirdn2d` and public ``F.conv2d`` / ``F.conv_transpose2d`` only, so
  double backward (R1, path length) works on every torch release without private
  ``aten::*_backward`` operators.
* Minibatch standard deviation (Karras et al. 2018, sec. 3) in :class:`MinibatchStd`.

Bias, activation, activation gain and clamping always go through :func:`gan.ops.bias_act`
and resampling through :mod:`gan.ops.upfirdn2d`, so compiled kernels change no code here.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from gan.ops import activation_funcs, bias_act, setup_filter, upfirdn2d

__all__ = [
    "DEFAULT_FILTER",
    "check_shape",
    "normalize_2nd_moment",
    "conv2d_resample",
    "modulated_conv2d",
    "FullyConnected",
    "EqualizedConv2d",
    "SynthesisLayer",
    "ToRGB",
    "MinibatchStd",
]

#: The binomial FIR filter of StyleGAN/StyleGAN2 resampling, 1-D taps before normalization.
DEFAULT_FILTER: tuple[int, ...] = (1, 3, 3, 1)

#: ``(layer key, n, resolution) -> noise [n, 1, R, R]``: where a synthesis layer's random noise
#: comes from when the caller, not the global RNG, decides it (see :class:`SynthesisLayer`).
NoiseSource = Callable[[str, int, int], torch.Tensor]


def check_shape(t: torch.Tensor, shape: Sequence[Optional[int]], what: str) -> None:
    """Assert ``t.shape`` matches ``shape`` (``None`` = any size) with a message naming ``what``."""
    ok = t.ndim == len(shape) and all(s is None or int(a) == s for a, s in zip(t.shape, shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{what}: expected shape {want}, got {list(t.shape)}")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root mean square along ``dim`` (StyleGAN's "pixel norm" of z).

    Normalizing z (and the class embedding) keeps the mapping network's input on a
    sphere, so its scale carries no information (the "pixel norm" of Karras et al. 2018,
    sec. 4.2, applied to the latent).
    """
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------
# Convolution with FIR up/downsampling.


def _filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(width, height) of a 1-D (separable) or 2-D filter; (1, 1) for ``None``."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1,
                    down: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """Convolve ``x`` with ``w`` and resample by ``up`` or ``down`` with the FIR filter ``f``.

    Computes, up to float rounding, ``downsample(conv(upsample(x)))`` where upsampling
    inserts zeros and low-passes with ``f`` (gain ``up**2`` to keep the signal
    magnitude) and downsampling low-passes with ``f`` then keeps every ``down``-th
    pixel; ``padding`` is the symmetric convolution padding with respect to the
    upsampled image. Rather than run the three steps at full resolution, each case
    folds the resampling into the convolution's stride (as in the published
    ``conv2d_resample``, whose order of operations we keep for float parity):

    * ``up > 1``: a transposed convolution with stride ``up`` (which is the zero
      insertion and the convolution in one), then the FIR filter on the result;
    * ``down > 1``: the FIR filter (no decimation), then a convolution with stride
      ``down``; for a 1x1 kernel the FIR filter decimates first and the 1x1
      convolution runs on the small image;
    * neither: one padded ``F.conv2d``.

    Orientation of ``w``: without upsampling, ``conv`` is a correlation (``F.conv2d``);
    with upsampling it is a true convolution (``w`` flipped), because the transposed
    convolution uses the stored weight as is. This is what the published networks
    compute (their ``flip_weight`` is ``up == 1``), and it matters for loading their
    weights; for a freshly trained network either orientation would be as good.

    Args:
        x: ``[N, C_in, H, W]``.
        w: ``[C_out, C_in // groups, kh, kw]`` of ``x``'s dtype.
        f: FIR filter from :func:`gan.ops.setup_filter` (float32), ``None`` = identity.
        up, down: integer factors; at most one of them may exceed 1.
        padding: symmetric padding of the convolution, in pixels of the upsampled image.
        groups: as in ``F.conv2d`` (the fused modulated convolution uses one group per sample).

    Returns:
        ``[N, C_out, H * up // down, W * up // down]`` for ``padding = kh // 2``.
    """
    check_shape(x, [None, None, None, None], "conv2d_resample x")
    check_shape(w, [None, None, None, None], "conv2d_resample w")
    assert w.dtype == x.dtype, f"conv2d_resample: w is {w.dtype} but x is {x.dtype}"
    assert up >= 1 and down >= 1 and not (up > 1 and down > 1), "conv2d_resample: up or down, not both"
    c_out, c_in_per_group, kh, kw = (int(s) for s in w.shape)
    assert kh == kw, "conv2d_resample: square kernels only"
    k = kw
    fw, fh = _filter_size(f)
    assert fw == fh, "conv2d_resample: square filters only"

    if up > 1:
        # Padding (before, after) of the zero-stuffed image that the FIR filter needs so that
        # the output keeps `H * up` pixels, plus the convolution's own padding.
        before = padding + (fw + up - 1) // 2
        after = padding + (fw - up) // 2
        if k == 1:
            # 1x1 kernel: convolve at low resolution, then upsample (cheaper, same result).
            x = F.conv2d(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=[before, after, before, after], gain=up ** 2)
        # A stride-`up` transposed convolution already produces `k - 1` (before) and
        # `k - up` (after) extra border pixels; account for them, and let the transposed
        # convolution crop whatever both sides have in excess.
        before -= k - 1
        after -= k - up
        crop = max(min(-before, -after), 0)
        # conv_transpose2d wants [C_in, C_out // groups, k, k] per group.
        if groups == 1:
            wt = w.transpose(0, 1)  # [C_in, C_out, k, k]
        else:
            wt = w.reshape(groups, c_out // groups, c_in_per_group, k, k).transpose(1, 2)
            wt = wt.reshape(groups * c_in_per_group, c_out // groups, k, k)
        x = F.conv_transpose2d(x, wt, stride=up, padding=crop, groups=groups)  # [N, C_out, ~H*up, ~W*up]
        pad = [before + crop, after + crop, before + crop, after + crop]
        return upfirdn2d(x, f, padding=pad, gain=up ** 2)

    if down > 1:
        before = padding + (fw - down + 1) // 2
        after = padding + (fw - down) // 2
        pad = [before, after, before, after]
        if k == 1:
            # 1x1 kernel: decimate first, then convolve the small image.
            x = upfirdn2d(x, f, down=down, padding=pad)
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=pad)  # low-pass only, [N, C_in, H + pad, W + pad]
        return F.conv2d(x, w, stride=down, groups=groups)

    return F.conv2d(x, w, padding=padding, groups=groups)


# ----------------------------------------------------------------------------
# Modulated convolution (StyleGAN2, sec. 2.2).


def modulated_conv2d(
    x: torch.Tensor,                        # [N, C_in, H, W]
    weight: torch.Tensor,                   # [C_out, C_in, k, k], unscaled (demodulation normalizes it)
    styles: torch.Tensor,                   # [N, C_in] per-sample scales s_i (eq. 1)
    noise: Optional[torch.Tensor] = None,   # added after the convolution, broadcastable to the output
    up: int = 1,                            # integer upsampling factor
    down: int = 1,                          # integer downsampling factor
    padding: int = 0,                       # convolution padding w.r.t. the upsampled image
    resample_filter: Optional[torch.Tensor] = None,  # FIR filter from setup_filter()
    demodulate: bool = True,                # divide by the expected output std (eq. 3)?
    fused_modconv: bool = True,             # one grouped conv with per-sample weights?
) -> torch.Tensor:
    """Convolve each sample with its own style-modulated, demodulated weights.

    Modulation scales the input channels of the weights by the style,
    ``w'_ijk = s_i w_ijk`` (StyleGAN2 eq. 1); demodulation divides each output channel by
    ``sqrt(sum_ik w'_ijk^2 + eps)`` (eq. 3), which restores unit output variance and
    replaces AdaIN's data-dependent instance normalization with a statistical one,
    removing the "droplet" artifacts (sec. 2.2).

    ``fused_modconv=True`` builds the per-sample weights ``[N * C_out, C_in, k, k]`` and
    runs one grouped convolution (fast at inference). ``False`` instead scales the
    activations by ``s`` before and by the demodulation coefficients after an ordinary
    convolution with the shared weight; the two are equal in exact arithmetic, and the
    unfused form is what training and fp16 use (the published networks make the same choice).

    In float16, the weights and styles are first divided by their maxima: demodulation
    cancels any per-output-channel scale of ``w'`` (and the style scale), and this keeps
    the intermediate products from overflowing.

    Returns:
        ``[N, C_out, H * up // down, W * up // down]`` in ``x``'s dtype.
    """
    n = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    check_shape(x, [None, c_in, None, None], "modulated_conv2d x")
    check_shape(styles, [n, c_in], "modulated_conv2d styles")

    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(c_in * kh * kw)
                           / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))  # [O, I, k, k]
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)  # [N, I]

    if not fused_modconv:
        dcoefs = None
        if demodulate:
            # eq. 3 without materializing the [N, O, I, k, k] modulated weights:
            # sum_ik (s_i w_oik)^2 = sum_i s_i^2 (sum_k w_oik^2), a [N, I] x [I, O] product.
            # Equal to the fused form up to float rounding, and in training (where the
            # unfused form runs) it saves the 5-D products and their gradients.
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)  # [N, I, H, W]
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding)
        if demodulate and noise is not None:
            # Same arithmetic as a fused multiply-add: x * d + noise.
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x  # [N, O, H', W']

    wmod = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]  eq. 1
    if demodulate:
        dcoefs = (wmod.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]  eq. 3
        wmod = wmod * dcoefs.reshape(n, -1, 1, 1, 1)  # [N, O, I, k, k]
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N * I, H, W]
    wmod = wmod.reshape(-1, c_in, kh, kw)  # [N * O, I, k, k]
    x = conv2d_resample(x, wmod.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n)
    x = x.reshape(n, -1, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------
# Equalized-learning-rate layers.


class FullyConnected(torch.nn.Module):
    """Dense layer with equalized learning rate and an optional fused activation.

    The effective weight is ``weight * lr_multiplier / sqrt(in_features)`` and the
    effective bias ``bias * lr_multiplier``; the weight is initialised as
    ``N(0, 1) / lr_multiplier`` so that the effective weight starts at He scale, and
    the bias as ``bias_init`` (as published; every layer here that uses a non-zero
    ``bias_init`` has ``lr_multiplier = 1``). The mapping network uses
    ``lr_multiplier = 0.01`` (Karras et al. 2019, StyleGAN, appendix C: a 100x lower learning rate
    keeps the mapping stable); the style affines use ``bias_init = 1`` so that styles
    start near 1 (as published).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        if activation not in activation_funcs:
            raise ValueError(f"FullyConnected: unknown activation {activation!r}; "
                             f"choose one of {sorted(activation_funcs)}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_features]`` -> ``[N, out_features]``."""
        check_shape(x, [None, self.in_features], "FullyConnected input")
        w = self.weight.to(x.dtype) * self.weight_gain  # [O, I]
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())  # [N, O]
        x = x.matmul(w.t())  # [N, O]
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}, lr_mul={self.bias_gain:g}"


class EqualizedConv2d(torch.nn.Module):
    """Convolution with equalized learning rate, FIR up/downsampling and fused activation.

    The effective weight is ``weight / sqrt(in_channels * k * k)``. Its output is
    ``bias_act(conv, bias, act, gain=def_gain * gain, clamp=conv_clamp * gain)``:
    the extra ``gain`` lets residual blocks scale each branch by sqrt(1/2) (the residual
    networks of StyleGAN2, sec. 4.1), and clamping at ``conv_clamp`` keeps float16
    activations finite (the mixed-precision training of StyleGAN2-ADA).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[int] = DEFAULT_FILTER, conv_clamp: Optional[float] = None):
        super().__init__()
        if activation not in activation_funcs:
            raise ValueError(f"EqualizedConv2d: unknown activation {activation!r}; "
                             f"choose one of {sorted(activation_funcs)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        # A constant, not state: non-persistent so checkpoints hold only what was learned.
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_funcs[activation].def_gain
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """``[N, C_in, H, W]`` -> ``[N, C_out, H * up // down, W * up // down]``."""
        check_shape(x, [None, self.in_channels, None, None], "EqualizedConv2d input")
        w = self.weight * self.weight_gain  # [O, I, k, k]
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, k={self.weight.shape[-1]}, "
                f"act={self.activation}, up={self.up}, down={self.down}, clamp={self.conv_clamp}")


# ----------------------------------------------------------------------------
# Synthesis layers.


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution + per-pixel noise + bias + leaky ReLU (StyleGAN2, fig. 2d).

    The style ``s = A(w)`` comes from a learned affine map of ``w`` (initial bias 1).
    Noise is one N(0, 1) value per pixel shared by all channels, scaled by a learned
    ``noise_strength`` (StyleGAN's per-channel "B" scaling became one scalar per layer
    in StyleGAN2); ``noise_const`` is a fixed draw for reproducible images.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[int] = DEFAULT_FILTER, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.noise_key = f"noise{resolution}" + ("up" if up > 1 else "")  # unique per layer of a generator
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.padding = kernel_size // 2
        self.act_gain = activation_funcs[activation].def_gain
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1.0, noise_source: Optional[NoiseSource] = None) -> torch.Tensor:
        """``x`` ``[N, C_in, R / up, R / up]``, ``w`` ``[N, w_dim]`` -> ``[N, C_out, R, R]``.

        ``noise_mode``: ``'random'`` (fresh noise, training), ``'const'`` (the stored
        draw, reproducible images) or ``'none'``. With ``'random'``, ``noise_source`` (if
        given) supplies the noise instead of the global RNG: the trainer draws it from
        (seed, cur_nimg, phase) for the whole global batch and hands each rank its rows.
        """
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode={noise_mode!r}; choose 'random', 'const' or 'none'")
        in_res = self.resolution // self.up
        check_shape(x, [None, self.in_channels, in_res, in_res], f"SynthesisLayer@{self.resolution} input")
        styles = self.affine(w)  # [N, C_in]

        noise = None
        if self.use_noise and noise_mode == "random":
            if noise_source is not None:
                noise = noise_source(self.noise_key, x.shape[0], self.resolution)
                check_shape(noise, [x.shape[0], 1, self.resolution, self.resolution], f"{self.noise_key} noise")
            else:
                noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength  # [N, 1, R, R]
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength  # [R, R]

        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, up={self.up}"


class ToRGB(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation (StyleGAN2, fig. 7).

    The skip generator sums the upsampled outputs of every resolution's ToRGB
    (StyleGAN2, sec. 4.1). Without demodulation the equalized-lr gain is folded into
    the styles instead of the weight.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """``x`` ``[N, C, R, R]``, ``w`` ``[N, w_dim]`` -> ``[N, img_channels, R, R]``."""
        styles = self.affine(w) * self.weight_gain  # [N, C]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


# ----------------------------------------------------------------------------
# Discriminator layers.


class MinibatchStd(torch.nn.Module):
    """Append the average standard deviation over sample groups as extra channels.

    Karras et al. 2018 (sec. 3): seeing batch statistics lets the discriminator detect a
    generator that produces too little variety. The batch is split into groups of
    ``min(group_size, N)`` samples (sample ``i`` is in group ``i % (N / G)``); within
    each group the std of every feature is averaged over channels and pixels, giving
    ``num_channels`` scalars per group, broadcast as constant feature maps.
    ``N`` must be divisible by the group size.
    """

    def __init__(self, group_size: Optional[int] = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, C + num_channels, H, W]``."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"MinibatchStd: batch of {n} is not divisible by the group size {g}; "
                             f"use a batch that is a multiple of {g} or set mbstd_group_size to a divisor")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)  # [G, n, F, c, H, W]  deviation from the group mean
        y = y.square().mean(dim=0)  # [n, F, c, H, W]  variance over the group
        y = (y + 1e-8).sqrt()  # [n, F, c, H, W]  std
        y = y.mean(dim=[2, 3, 4])  # [n, F]  averaged over channels and pixels
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)  # [N, C + F, H, W]

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
