"""StyleGAN2-ADA generator and discriminator (Karras et al. 2020, StyleGAN2 and ADA).

Data flow::

    z [N, z_dim] --+--> MappingNetwork --> ws [N, num_ws, w_dim] --> SynthesisNetwork --> img [N, C, R, R]
    c [N, c_dim] --'      (w_avg, truncation)                        (const 4x4, modulated convs, skip toRGB)

    img [N, C, R, R] --> DiscriminatorBlock R .. 8 (residual) --> DiscriminatorEpilogue --> logits [N, 1]
    c [N, c_dim] --> MappingNetwork (cmap) ------------------------------------^ (projection)

The architecture is config F of StyleGAN2 with the StyleGAN2-ADA changes: a skip
generator, a residual discriminator, one noise strength per layer, channel counts
``min(channel_base // res, channel_max)``, a class embedding for the mapping network and
projection conditioning in the discriminator (Miyato & Koyama 2018), mixed precision in
the ``num_fp16_res`` highest resolutions with activations clamped at ``conv_clamp``
(the mixed-precision setup of StyleGAN2-ADA). Parameter counts and outputs equal the published networks
(``tests/gan/test_networks.py``), and :mod:`gan.convert` imports their weights.

Mixed precision: blocks marked ``use_fp16`` run in float16 only on CUDA; on CPU they
run in float32 (float16 convolutions on CPU are ~70x slower) unless ``force_fp16=True``
is passed to ``forward``, which the tests use to exercise the float16 code path.
``force_fp32=True`` disables float16 everywhere. ``conv_clamp`` applies in both
precisions (as published), so an fp32 run computes what the fp16 run approximates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from gan.config import ConfigError
from gan.layers import (
    DEFAULT_FILTER,
    EqualizedConv2d,
    FullyConnected,
    MinibatchStd,
    NoiseSource,
    SynthesisLayer,
    ToRGB,
    check_shape,
    normalize_2nd_moment,
)
from gan.ops import setup_filter, upsample2d

__all__ = [
    "NetworkConfig",
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisNetwork",
    "Generator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "Discriminator",
    "build_generator",
    "build_discriminator",
    "num_parameters",
    "channels_at",
]

_SQRT_HALF = math.sqrt(0.5)


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Sizes of G and D. ``c_dim`` and ``img_resolution``/``img_channels`` follow the data set.

    Defaults are the StyleGAN2-ADA ``auto`` configuration for one GPU (2 mapping layers,
    ``channel_base`` 16384, ``channel_max`` 512, fp16 in the top 4 resolutions clamped
    at 256, minibatch-std groups of 4).
    """

    z_dim: int = 512                        # input latent dimensionality
    w_dim: int = 512                        # intermediate latent dimensionality
    c_dim: int = 0                          # label dimensionality, 0 = unconditional
    img_resolution: int = 64                # output/input resolution, a power of two >= 4
    img_channels: int = 3                   # 3 = RGB, 1 = grayscale
    mapping_layers: int = 2                 # layers of G's mapping network
    mapping_lr_multiplier: float = 0.01     # learning-rate multiplier of the mapping layers
    w_avg_beta: float = 0.995               # decay of the tracked average of w (for truncation)
    d_mapping_layers: int = 8               # layers of D's label mapping (published default)
    cmap_dim: Optional[int] = None          # D's projection dimensionality, None = channels at 4x4
    channel_base: int = 16384               # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    num_fp16_res: int = 4                   # float16 in the N highest resolutions (on CUDA)
    conv_clamp: Optional[float] = 256.0     # clamp conv outputs to +-X, None = no clamping
    mbstd_group_size: int = 4               # minibatch-std group size (min with the batch)
    mbstd_num_channels: int = 1             # minibatch-std feature maps, 0 = disable

    def __post_init__(self):
        r = self.img_resolution
        if r < 4 or r & (r - 1):
            raise ConfigError(f"network.img_resolution: {r} is not a power of two >= 4; "
                              f"prepare the data set at 32, 64, 128, 256, ...")
        for key in ("w_dim", "img_channels", "mapping_layers", "channel_base", "channel_max"):
            if getattr(self, key) < 1:
                raise ConfigError(f"network.{key}: must be at least 1, got {getattr(self, key)}")
        for key in ("z_dim", "c_dim", "num_fp16_res", "mbstd_num_channels", "d_mapping_layers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"network.{key}: must be >= 0, got {getattr(self, key)}")
        if self.c_dim > 0 and self.d_mapping_layers < 1:
            raise ConfigError("network.d_mapping_layers: a conditional discriminator needs at least 1")
        if self.z_dim == 0 and self.c_dim == 0:
            raise ConfigError("network.z_dim: z_dim and c_dim are both 0; the generator would have no input")
        if self.mbstd_group_size < 1:
            raise ConfigError(f"network.mbstd_group_size: must be at least 1, got {self.mbstd_group_size}")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ConfigError(f"network.conv_clamp: must be positive or null, got {self.conv_clamp}")
        if channels_at(4, self.channel_base, self.channel_max) < 1:
            raise ConfigError(f"network.channel_base: {self.channel_base} gives no channels at 4x4; "
                              f"use at least 4 * 1 (typically 16384 or 32768)")
        if channels_at(r, self.channel_base, self.channel_max) < 1:
            raise ConfigError(f"network.channel_base: {self.channel_base} gives 0 channels at {r}x{r}; "
                              f"use at least {r}")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: halve per doubling of resolution, capped (StyleGAN2-ADA's sizing)."""
    return min(channel_base // res, channel_max)


def _fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution that runs in float16; never below 8 (the 4x4 layers stay fp32)."""
    return max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)


def _block_dtype(use_fp16: bool, device: torch.device, force_fp32: bool, force_fp16: bool) -> torch.dtype:
    """float16 for an fp16 block on CUDA (or when forced on CPU), else float32."""
    if use_fp16 and not force_fp32 and (device.type == "cuda" or force_fp16):
        return torch.float16
    return torch.float32


def num_parameters(module: torch.nn.Module) -> int:
    """Number of trainable scalars (``requires_grad`` parameters), as the published summaries count."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------
# Mapping network.


class MappingNetwork(torch.nn.Module):
    """z (and a class embedding of c) -> w through an MLP (StyleGAN, Karras et al. 2019, sec. 2).

    z and the embedding of c are each normalized to unit second moment and concatenated.
    During training ``w_avg`` tracks the mean of w (decay ``w_avg_beta``); the truncation
    trick moves w towards it, ``w' = w_avg + psi (w - w_avg)`` (StyleGAN, appendix B),
    in the first ``truncation_cutoff`` layers only if given.
    The discriminator reuses this class with ``z_dim=0``, ``num_ws=None`` and
    ``w_avg_beta=None`` to map labels for projection conditioning.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 embed_features: Optional[int] = None, layer_features: Optional[int] = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnected(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], activation=activation,
                                                   lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_w_avg: bool = True) -> torch.Tensor:
        """``z`` ``[N, z_dim]``, ``c`` ``[N, c_dim]`` -> ``[N, num_ws, w_dim]`` (``[N, w_dim]`` if ``num_ws`` is None).

        ``w_avg`` is updated in training mode unless ``update_w_avg=False`` (e.g. for
        the extra forward passes of path-length regularization).
        """
        x = None
        if self.z_dim > 0:
            if z is None:
                raise ValueError(f"MappingNetwork: z is required (z_dim={self.z_dim})")
            check_shape(z, [None, self.z_dim], "MappingNetwork z")
            x = normalize_2nd_moment(z.to(torch.float32))  # [N, z_dim]
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"MappingNetwork: labels c of shape [N, {self.c_dim}] are required "
                                 f"(the network is conditional, c_dim={self.c_dim})")
            check_shape(c, [None if x is None else x.shape[0], self.c_dim], "MappingNetwork c")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))  # [N, embed_features]
            x = torch.cat([x, y], dim=1) if x is not None else y  # [N, z_dim + embed_features]

        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # [N, w_dim] after the last layer

        if self.w_avg_beta is not None and self.num_ws is not None and self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]

        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError("MappingNetwork: truncation needs a tracked w_avg (num_ws and w_avg_beta set)")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------
# Synthesis network.


class SynthesisBlock(torch.nn.Module):
    """One resolution of the skip generator (StyleGAN2, fig. 7b).

    The first block (``in_channels == 0``) starts from a learned constant 4x4 input; the
    others upsample with a modulated 3x3 transposed convolution + FIR filter
    (``conv_up``), then apply a modulated 3x3 convolution (``conv``). Every block adds
    its ToRGB output to the FIR-upsampled image of the previous resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool = False, conv_clamp: Optional[float] = None,
                 resample_filter=DEFAULT_FILTER):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.num_conv = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv_up = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                          resample_filter=resample_filter, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                   conv_clamp=conv_clamp)
        self.num_conv += 1
        self.to_rgb = ToRGB(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: str = "random", force_fp32: bool = False, force_fp16: bool = False,
                fused_modconv: Optional[bool] = None,
                noise_source: Optional[NoiseSource] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[N, C_in, R/2, R/2]`` (None for the first), ``img`` ``[N, C_img, R/2, R/2]`` (or None),
        ``ws`` ``[N, num_conv + 1, w_dim]`` -> (``x`` ``[N, C_out, R, R]``, ``img`` ``[N, C_img, R, R]`` float32).
        """
        check_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim], f"SynthesisBlock@{self.resolution} ws")
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, ws.device, force_fp32, force_fp16)
        if fused_modconv is None:
            # One grouped conv is fastest for inference; training (and fp16 beyond a single
            # sample) uses the unfused form, which also saves memory in the backward pass.
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, C, 4, 4]
            x = self.conv(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                          noise_source=noise_source)
        else:
            check_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2],
                         f"SynthesisBlock@{self.resolution} x")
            x = x.to(dtype)
            x = self.conv_up(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                             noise_source=noise_source)  # [N, C, R, R]
            x = self.conv(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                          noise_source=noise_source)

        if img is not None:
            check_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2],
                         f"SynthesisBlock@{self.resolution} img")
            img = upsample2d(img, self.resample_filter)  # [N, C_img, R, R]
        y = self.to_rgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        img = img + y if img is not None else y
        assert x.dtype == dtype and img.dtype == torch.float32
        return x, img

    def extra_repr(self) -> str:
        return f"res={self.resolution}, in={self.in_channels}, out={self.out_channels}, fp16={self.use_fp16}"


class SynthesisNetwork(torch.nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` through blocks 4, 8, ..., R.

    Block ``r`` consumes ``num_conv + 1`` consecutive ws; its ToRGB shares its w with
    the first convolution of the next block, so ``num_ws = sum(num_conv) + 1``
    (= 2 log2 R - 2), the layout style mixing and truncation cutoffs refer to.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 16384,
                 channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: Optional[float] = None):
        super().__init__()
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        fp16_res = _fp16_resolution(img_resolution, num_fp16_res) if num_fp16_res > 0 else None
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = channels_at(res, channel_base, channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   use_fp16=fp16_res is not None and res >= fp16_res, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"block{res}", block)
        self.num_ws += 1  # the last ToRGB

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"block{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                force_fp16: bool = False, fused_modconv: Optional[bool] = None,
                noise_source: Optional[NoiseSource] = None) -> torch.Tensor:
        """``ws`` ``[N, num_ws, w_dim]`` -> ``[N, img_channels, R, R]`` float32 (about [-1, 1] once trained).

        ``noise_source``: see :class:`gan.layers.SynthesisLayer` (the trainer's stateless noise)."""
        check_shape(ws, [None, self.num_ws, self.w_dim], "SynthesisNetwork ws")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)  # [N, num_conv + 1, w_dim]
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, force_fp32=force_fp32,
                           force_fp16=force_fp16, fused_modconv=fused_modconv, noise_source=noise_source)
        return img


class Generator(torch.nn.Module):
    """z, c -> image: ``synthesis(mapping(z, c))`` (StyleGAN2, fig. 2d)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_layers: int = 2, mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995,
                 channel_base: int = 16384, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                          channel_max=channel_max, num_fp16_res=num_fp16_res,
                                          conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "random", force_fp32: bool = False,
                force_fp16: bool = False, fused_modconv: Optional[bool] = None) -> torch.Tensor:
        """``z`` ``[N, z_dim]``, ``c`` ``[N, c_dim]`` (None or ``[N, 0]`` if unconditional) -> ``[N, C, R, R]``.

        ``truncation_psi < 1`` trades variety for typicality; ``noise_mode`` is
        ``'random'``, ``'const'`` (reproducible) or ``'none'``; ``force_fp16`` runs the
        fp16 blocks in float16 even on CPU (slow; for tests).
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, force_fp16=force_fp16,
                              fused_modconv=fused_modconv)


# ----------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the residual discriminator (StyleGAN2, fig. 7c).

    ``x -> conv -> conv_down`` plus a 1x1 ``skip`` with FIR downsampling, each branch
    scaled by sqrt(1/2) to keep the variance of the sum; the first block converts the
    image with ``from_rgb``.
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, use_fp16: bool = False, conv_clamp: Optional[float] = None,
                 resample_filter=DEFAULT_FILTER):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"DiscriminatorBlock: in_channels {in_channels} must be 0 or {tmp_channels}")
        self.in_channels = in_channels
        self.tmp_channels = tmp_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.from_rgb = EqualizedConv2d(img_channels, tmp_channels, kernel_size=1, activation="lrelu",
                                            conv_clamp=conv_clamp)
        self.conv = EqualizedConv2d(tmp_channels, tmp_channels, kernel_size=3, activation="lrelu",
                                    conv_clamp=conv_clamp)
        self.conv_down = EqualizedConv2d(tmp_channels, out_channels, kernel_size=3, activation="lrelu", down=2,
                                         resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = EqualizedConv2d(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], force_fp32: bool = False,
                force_fp16: bool = False) -> torch.Tensor:
        """``x`` ``[N, C_in, R, R]`` (None for the first block) or ``img`` ``[N, C_img, R, R]``
        -> ``[N, C_out, R/2, R/2]``."""
        device = (x if x is not None else img).device
        dtype = _block_dtype(self.use_fp16, device, force_fp32, force_fp16)
        if self.in_channels == 0:
            check_shape(img, [None, self.img_channels, self.resolution, self.resolution],
                         f"Discriminator input image (block {self.resolution})")
            x = self.from_rgb(img.to(dtype))  # [N, C_tmp, R, R]
        else:
            check_shape(x, [None, self.in_channels, self.resolution, self.resolution],
                         f"DiscriminatorBlock@{self.resolution} x")
            x = x.to(dtype)
        y = self.skip(x, gain=_SQRT_HALF)  # [N, C_out, R/2, R/2]
        x = self.conv(x)  # [N, C_tmp, R, R]
        x = self.conv_down(x, gain=_SQRT_HALF)  # [N, C_out, R/2, R/2]
        x = y + x
        assert x.dtype == dtype
        return x

    def extra_repr(self) -> str:
        return f"res={self.resolution}, in={self.in_channels}, out={self.out_channels}, fp16={self.use_fp16}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch std, 3x3 conv, dense, output; projection by the mapped label.

    With labels, the output is ``<out(x), cmap> / sqrt(cmap_dim)``: projection
    conditioning (Miyato & Koyama 2018) as in StyleGAN2-ADA. Always float32.
    """

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int = 4, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = EqualizedConv2d(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                    activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]) -> torch.Tensor:
        """``x`` ``[N, C, R, R]`` (``R = resolution``, 4), ``cmap`` ``[N, cmap_dim]`` or None -> ``[N, 1]`` float32."""
        check_shape(x, [None, self.in_channels, self.resolution, self.resolution], "DiscriminatorEpilogue x")
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)  # [N, C + mbstd_num_channels, R, R]
        x = self.conv(x)  # [N, C, R, R]
        x = self.fc(x.flatten(1))  # [N, C]
        x = self.out(x)  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            check_shape(cmap, [x.shape[0], self.cmap_dim], "DiscriminatorEpilogue cmap")
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))  # [N, 1]
        return x


class Discriminator(torch.nn.Module):
    """image (and label) -> realness logit ``[N, 1]``; residual architecture (StyleGAN2, fig. 7c)."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, channel_base: int = 16384,
                 channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: Optional[float] = None,
                 cmap_dim: Optional[int] = None, mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1):
        super().__init__()
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        fp16_res = _fp16_resolution(img_resolution, num_fp16_res) if num_fp16_res > 0 else None
        ch4 = channels_at(4, channel_base, channel_max)
        self.cmap_dim = 0 if c_dim == 0 else (ch4 if cmap_dim is None else cmap_dim)
        for res in self.block_resolutions:
            tmp = channels_at(res, channel_base, channel_max)
            block = DiscriminatorBlock(tmp if res < img_resolution else 0, tmp,
                                       channels_at(res // 2, channel_base, channel_max), resolution=res,
                                       img_channels=img_channels, conv_clamp=conv_clamp,
                                       use_fp16=fp16_res is not None and res >= fp16_res)
            setattr(self, f"block{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, self.cmap_dim, num_ws=None, num_layers=mapping_layers,
                                          lr_multiplier=mapping_lr_multiplier, w_avg_beta=None)
        self.epilogue = DiscriminatorEpilogue(ch4, self.cmap_dim, resolution=4, mbstd_group_size=mbstd_group_size,
                                              mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp)

    def blocks(self) -> list[DiscriminatorBlock]:
        return [getattr(self, f"block{res}") for res in self.block_resolutions]

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor], force_fp32: bool = False,
                force_fp16: bool = False) -> torch.Tensor:
        """``img`` ``[N, C_img, R, R]``, ``c`` ``[N, c_dim]`` (None or ``[N, 0]`` if unconditional) -> ``[N, 1]``."""
        check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution],
                     "Discriminator input image")
        x = None
        for block in self.blocks():
            x = block(x, img, force_fp32=force_fp32, force_fp16=force_fp16)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        return self.epilogue(x, cmap)


# ----------------------------------------------------------------------------
# Construction from config.


def build_generator(cfg: NetworkConfig) -> Generator:
    """The generator described by ``cfg`` (randomly initialised)."""
    return Generator(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                     img_channels=cfg.img_channels, mapping_layers=cfg.mapping_layers,
                     mapping_lr_multiplier=cfg.mapping_lr_multiplier, w_avg_beta=cfg.w_avg_beta,
                     channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                     num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp)


def build_discriminator(cfg: NetworkConfig) -> Discriminator:
    """The discriminator described by ``cfg`` (randomly initialised)."""
    return Discriminator(c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
                         channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                         num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp, cmap_dim=cfg.cmap_dim,
                         mapping_layers=cfg.d_mapping_layers, mapping_lr_multiplier=cfg.mapping_lr_multiplier,
                         mbstd_group_size=cfg.mbstd_group_size, mbstd_num_channels=cfg.mbstd_num_channels)
