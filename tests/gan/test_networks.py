"""StyleGAN2-ADA networks: parity with the published networks, shapes, precision, gradients.

The parity fixture ``sg2a-tiny.pt`` (see ``shared/fixtures/README.md``) holds weights,
inputs and outputs of the published NVlabs networks; loading the weights through
:mod:`gan.convert` must reproduce every output to 1e-5 relative.
"""

from __future__ import annotations

import math

import pytest
import torch

from gan.config import ConfigError, from_dict
from gan.convert import load_published_state_dict, to_published_state_dict
from gan.networks import (
    NetworkConfig,
    build_discriminator,
    build_generator,
    num_parameters,
)

from tests._settings import shared_fixture

RTOL = 1e-5


@pytest.fixture(scope="module")
def published():
    """The published networks' weights, inputs and outputs (module-scoped: loaded once)."""
    return torch.load(shared_fixture("sg2a-tiny.pt"), weights_only=True)


def _load_pair(entry):
    cfg = NetworkConfig(**entry["config"])
    G, D = build_generator(cfg).eval(), build_discriminator(cfg).eval()
    load_published_state_dict(G, entry["G"])
    load_published_state_dict(D, entry["D"])
    return G, D


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL, what: str = ""):
    """Every element within ``rtol`` of the expected tensor's scale (max |expected|)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.detach(), expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def _r1_penalty(D, real, c):
    """Per-sample squared norm of d sum D(real, c) / d real (published R1 definition)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real, c).sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])  # [N]


def _path_lengths(G, ws, pl_noise, **kw):
    """sqrt(mean over ws of sum over w_dim of (d sum(img * noise) / d ws)^2), published definition."""
    ws = ws.detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const", **kw)
    (grad,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()  # [N]


# ----------------------------------------------------------------------------
# Parity with the published networks.


@pytest.mark.parametrize("variant", ["uncond", "cond"])
def test_published_weights_reproduce_published_outputs(published, variant):
    e = published[variant]
    G, D = _load_pair(e)
    z, c = e["z"], e["c"]
    with torch.no_grad():
        assert_rel_close(G.mapping(z, c), e["ws"], what="ws")
        assert_rel_close(G.mapping(z, c, truncation_psi=0.5), e["ws_trunc"], what="ws_trunc")
        assert_rel_close(G.synthesis(e["ws"], noise_mode="const"), e["img"], what="img")
        assert_rel_close(G.synthesis(e["ws_trunc"], noise_mode="const"), e["img_trunc"], what="img_trunc")
        assert_rel_close(G(z, c, truncation_psi=0.5, noise_mode="const"), e["img_trunc"], what="G(z, c)")
        assert_rel_close(D(e["img"], c), e["d_fake"], what="d_fake")
        assert_rel_close(D(e["real"], c), e["d_real"], what="d_real")
    assert_rel_close(_r1_penalty(D, e["real"], c), e["r1_penalty"], what="r1_penalty")
    assert_rel_close(_path_lengths(G, e["ws"], e["pl_noise"]), e["pl_lengths"], what="pl_lengths")


@pytest.mark.parametrize("variant", ["uncond", "cond"])
def test_unfused_modconv_matches_published_outputs(published, variant):
    """Training uses the unfused modulated conv; it must agree with the fused one to 1e-5."""
    e = published[variant]
    G, _ = _load_pair(e)
    with torch.no_grad():
        assert_rel_close(G.synthesis(e["ws"], noise_mode="const", fused_modconv=False), e["img"], what="img")
        assert_rel_close(G.synthesis(e["ws_trunc"], noise_mode="const", fused_modconv=False), e["img_trunc"],
                         what="img_trunc")
    assert_rel_close(_path_lengths(G, e["ws"], e["pl_noise"], fused_modconv=False), e["pl_lengths"],
                     what="pl_lengths")


@pytest.mark.parametrize("variant", ["uncond", "cond"])
def test_published_parameter_counts_and_export_round_trip(published, variant):
    e = published[variant]
    G, D = _load_pair(e)
    assert num_parameters(G) == e["G_params"]
    assert num_parameters(D) == e["D_params"]
    for ours, theirs in ((G, e["G"]), (D, e["D"])):
        exported = to_published_state_dict(ours)
        assert set(exported) == set(theirs)
        for key, value in theirs.items():
            assert torch.equal(exported[key], value), key


@pytest.mark.parametrize("res, g_params, d_params", [
    (64, 22_243_608, 23_407_361),
    (128, 22_949_277, 23_882_369),
])
def test_full_size_parameter_counts_equal_published(res, g_params, d_params):
    cfg = NetworkConfig(z_dim=512, w_dim=512, c_dim=0, img_resolution=res, mapping_layers=2,
                        channel_base=16384, channel_max=512)
    assert num_parameters(build_generator(cfg)) == g_params
    assert num_parameters(build_discriminator(cfg)) == d_params


# ----------------------------------------------------------------------------
# Shapes, config, mapping behaviour.

TINY = dict(z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=2, d_mapping_layers=2)


@pytest.mark.parametrize("res, channels, c_dim", [(8, 3, 0), (16, 1, 5)])
def test_output_shapes(res, channels, c_dim):
    cfg = NetworkConfig(img_resolution=res, img_channels=channels, c_dim=c_dim, num_fp16_res=0, **TINY)
    G, D = build_generator(cfg), build_discriminator(cfg)
    n = 4
    z = torch.randn(n, cfg.z_dim)
    c = torch.eye(c_dim)[torch.arange(n) % c_dim] if c_dim else None
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    ws = G.mapping(z, c)
    assert ws.shape == (n, G.num_ws, cfg.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (n, channels, res, res) and img.dtype == torch.float32
    assert D(img, c).shape == (n, 1)
    with pytest.raises(ValueError, match="SynthesisNetwork ws: expected shape"):
        G.synthesis(ws[:, 1:])
    with pytest.raises(ValueError, match="Discriminator input image: expected shape"):
        D(img[:, :, 1:], c)


def test_conditional_generator_requires_labels():
    G = build_generator(NetworkConfig(img_resolution=8, c_dim=3, **TINY))
    with pytest.raises(ValueError, match=r"labels c of shape \[N, 3\] are required"):
        G(torch.randn(2, 16), None)


def test_network_config_rejects_bad_values_naming_the_key():
    with pytest.raises(ConfigError, match="network.img_resolution: 48 is not a power of two"):
        NetworkConfig(img_resolution=48)
    with pytest.raises(ConfigError, match="network.conv_clamp"):
        NetworkConfig(conv_clamp=0.0)
    cfg = from_dict(NetworkConfig, {"img_resolution": 32, "conv_clamp": None, "c_dim": 2})
    assert cfg.img_resolution == 32 and cfg.conv_clamp is None and cfg.c_dim == 2


def test_truncation_moves_only_the_cutoff_layers_towards_w_avg():
    G = build_generator(NetworkConfig(img_resolution=16, **TINY)).eval()
    G.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(3, 16)
    ws = G.mapping(z, None)
    cut = G.mapping(z, None, truncation_psi=0.25, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], G.mapping.w_avg + 0.25 * (ws[:, :2] - G.mapping.w_avg))
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
    psi0 = G.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(psi0, G.mapping.w_avg.expand_as(psi0))


def test_w_avg_tracks_the_mean_of_w_in_training_only():
    G = build_generator(NetworkConfig(img_resolution=8, **TINY))
    z = torch.randn(8, 16)
    G.eval()
    G.mapping(z, None)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.train()
    G.mapping(z, None, update_w_avg=False)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    w = G.mapping(z, None)[:, 0]
    torch.testing.assert_close(G.mapping.w_avg, (1 - 0.995) * w.detach().mean(0))


def test_noise_modes():
    G = build_generator(NetworkConfig(img_resolution=8, **TINY)).eval()
    for p in G.parameters():
        if p.ndim == 0:  # noise strengths start at 0; make noise visible
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn(2, 16), None)
    const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(const_a, none)
    with pytest.raises(ValueError, match="noise_mode='fixed'"):
        G.synthesis(ws, noise_mode="fixed")


# ----------------------------------------------------------------------------
# Mixed precision and gradients.


def _fp16_pair():
    torch.manual_seed(0)
    cfg = NetworkConfig(img_resolution=16, c_dim=2, num_fp16_res=2, conv_clamp=256.0, **TINY)
    return cfg, build_generator(cfg), build_discriminator(cfg)


def _record_block_dtypes(net):
    seen = {}
    for block in net.blocks():
        block.register_forward_hook(lambda m, i, o, r=block.resolution: seen.__setitem__(
            r, (o[0] if isinstance(o, tuple) else o).dtype))
    return seen


@pytest.mark.parametrize("training", [True, False])
def test_forced_fp16_on_cpu_runs_in_half_and_stays_close_to_fp32(training):
    cfg, G, D = _fp16_pair()
    G.train(training)
    D.train(training)
    g_dtypes, d_dtypes = _record_block_dtypes(G.synthesis), _record_block_dtypes(D)
    z, c = torch.randn(4, cfg.z_dim), torch.eye(2)[[0, 1, 0, 1]]

    img32 = G(z, c, noise_mode="const")
    assert set(g_dtypes.values()) == {torch.float32}  # CPU: fp32 automatically
    img16 = G(z, c, noise_mode="const", force_fp16=True)
    assert g_dtypes == {4: torch.float32, 8: torch.float16, 16: torch.float16}
    assert img16.dtype == torch.float32 and torch.isfinite(img16).all()
    assert_rel_close(img16, img32, rtol=2e-2, what="fp16 image")
    G(z, c, noise_mode="const", force_fp16=True, force_fp32=True)
    assert set(g_dtypes.values()) == {torch.float32}  # force_fp32 wins

    logits32 = D(img32.detach(), c)
    logits16 = D(img32.detach(), c, force_fp16=True)
    assert d_dtypes == {16: torch.float16, 8: torch.float16}
    assert logits16.dtype == torch.float32 and torch.isfinite(logits16).all()
    assert_rel_close(logits16, logits32, rtol=2e-2, what="fp16 logits")


@pytest.mark.parametrize("force_fp16", [False, True])
def test_double_backward_through_r1_and_path_length(force_fp16):
    cfg, G, D = _fp16_pair()
    G.train()
    D.train()
    c = torch.eye(2)[[0, 1, 0, 1]]
    real = torch.rand(4, cfg.img_channels, 16, 16) * 2 - 1

    real.requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real, c, force_fp16=force_fp16).sum(), real, create_graph=True)
    grad.square().sum(dim=[1, 2, 3]).mean().backward()
    # R1 reaches every D weight, label mapping included. (Biases are not checked: those after
    # the last nonlinearity have an exactly zero R1 gradient, which the reference ops return as
    # zeros and compiled ops, whose lrelu has no second derivative, as no gradient.)
    for name, p in D.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
        if not name.endswith("bias"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    ws = G.mapping(torch.randn(4, cfg.z_dim), c).detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="random", force_fp16=force_fp16)
    noise = torch.randn_like(img) / 16
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    grad.square().sum(dim=2).mean(dim=1).sqrt().mean().backward()
    weight_grads = {n: p.grad for n, p in G.synthesis.named_parameters() if p.ndim == 4}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in weight_grads.values()), \
        [n for n, g in weight_grads.items() if g is None or not g.abs().sum() > 0]
