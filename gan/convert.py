"""Import (and export) weights of the published StyleGAN2-ADA networks.

The published PyTorch networks (NVlabs/stylegan2-ada-pytorch, ``training/networks.py``)
compute what :mod:`gan.networks` computes; only some names differ, where ours say what a
layer does. This module renames a published ``state_dict`` to ours and back, so that
published checkpoints (e.g. FFHQ) can be loaded, and so that the parity fixture
``sg2a-tiny.pt`` tests our networks against theirs. Supported: skip-architecture
generators and residual discriminators (the StyleGAN2-ADA defaults); other
architectures have extra keys and are rejected with the list of keys.

Published ``.pkl`` files are read without their code, and without executing anything in
them, by :mod:`gan.published` (``mtf-gan import``), which uses this mapping.

Name mapping (``{r}`` is a resolution, ``{i}`` a layer index, ``*`` the rest of the name)::

    published                              ours                                       what
    -------------------------------------  -----------------------------------------  ------------------------------
    mapping.embed.*                        mapping.embed.*                            class embedding of c
    mapping.fc{i}.*                        mapping.fc{i}.*                            mapping layers (G and D)
    mapping.w_avg                          mapping.w_avg                              tracked mean of w
    synthesis.b4.const                     synthesis.block4.const                     learned 4x4 input
    synthesis.b{r}.conv0.*                 synthesis.block{r}.conv_up.*               modulated 3x3 conv, upsampling
    synthesis.b{r}.conv1.*                 synthesis.block{r}.conv.*                  modulated 3x3 conv
    synthesis.b{r}.torgb.*                 synthesis.block{r}.to_rgb.*                modulated 1x1 conv to RGB
    b{r}.fromrgb.*                         block{r}.from_rgb.*                        D input 1x1 conv (top block)
    b{r}.conv0.*                           block{r}.conv.*                            D 3x3 conv
    b{r}.conv1.*                           block{r}.conv_down.*                       D 3x3 conv, downsampling
    b{r}.skip.*                            block{r}.skip.*                            D residual 1x1 conv, downsampling
    b4.conv.* / b4.fc.* / b4.out.*         epilogue.conv.* / .fc.* / .out.*           D head (after minibatch std)
    ...resample_filter                     (not stored)                               FIR filter, checked = [1,3,3,1]

Inside the layers the names are the same: ``weight``, ``bias``, ``affine.weight``,
``affine.bias``, ``noise_strength``, ``noise_const``. Our FIR filters are constants
(non-persistent buffers) rather than state, so on import each published
``resample_filter`` is checked against the [1, 3, 3, 1] filter instead of copied.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from gan.layers import DEFAULT_FILTER
from gan.networks import DiscriminatorBlock
from gan.ops import setup_filter
from gan.util import UserError

__all__ = ["ConversionError", "published_to_ours", "ours_to_published", "load_published_state_dict",
           "to_published_state_dict"]


class ConversionError(UserError):
    """A published state dict that does not fit the network it is loaded into."""


# (published regex, our template) and (our regex, published template), tried in order.
_TO_OURS: list[tuple[re.Pattern, str]] = [(re.compile(p), t) for p, t in [
    (r"^mapping\.(embed|fc\d+)\.(weight|bias)$", r"mapping.\1.\2"),
    (r"^mapping\.w_avg$", r"mapping.w_avg"),
    (r"^synthesis\.b(\d+)\.const$", r"synthesis.block\1.const"),
    (r"^synthesis\.b(\d+)\.conv0\.(.+)$", r"synthesis.block\1.conv_up.\2"),
    (r"^synthesis\.b(\d+)\.conv1\.(.+)$", r"synthesis.block\1.conv.\2"),
    (r"^synthesis\.b(\d+)\.torgb\.(.+)$", r"synthesis.block\1.to_rgb.\2"),
    (r"^b4\.(conv|fc|out)\.(weight|bias)$", r"epilogue.\1.\2"),
    (r"^b(\d+)\.fromrgb\.(weight|bias)$", r"block\1.from_rgb.\2"),
    (r"^b(\d+)\.conv0\.(weight|bias)$", r"block\1.conv.\2"),
    (r"^b(\d+)\.conv1\.(weight|bias)$", r"block\1.conv_down.\2"),
    (r"^b(\d+)\.skip\.weight$", r"block\1.skip.weight"),
]]

_TO_PUBLISHED: list[tuple[re.Pattern, str]] = [(re.compile(p), t) for p, t in [
    (r"^mapping(\..*)?$", r"mapping\1"),
    (r"^synthesis\.block(\d+)\.const$", r"synthesis.b\1.const"),
    (r"^synthesis\.block(\d+)\.conv_up(\..*)?$", r"synthesis.b\1.conv0\2"),
    (r"^synthesis\.block(\d+)\.conv(\..*)?$", r"synthesis.b\1.conv1\2"),
    (r"^synthesis\.block(\d+)\.to_rgb(\..*)?$", r"synthesis.b\1.torgb\2"),
    (r"^synthesis\.block(\d+)$", r"synthesis.b\1"),
    (r"^epilogue\.(conv|fc|out)(\..*)?$", r"b4.\1\2"),
    (r"^block(\d+)\.from_rgb(\..*)?$", r"b\1.fromrgb\2"),
    (r"^block(\d+)\.conv(\..*)?$", r"b\1.conv0\2"),
    (r"^block(\d+)\.conv_down(\..*)?$", r"b\1.conv1\2"),
    (r"^block(\d+)\.skip(\..*)?$", r"b\1.skip\2"),
    (r"^block(\d+)$", r"b\1"),
]]

_FILTER_KEY = re.compile(r"^(.+\.)?resample_filter$")


def published_to_ours(name: str) -> str | None:
    """Our name for a published parameter/buffer name; ``None`` if there is no rule for it."""
    for pattern, template in _TO_OURS:
        if pattern.match(name):
            return pattern.sub(template, name)
    return None


def ours_to_published(name: str) -> str | None:
    """The published name for one of our parameter/buffer (or module) names; ``None`` if none."""
    for pattern, template in _TO_PUBLISHED:
        if pattern.match(name):
            return pattern.sub(template, name)
    return None


def _fmt(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_published_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy a published StyleGAN2-ADA ``state_dict`` into our ``Generator`` or ``Discriminator``.

    Every published key must map to one of ours and every one of ours must be covered;
    shapes must agree. Otherwise :class:`ConversionError` names the keys and the likely
    cause (a different ``NetworkConfig`` or an unsupported architecture). Values are cast
    to the dtype of ``module``'s tensors.
    """
    ours = module.state_dict()
    expected_filter = setup_filter(list(DEFAULT_FILTER))
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}  # our name -> published key, for messages
    unknown = []
    for key, value in state_dict.items():
        if _FILTER_KEY.match(key):
            if tuple(value.shape) != tuple(expected_filter.shape) or not torch.allclose(
                    value.detach().cpu().float(), expected_filter, rtol=1e-6, atol=1e-7):
                raise ConversionError(f"published state dict: '{key}' is not the [1, 3, 3, 1] FIR filter "
                                      f"that our networks use; this checkpoint is not supported")
            continue
        name = published_to_ours(key)
        if name is None or name not in ours:
            unknown.append(key)
            continue
        if name in converted:
            raise ConversionError(f"published state dict: '{key}' and another key both map to '{name}'")
        converted[name] = value
        source[name] = key
    if unknown:
        raise ConversionError(
            f"published state dict: {len(unknown)} key(s) have no counterpart in our "
            f"{type(module).__name__}: {_fmt(unknown)}. Only skip generators and resnet discriminators are "
            f"supported, and a Generator's weights cannot go into a Discriminator (or the reverse); "
            f"check that the NetworkConfig (c_dim, img_resolution, mapping layers) matches the checkpoint")
    missing = set(ours) - set(converted)
    if missing:
        raise ConversionError(
            f"published state dict: {len(missing)} of our {type(module).__name__}'s tensors are not in it: "
            f"{_fmt(ours_to_published(k) or k for k in missing)} (published names). "
            f"Check that the NetworkConfig (c_dim, img_resolution, mapping layers) matches the checkpoint")
    bad = [f"{source[k]} ({tuple(v.shape)} published, {tuple(ours[k].shape)} ours)"
           for k, v in converted.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if bad:
        raise ConversionError(
            f"published state dict: shapes differ for {_fmt(bad, 4)}; the checkpoint was made with other "
            f"sizes: set channel_base, channel_max, z_dim/w_dim and img_resolution to the published ones")
    module.load_state_dict(converted, strict=True)


def to_published_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reverse of :func:`load_published_state_dict`: our state dict under the published names.

    The published ``resample_filter`` buffers are recreated where the published modules
    hold them (every synthesis block and layer, every discriminator block and convolution).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        name = ours_to_published(key)
        if name is None:
            raise ConversionError(f"to_published_state_dict: no published name for '{key}'")
        out[name] = value.detach().clone()

    for path, sub in module.named_modules():
        if "resample_filter" in dict(sub.named_buffers(recurse=False)) or isinstance(sub, DiscriminatorBlock):
            name = ours_to_published(path)
            if name is None:
                raise ConversionError(f"to_published_state_dict: no published name for module '{path}'")
            out[f"{name}.resample_filter"] = setup_filter(list(DEFAULT_FILTER))
    return out
