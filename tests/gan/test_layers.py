"""``gan.layers``: resampling convolution, modulated convolution, equalized learning rate and
minibatch standard deviation against straightforward definitions (Karras et al. 2020)."""

from __future__ import annotations

import pytest
import torch

from gan.layers import FullyConnected, MinibatchStd, conv2d_resample, modulated_conv2d
from gan.ops import setup_filter, upfirdn2d


def _naive_resample_conv(x, w, f, up, down, padding, groups):
    """Upsample (zeros + FIR, gain up^2), convolve, then FIR + decimate: the definition.

    Upsampling layers apply the kernel flipped (true convolution), as the published ones do.
    The fast path pads the input once and never between steps, so the definition is
    applied to the input inside a wide zero margin (which no intermediate padding
    reaches) and the margin is cropped from the result.
    """
    margin = 4
    x = torch.nn.functional.pad(x, [margin] * 4)
    if up > 1:
        fw = f.shape[-1]
        x = upfirdn2d(x, f, up=up, padding=[(fw + up - 1) // 2, (fw - up) // 2] * 2, gain=up ** 2)
        w = w.flip([2, 3])
    x = torch.nn.functional.conv2d(x, w, padding=padding, groups=groups)
    if down > 1:
        fw = f.shape[-1]
        x = upfirdn2d(x, f, down=down, padding=[(fw - down + 1) // 2, (fw - down) // 2] * 2)
    m = margin * up // down
    return x[:, :, m:-m, m:-m]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_resample_equals_upsample_conv_downsample(k, up, down, groups):
    torch.manual_seed(k * 10 + up * 3 + down + groups)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    got = conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=groups)
    want = _naive_resample_conv(x, w, f, up, down, k // 2, groups)
    assert got.shape == (2, 6, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_equals_unfused_and_demodulation_normalizes(up, demodulate):
    torch.manual_seed(up)
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    styles = torch.rand(3, 5, dtype=torch.float64) + 0.5
    noise = torch.randn(3, 1, 8 * up, 8 * up, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate, noise=noise)
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    torch.testing.assert_close(fused, unfused, rtol=1e-10, atol=1e-10)
    # Demodulation makes the output independent of the styles' overall scale (eq. 3).
    scaled = modulated_conv2d(x, weight, styles * 3.0, fused_modconv=True, **kw)
    if demodulate:
        torch.testing.assert_close(scaled, fused, rtol=1e-6, atol=1e-6)
    else:
        torch.testing.assert_close(scaled - noise, 3.0 * (fused - noise))


def test_equalized_lr_scales_weights_and_bias():
    layer = FullyConnected(9, 4, lr_multiplier=0.01, bias_init=0.5)
    x = torch.randn(2, 9)
    want = x @ (layer.weight * 0.01 / 3).t() + layer.bias * 0.01
    torch.testing.assert_close(layer(x), want)
    assert layer.weight.std() > 10  # stored as N(0, 1) / lr_multiplier


def test_minibatch_std_uses_groups_of_min_4_and_batch():
    x = torch.randn(8, 3, 2, 2)
    y = MinibatchStd(group_size=4)(x)
    assert y.shape == (8, 4, 2, 2)
    # Group j holds samples j, j + 2, j + 4, j + 6 (sample i is in group i % (N / G)).
    for j in range(2):
        grp = x[j::2]
        want = (grp.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(y[j::2, 3], want.expand(4, 2, 2))
    small = MinibatchStd(group_size=4)(x[:2])  # group = min(4, 2)
    assert small.shape == (2, 4, 2, 2)
    with pytest.raises(ValueError, match="batch of 6 is not divisible by the group size 4"):
        MinibatchStd(group_size=4)(x[:6])
