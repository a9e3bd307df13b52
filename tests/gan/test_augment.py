"""The ADA augmentation pipe (gan/augment.py): identity at p=0, determinism, rank slicing,
gradients to second order, non-leaking resampling, colour transforms and the p controller.
The bilinear sampler it warps with (gan/ops/grid_sample.py) is tested in test_ops.py."""

from __future__ import annotations

import math

import pytest
import torch

from gan.augment import PIPES, AdaController, AugmentConfig, AugmentPipe, make_generator
from gan.config import ConfigError, from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

RES = 16


def only(*names: str, **kwargs) -> AugmentPipe:
    """A pipe with just the named transforms on (multiplier 1), the reference resampler."""
    mult = {name: 0.0 for name in PIPES["bgc"]}
    mult.update({name: 1.0 for name in names})
    return AugmentPipe(**mult, **kwargs, impl="ref")


def images(n: int = 8, res: int = RES, seed: int = 0, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, channels, res, res], generator=g) * 2 - 1  # [N, C, H, W] in [-1, 1)


@pytest.fixture(scope="module")
def pipe() -> AugmentPipe:
    return AugmentPipe(impl="ref")  # the full bgc pipe


# ---------------------------------------------------------------------------- identity, determinism


def test_p0_returns_the_input_unchanged(pipe):
    x = images()
    assert pipe.p == 0.0
    assert pipe(x) is x                                     # no generator needed at p = 0
    assert pipe(x, p=0.0, generator=make_generator(1)) is x
    params = pipe.sample_params(len(x), make_generator(1))
    assert torch.equal(pipe.apply(x, params, p=0.0), x)


def test_p1_changes_every_image_and_keeps_shape_dtype_and_range(pipe):
    x = images(16)
    y = pipe(x, p=1.0, generator=make_generator(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    per_image_change = (y - x).flatten(1).abs().mean(dim=1)
    assert (per_image_change > 1e-3).all()
    # Colour transforms may leave [-1, 1] (as published: no clamping, it would block
    # gradients), but only by the factors the strengths allow.
    assert y.abs().max() < 30


def test_samples_whose_transforms_are_all_gated_off_stay_bit_exact(pipe):
    x = images(64)
    params = pipe.sample_params(64, make_generator(5))
    t = pipe.transforms(params, RES, RES, p=0.05)
    untouched = ~(t.blit | t.geom | t.color_on)
    assert 0 < untouched.sum() < 64
    y = pipe.apply(x, params, p=0.05)
    assert torch.equal(y[untouched], x[untouched])
    assert not torch.equal(y[~untouched], x[~untouched])


def test_same_generator_seed_gives_the_same_output_and_another_seed_differs(pipe):
    x = images()
    a = pipe(x, p=0.7, generator=make_generator(123))
    b = pipe(x, p=0.7, generator=make_generator(123))
    c = pipe(x, p=0.7, generator=123)                       # an int seed is the same generator
    d = pipe(x, p=0.7, generator=make_generator(124))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d)


def test_augmentation_does_not_touch_the_global_rng(pipe):
    torch.manual_seed(0)
    before = torch.get_rng_state()
    pipe(images(), p=1.0, generator=make_generator(3))
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(ValueError, match="generator"):
        pipe(images(), p=0.5)


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_rank_applying_its_slice_equals_slicing_the_augmented_global_batch(pipe, world_size):
    x = images(8)
    whole = pipe(x, p=0.6, generator=make_generator(7))
    per = len(x) // world_size
    parts = [pipe(x[r * per:(r + 1) * per], p=0.6, generator=make_generator(7),
                  batch_offset=r * per, global_batch=len(x))
             for r in range(world_size)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="global batch"):
        pipe(x[:per], p=0.6, generator=make_generator(7), batch_offset=len(x) - 1, global_batch=len(x))


def test_parameters_do_not_depend_on_p_so_raising_p_only_adds_transforms(pipe):
    params = pipe.sample_params(256, make_generator(9))
    lo = pipe.transforms(params, RES, RES, p=0.2)
    hi = pipe.transforms(params, RES, RES, p=0.6)
    assert (hi.color_on | ~lo.color_on).all()               # every sample recoloured at 0.2 still is at 0.6
    assert hi.color_on.sum() > lo.color_on.sum()


@pytest.mark.parametrize("name, group", [("brightness", "color_on"), ("scale", "geom"), ("xint", "blit")])
def test_each_transform_is_applied_with_probability_p(name, group):
    p = 0.3
    pipe = only(name)
    t = pipe.transforms(pipe.sample_params(20000, make_generator(11)), 64, 64, p=p)
    frac = getattr(t, group).double().mean().item()
    if name == "xint":  # a draw that rounds to a zero shift is no transform: P(|t| < 0.5 px) per axis
        p = p * (1 - (1 / (2 * 0.125 * 64)) ** 2)
    assert abs(frac - p) < 0.015


def test_the_two_rotations_together_happen_with_probability_p():
    p = 0.5
    pipe = only("rotate")
    t = pipe.transforms(pipe.sample_params(20000, make_generator(12)), RES, RES, p=p)
    assert abs(t.geom.double().mean().item() - p) < 0.015  # 1 - (1 - p_rot)^2 = p


# ---------------------------------------------------------------------------- gradients


def test_gradients_reach_the_input_to_second_order(pipe):
    """First and second order, checked numerically in float64 (R1 differentiates through the pipe's backward)."""
    params = pipe.sample_params(4, make_generator(2))
    t = pipe.transforms(params, 8, 8, p=1.0)
    assert t.geom.any() and t.color_on.any()
    x = (torch.rand([4, 3, 8, 8], dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    x.requires_grad_(True)
    for p in (1.0, 0.5):  # all samples resampled; a mix of blit, resampled and untouched ones
        fn = lambda inp, p=p: pipe.apply(inp, params, p=p)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_r1_penalty_through_the_pipe_gives_gradients_to_the_discriminator(pipe):
    """The lazy-R1 pattern: grad of D(aug(x)) wrt x with create_graph, then backward to D's weights."""
    x = images(4).requires_grad_(True)
    w = torch.randn([8, 3, 3, 3], generator=torch.Generator().manual_seed(1), requires_grad=True)
    logits = torch.nn.functional.softplus(
        torch.nn.functional.conv2d(pipe(x, p=1.0, generator=make_generator(4)), w)).sum(dim=[1, 2, 3])
    (grad_x,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    assert grad_x.abs().sum() > 0
    grad_x.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def _autograd_node_names(root: torch.Tensor) -> set[str]:
    """Names of every node in the autograd graph that produced ``root``."""
    names, seen, stack = set(), set(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def test_r1_graph_through_the_pipe_uses_no_grid_sampler_op():
    """torch 2.11 with CUDA has no derivative for aten::grid_sampler_2d_backward, so the
    R1 penalty through the pipe died there; the pipe must not use grid_sample at all."""
    x = images(4, res=8).requires_grad_(True)
    y = AugmentPipe(impl="ref")(x, p=1.0, generator=make_generator(2))
    (grad_x,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    names = _autograd_node_names(grad_x.square().sum())
    assert any("Gather" in n or "Scatter" in n for n in names), names  # the warp is in the graph
    assert not [n for n in names if "gridsampler" in n.lower()], names


# ---------------------------------------------------------------------------- non-leaking geometry


def test_identity_warp_reconstructs_the_image():
    """The sym6 up/down pair is orthogonal: resampling alone must not blur or shift."""
    x = images(2)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(AugmentPipe(impl="ref")._resample(x, eye), x, rtol=0, atol=1e-5)


def test_whole_pixel_shift_through_the_resampler_matches_the_exact_blit():
    x = images(2)
    shift = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    shift[:, 0, 2], shift[:, 1, 2] = -1.0, 1.0  # output (x, y) reads input (x - 1, y + 1)
    pipe = AugmentPipe(impl="ref")
    warped, blitted = pipe._resample(x, shift), pipe._blit(x, shift)
    torch.testing.assert_close(warped, blitted, rtol=0, atol=1e-5)  # borders too: both mirror the image
    torch.testing.assert_close(blitted[:, :, :-1, 1:], x[:, :, 1:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(blitted[:, :, :, 0], blitted[:, :, :, 1], rtol=0, atol=0)  # mirrored column


def test_xflip_and_rot90_are_exact_pixel_permutations():
    x = images(32)
    y = only("xflip", "rotate90")(x, p=1.0, generator=make_generator(6))
    dihedral = [x.flip(3).rot90(k, dims=(2, 3)) for k in range(4)] + [x.rot90(k, dims=(2, 3)) for k in range(4)]
    kinds = set()
    for i in range(len(x)):
        match = [k for k, d in enumerate(dihedral) if torch.equal(y[i], d[i])]
        assert match, f"sample {i} is not a flip/rotation of its input"
        kinds.update(match)
    assert len(kinds) >= 6  # several of the 8 group elements occur


def test_geometric_augmentation_of_a_constant_image_stays_constant():
    """Mirrored borders: no black corners or edges, whatever the rotation, scale or shift."""
    x = torch.full([16, 3, RES, RES], 0.37)
    y = only("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")(x, p=1.0, generator=make_generator(8))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)


def _blob() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(RES) - (RES - 1) / 2, torch.arange(RES) - (RES - 1) / 2, indexing="ij")
    return torch.exp(-(xx**2 + yy**2) / 4.0) * 2 - 1, xx, yy                # [H, W] in [-1, 1]


def _centroid(img: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> tuple[float, float]:
    w = (img + 1).clamp(min=0)                                              # [H, W]
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


@pytest.mark.parametrize("theta, scale", [(math.pi / 2, 1.0), (1.0, 1.0), (2.5, 1.3), (0.0, 0.7)])
def test_rotations_and_scalings_turn_about_the_image_centre(theta, scale):
    """The sym6 filter is asymmetric (it delays the upsampled image by ~0.2 px); a
    resampler that ignored that would rotate about the wrong point and move a centred
    blob by up to ~0.5 px."""
    blob, xx, yy = _blob()
    c, s = math.cos(theta) / scale, math.sin(theta) / scale
    G = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)[None]
    out = AugmentPipe(impl="ref")._resample(blob.expand(1, 3, RES, RES), G)[0, 0]
    cx, cy = _centroid(out, xx, yy)
    assert abs(cx) < 0.02 and abs(cy) < 0.02, (cx, cy)


def test_mean_of_many_geometric_augmentations_of_a_centred_blob_stays_centred():
    """Scalings and rotations are drawn symmetrically about the centre, so on average
    they must not move content."""
    blob, xx, yy = _blob()
    x = blob.expand(256, 3, RES, RES)
    y = only("scale", "rotate", "aniso")(x, p=1.0, generator=make_generator(13))
    cx, cy = _centroid(y.mean(dim=0)[0], xx, yy)
    assert abs(cx) < 0.05 and abs(cy) < 0.05, (cx, cy)
    assert (y - x).abs().mean() > 0.02                                      # it did move each one


# ---------------------------------------------------------------------------- colour


def _luma(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)  # [N, 1, H, W]


def test_brightness_adds_one_offset_per_image():
    x = images(16)
    y = only("brightness")(x, p=1.0, generator=make_generator(20))
    delta = (y - x).flatten(1)                                  # [N, C*H*W]
    assert (delta.std(dim=1) < 1e-5).all()
    assert 0.1 < delta.mean(dim=1).std() < 0.35                 # offsets ~ N(0, 0.2)


def test_contrast_scales_about_mid_grey():
    x = images(16)
    y = only("contrast")(x, p=1.0, generator=make_generator(21))
    ratio = (y / x).flatten(1)
    assert (ratio.std(dim=1) < 1e-4).all() and (ratio > 0).all()
    assert 0.2 < ratio.mean(dim=1).log2().std() < 0.8          # log2 factors ~ N(0, 0.5)


def test_luma_flip_negates_luma_and_keeps_chroma():
    x = images(32)
    y = only("lumaflip")(x, p=1.0, generator=make_generator(22))
    flipped = (_luma(y) - _luma(x)).flatten(1).abs().amax(dim=1) > 1e-4
    assert 0 < flipped.sum() < 32
    torch.testing.assert_close(_luma(y[flipped]), -_luma(x[flipped]), rtol=0, atol=1e-5)
    torch.testing.assert_close(y - _luma(y), x - _luma(x), rtol=0, atol=1e-5)


def test_hue_rotation_keeps_luma_and_chroma_length():
    x = images(16)
    y = only("hue")(x, p=1.0, generator=make_generator(23))
    torch.testing.assert_close(_luma(y), _luma(x), rtol=0, atol=1e-5)
    chroma_len = lambda t: (t - _luma(t)).norm(dim=1)  # noqa: E731
    torch.testing.assert_close(chroma_len(y), chroma_len(x), rtol=0, atol=1e-5)
    assert (y - x).abs().amax() > 0.1


def test_saturation_scales_chroma_and_leaves_grey_alone():
    x = images(16)
    y = only("saturation")(x, p=1.0, generator=make_generator(24))
    torch.testing.assert_close(_luma(y), _luma(x), rtol=0, atol=1e-5)
    ratio = ((y - _luma(y)) / (x - _luma(x))).flatten(1)        # one chroma gain per image
    assert (ratio.std(dim=1) < 1e-3).all()
    grey = x[:, :1].expand(-1, 3, -1, -1)
    torch.testing.assert_close(only("saturation", "hue")(grey, p=1.0, generator=make_generator(24)), grey,
                               rtol=0, atol=1e-5)


def test_grayscale_images_are_recoloured_through_their_grey_rgb():
    x = images(8, channels=1)
    y = only("brightness", "contrast")(x, p=1.0, generator=make_generator(25))
    rgb = only("brightness", "contrast")(x.expand(-1, 3, -1, -1), p=1.0, generator=make_generator(25))
    torch.testing.assert_close(y, rgb.mean(dim=1, keepdim=True), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- p controller


def _feed(ada: AdaController, steps: int, rt: float, batch: int = 32) -> list[float]:
    """Run ``steps`` training steps whose real logits have E[sign] = rt; return p after each."""
    n_pos = round((rt + 1) / 2 * batch)
    logits = torch.tensor([1.5] * n_pos + [-0.5] * (batch - n_pos))
    ps = []
    for _ in range(steps):
        ada.accumulate(logits)
        ada.step(batch)
        ps.append(ada.p)
    return ps


def test_ada_raises_p_when_d_is_overconfident_on_reals_by_the_published_step():
    ada = AdaController(AugmentConfig(mode="ada"))
    ps = _feed(ada, 12, rt=0.875)
    step = 32 * 4 / (500 * 1000)
    assert ps[:3] == [0.0, 0.0, 0.0]                          # adjusted only every 4 steps
    assert ps[3] == pytest.approx(step) and ps[7] == pytest.approx(2 * step) and ps[11] == pytest.approx(3 * step)
    assert ada.last_rt == pytest.approx(0.875)


def test_ada_lowers_p_when_d_is_not_overconfident_and_stops_at_zero():
    ada = AdaController(AugmentConfig(mode="ada", p=0.0003))
    step = 32 * 4 / (500 * 1000)
    ps = _feed(ada, 8, rt=0.25)
    assert ps[3] == pytest.approx(0.0003 - step)
    assert ps[7] == 0.0                                       # clamped, not negative


def test_ada_p_never_exceeds_one():
    ada = AdaController(AugmentConfig(mode="ada", p=0.9999))
    assert _feed(ada, 4, rt=1.0)[-1] == 1.0


def test_fixed_and_none_modes_keep_p_but_still_measure_rt():
    fixed = AdaController(AugmentConfig(mode="fixed", p=0.3))
    assert _feed(fixed, 8, rt=1.0) == [0.3] * 8 and fixed.last_rt == 1.0
    none = AdaController(AugmentConfig(mode="none"))
    assert _feed(none, 4, rt=1.0) == [0.0] * 4


def test_all_reduce_hook_combines_the_statistics_of_every_rank():
    ranks = [AdaController(AugmentConfig()) for _ in range(2)]
    # rank 0 sees overconfident D, rank 1 does not; together E[sign] = 0.5 < 0.6.
    ranks[0].accumulate(torch.ones(12))
    ranks[1].accumulate(torch.tensor([1.0] * 6 + [-1.0] * 6))
    ranks[0].p = ranks[1].p = 0.5
    totals = torch.tensor([sum(r.state_dict()[k] for r in ranks) for k in ("signs_sum", "signs_count")],
                          dtype=torch.float64)  # [sum of signs, count] over both ranks

    def all_reduce(t: torch.Tensor) -> None:
        t.copy_(totals)

    for r in ranks:
        r.steps = 3
        assert r.step(24, all_reduce=all_reduce)
    assert ranks[0].last_rt == ranks[1].last_rt == pytest.approx(0.5)
    assert ranks[0].p == ranks[1].p < 0.5


def test_controller_resumed_from_its_state_dict_continues_identically():
    rts = [0.9, 0.7, 0.2, 0.95, 0.61, 0.3, 0.8] * 3
    full = AdaController(AugmentConfig())
    for rt in rts:
        _feed(full, 3, rt)
    first = AdaController(AugmentConfig())
    for rt in rts[:10]:
        _feed(first, 3, rt)
    state = first.state_dict()
    assert all(isinstance(v, (int, float)) for v in state.values())  # plain data for weights_only loads
    resumed = AdaController(AugmentConfig())
    resumed.load_state_dict(state)
    for rt in rts[10:]:
        _feed(resumed, 3, rt)
    assert resumed.state_dict() == full.state_dict()
    assert full.p > 0


def test_pipe_p_is_settable_validated_and_saved_in_its_state_dict():
    pipe = AugmentPipe(impl="ref")
    pipe.p = 0.25
    other = AugmentPipe(impl="ref")
    other.load_state_dict(pipe.state_dict())
    assert other.p == 0.25
    with pytest.raises(ValueError, match="probability"):
        pipe.p = 1.5


@pytest.mark.parametrize("bad, match", [
    ({"mode": "always"}, "mode"),
    ({"p": 1.2}, "probability"),
    ({"mode": "none", "p": 0.2}, "--set augment.mode=fixed"),
    ({"target": 1.0}, "target"),
    ({"interval": 0}, "interval"),
])
def test_bad_augment_config_names_the_option(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(AugmentConfig, bad)


def test_from_config_builds_the_named_pipe():
    pipe = AugmentPipe.from_config(AugmentConfig(mode="fixed", p=0.4, pipe="bg"))
    assert pipe.p == 0.4
    assert all(pipe.mult[k] == 0 for k in PIPES["color"]) and all(pipe.mult[k] == 1 for k in PIPES["bg"])
    assert math.isclose(AdaController(AugmentConfig()).step_size * 32, 32 * 4 / 500e3)


# ---------------------------------------------------------------------------- F.grid_sample where first order suffices


def _pipe_grids(monkeypatch, n=6, res=RES, seed=3):
    """The (upsampled image, grid) pairs the pipe's warp samples, with every geometric transform on."""
    from gan.ops import grid_sample as gs

    seen, real = [], gs.grid_sample_reflect

    def spy(images_, grid, second_order=True):
        seen.append((images_.detach().clone(), grid.clone()))
        return real(images_, grid, second_order)

    monkeypatch.setattr(gs, "grid_sample_reflect", spy)
    only("scale", "rotate", "aniso", "xfrac")(images(n, res=res, seed=seed), p=1.0, generator=make_generator(seed))
    monkeypatch.setattr(gs, "grid_sample_reflect", real)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("seed", [3, 4])
def test_torch_grid_sample_equals_our_sampler_on_the_pipes_grids_values_and_gradients(monkeypatch, seed):
    """F.grid_sample(reflection) reflects the coordinate and clamps it, ours interpolates the
    mirrored image: for bilinear sampling these agree at any distance. The pipe's grids reach
    beyond the padded area (large scalings), and the two differ only by F.grid_sample taking the
    grid in float32 (the grid's rounding, ~1e-7 of the image size)."""
    from gan.ops.grid_sample import grid_sample_reflect

    up, grid = _pipe_grids(monkeypatch, seed=seed)
    assert grid.dtype == torch.float64 and grid.abs().max() > 1  # some samples mirror back in
    x1, x2 = up.clone().requires_grad_(True), up.clone().requires_grad_(True)
    ours, theirs = grid_sample_reflect(x1, grid), grid_sample_reflect(x2, grid, second_order=False)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)
    w = torch.randn(ours.shape, generator=torch.Generator().manual_seed(seed))
    (g1,) = torch.autograd.grad((ours * w).sum(), x1)
    (g2,) = torch.autograd.grad((theirs * w).sum(), x2)
    torch.testing.assert_close(g2, g1, rtol=0, atol=1e-4)


def _sampler_ops(second_order: bool) -> set[str]:
    x = images(4, res=8).requires_grad_(True)
    pipe = only("scale", "rotate")
    pipe.impl = "auto"
    y = pipe.apply(x, pipe.sample_params(4, make_generator(5)), p=1.0, second_order=second_order)
    return {n for n in _autograd_node_names(y.square().sum()) if "gridsampler" in n.lower() or "Gather" in n}


def test_first_order_calls_warp_with_torch_grid_sample_and_mtf_ops_ref_keeps_ours(monkeypatch):
    from gan.ops import _build

    monkeypatch.setattr(_build, "get_plugin", lambda target, verify=None: None)  # upfirdn2d: the reference
    monkeypatch.delenv("MTF_OPS", raising=False)
    first = _sampler_ops(second_order=False)
    assert any("gridsampler" in n.lower() for n in first) and not any("Gather" in n for n in first), first
    assert not any("gridsampler" in n.lower() for n in _sampler_ops(second_order=True))  # R1: ours
    monkeypatch.setenv("MTF_OPS", "ref")
    assert not any("gridsampler" in n.lower() for n in _sampler_ops(second_order=False))


def test_fixed_mode_keeps_rt_on_the_device_until_it_is_read():
    fixed = AdaController(AugmentConfig(mode="fixed", p=0.3))
    _feed(fixed, 4, rt=0.5)
    assert fixed._rt_stats is not None                          # measured, not read yet
    assert fixed.last_rt == 0.5 and fixed._rt_stats is None     # read once, when asked
    _feed(fixed, 3, rt=1.0)                                     # an interval not completed: still the last one
    assert fixed.last_rt == 0.5
    _feed(fixed, 1, rt=1.0)
    assert fixed.last_rt == 1.0 and fixed.p == 0.3
    state = fixed.state_dict()
    assert state["signs_count"] == 0.0 and state["last_rt"] == 1.0
