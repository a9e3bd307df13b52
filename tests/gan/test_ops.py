"""Parity of the compiled ops with their reference twins (values, 1st and 2nd order gradients),
and the plain-torch bilinear sampler (gan/ops/grid_sample.py) against ``F.grid_sample``.

The grids are pairwise-covering: every value of every parameter meets every value of
every other parameter in at least one case, which finds the interaction bugs (a
padding that only breaks with up=4, a clamp that only breaks on channels-last) at a
fraction of the full product's cost. The ``cpp`` build is shared by the module (and
with ``test_ops_build.py``) through one extension cache under the pytest base temp
folder, or ``$MTF_EXTENSIONS_DIR`` when set.
"""

from __future__ import annotations

import importlib
import itertools
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.utils._python_dispatch import TorchDispatchMode

from gan.ops import _build, activation_funcs, bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from gan.ops.bias_act import bias_act_ref
from gan.ops.grid_sample import grid_sample_reflect
from gan.ops.bias_act import self_test as bias_act_self_test
from gan.ops.upfirdn2d import TILED_ENV, TiledKernel, tiled_enabled, upfirdn2d_compiled, upfirdn2d_ref
from gan.ops.upfirdn2d import self_test as upfirdn2d_self_test

upfirdn2d_module = importlib.import_module("gan.ops.upfirdn2d")  # gan.ops.upfirdn2d is also the function


# ---------------------------------------------------------------------------- grid helper

def pairwise(params: dict[str, list]) -> list[dict]:
    """A small list of cases in which every pair of (parameter, value)s appears at least once.

    Greedy: start each case from the first uncovered pair, then give every other
    parameter the value that covers the most still-uncovered pairs.
    """
    names = list(params)
    uncovered = {((a, i), (b, j))
                 for ai, a in enumerate(names) for b in names[ai + 1:]
                 for i in range(len(params[a])) for j in range(len(params[b]))}
    cases = []
    while uncovered:
        (a, i), (b, j) = min(uncovered, key=lambda p: (names.index(p[0][0]), p[0][1], names.index(p[1][0]), p[1][1]))
        case = {a: i, b: j}
        for name in names:
            if name in case:
                continue
            def gain(v):
                return sum(((m, case[m]), (name, v)) in uncovered or ((name, v), (m, case[m])) in uncovered
                           for m in case)
            case[name] = max(range(len(params[name])), key=gain)
        for (m, u), (n, v) in list(uncovered):
            if case[m] == u and case[n] == v:
                uncovered.discard(((m, u), (n, v)))
        cases.append({name: params[name][case[name]] for name in names})
    return cases


def _ids(cases):
    return [",".join(f"{k}={v}" for k, v in c.items()) for c in cases]


def test_pairwise_grid_covers_every_pair_of_values():
    params = {"a": [1, 2, 3], "b": ["x", "y"], "c": [None, 0.5, 7, 9]}
    cases = pairwise(params)
    for (p, q) in itertools.combinations(params, 2):
        for u, v in itertools.product(params[p], params[q]):
            assert any(c[p] == u and c[q] == v for c in cases), (p, u, q, v)
    assert len(cases) < 3 * 2 * 4  # smaller than the full product


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cpp_plugin(ext_dir):
    """The ``cpp`` target, built once (about a minute on 2 cores) and loaded."""
    plugin = _build.get_plugin("cpp")
    assert plugin is not None, f"the cpp build failed: {_build.failure('cpp')}"
    return plugin


DTYPE_TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a non-dense view: every other column of a wider tensor
        wide = torch.cat([x, torch.zeros_like(x)], dim=-1)
        return wide[..., : x.shape[-1]]
    return x.contiguous()


def _check_grads(fn_impl, fn_ref, inputs, second_order=True):
    """First and second order gradients of ``fn_impl`` equal those of ``fn_ref`` (float64)."""
    def grads(fn):
        ins = [t.detach().clone().requires_grad_(True) for t in inputs]
        y = fn(*ins)
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)
        g = torch.autograd.grad((y * w).sum(), ins, create_graph=second_order)
        out = [t.detach() for t in g]
        if second_order:
            v = sum((gi * torch.cos(torch.arange(gi.numel(), device=gi.device).reshape(gi.shape).to(gi.dtype))).sum()
                    for gi in g)
            if v.requires_grad:
                gg = torch.autograd.grad(v, ins, allow_unused=True, materialize_grads=True)
            else:  # the gradient does not depend on the inputs (linear): zero second order
                gg = [torch.zeros_like(t) for t in ins]
            out += [t.detach() for t in gg]
        return out
    for got, want in zip(grads(fn_impl), grads(fn_ref)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------- bias_act

BIAS_ACT_GRID = pairwise({
    "act": list(activation_funcs),
    "alpha": [None, 0.1],
    "gain": [None, 1.0, 0.5],
    "clamp": [None, 0.8, 256.0],
    "bias": ["nchw_dim1", "nc_dim1", "nchw_dim3", "nchw_dim0", "none"],
    "layout": ["contiguous", "channels_last", "strided"],
    "batch": [1, 3],
})

_BIAS_SHAPES = {"nchw_dim1": (4, 1), "nc_dim1": (2, 1), "nchw_dim3": (4, 3), "nchw_dim0": (4, 0), "none": (4, None)}


def _bias_act_inputs(case, dtype, device="cpu", seed=0):
    ndim, dim = _BIAS_SHAPES[case["bias"]]
    shape = [case["batch"], 3, 4, 5][:ndim]
    g = torch.Generator().manual_seed(seed)
    x = _layout((torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(dtype).to(device), case["layout"])
    b = None if dim is None else torch.randn([shape[dim]], generator=g, dtype=torch.float64).to(dtype).to(device)
    kw = dict(dim=dim if dim is not None else 1, act=case["act"], alpha=case["alpha"], gain=case["gain"],
              clamp=case["clamp"])
    return x, b, kw


def _check_bias_act(case, impl, device, dtypes):
    for dtype in dtypes:
        x, b, kw = _bias_act_inputs(case, dtype, device)
        got = bias_act(x, b, impl=impl, **kw)
        want = bias_act_ref(x, b, **kw)
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **DTYPE_TOL[dtype])
    x, b, kw = _bias_act_inputs(case, torch.float64, device, seed=1)
    inputs = (x,) if b is None else (x, b)
    fn_impl = lambda x, b=None: bias_act(x, b, impl=impl, **kw)  # noqa: E731
    fn_ref = lambda x, b=None: bias_act_ref(x, b, **kw)  # noqa: E731
    _check_grads(fn_impl, fn_ref, inputs)
    ins = [t.detach().clone().requires_grad_(True) for t in inputs]
    assert gradcheck(fn_impl, ins, fast_mode=True)
    assert gradgradcheck(fn_impl, ins, fast_mode=True)


@pytest.mark.parametrize("case", BIAS_ACT_GRID, ids=_ids(BIAS_ACT_GRID))
def test_bias_act_cpp_matches_ref_values_and_gradients(cpp_plugin, case):
    _check_bias_act(case, "cpp", "cpu", (torch.float64, torch.float32, torch.float16))


def test_bias_act_table_defaults_match_published_gains():
    sqrt2 = 2 ** 0.5
    assert {k: v.def_gain for k, v in activation_funcs.items()} == pytest.approx(
        dict(linear=1, relu=sqrt2, lrelu=sqrt2, tanh=1, sigmoid=1, elu=1, selu=1, softplus=1, swish=sqrt2))
    assert activation_funcs["lrelu"].def_alpha == pytest.approx(0.2)
    x = torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(bias_act(x, None, dim=0, act="lrelu", impl="ref"), torch.tensor([-0.2, 2.0]) * sqrt2)
    torch.testing.assert_close(bias_act(x, None, dim=0, act="relu", gain=1, clamp=1.5, impl="ref"),
                               torch.tensor([0.0, 1.5]))


def test_bias_act_cpp_promotes_mixed_dtypes_like_ref(cpp_plugin):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float16)
    b = torch.randn(3, dtype=torch.float32)
    got = bias_act(x, b, act="lrelu", impl="cpp")
    want = bias_act(x, b, act="lrelu", impl="ref")
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_bias_act_rejects_a_bias_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"b has 4 entries but x.shape\[1\] = 3"):
        bias_act(torch.zeros(2, 3), torch.zeros(4), impl="cpp")


# ---------------------------------------------------------------------------- upfirdn2d

FILTERS = {
    "4x4": lambda: setup_filter([1, 3, 3, 1]),                          # even, non-separable (outer product)
    "3x3": lambda: setup_filter([1, 2, 1]),                             # odd, non-separable
    "sep8": lambda: setup_filter([1, 2, 3, 4, 4, 3, 2, 1]),             # even, separable (>= 8 taps)
    "sep5": lambda: setup_filter([1, 4, 6, 4, 1], separable=True),      # odd, separable
    "2x3": lambda: torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]]),  # non-square, asymmetric
    "none": lambda: None,                                               # identity
}

UPFIRDN_GRID = pairwise({
    "filter": list(FILTERS),
    "up": [1, 2, 4, (2, 1)],
    "down": [1, 2, 4, (1, 2)],
    "padding": [0, 2, (2, 1, 0, 3), (3, -1, -1, 2)],
    "flip_filter": [False, True],
    "gain": [1, 2.5],
    "layout": ["contiguous", "channels_last", "strided"],
    "batch": [1, 2],
})


def _upfirdn_inputs(case, dtype, device="cpu", seed=0):
    f = FILTERS[case["filter"]]()
    fh = 1 if f is None else f.shape[0]
    fw = 1 if f is None else f.shape[-1]
    up = case["up"] if isinstance(case["up"], tuple) else (case["up"], case["up"])
    pad = case["padding"]
    pad = (pad, pad, pad, pad) if isinstance(pad, int) else pad
    # Smallest size >= (6, 5) whose padded, upsampled image still holds the filter.
    h = max(6, -(-(fh - pad[2] - pad[3]) // up[1]))
    w = max(5, -(-(fw - pad[0] - pad[1]) // up[0]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([case["batch"], 2, h, w], generator=g, dtype=torch.float64).to(dtype).to(device)
    kw = dict(up=case["up"], down=case["down"], padding=list(pad), flip_filter=case["flip_filter"], gain=case["gain"])
    return _layout(x, case["layout"]), (None if f is None else f.to(device)), kw


class _PixelwisePlugin:
    """The cpp plugin with upfirdn2d routed through the CUDA kernel's per-pixel math (on CPU)."""

    def __init__(self, plugin):
        self.upfirdn2d = plugin.upfirdn2d_pixelwise


def _check_upfirdn2d(case, impl, device, dtypes, plugin=None):
    """``impl`` through the public op, or through ``upfirdn2d_compiled`` with ``plugin`` if given."""
    _check_upfirdn2d_inputs(lambda dtype, seed: _upfirdn_inputs(case, dtype, device, seed), impl, dtypes, plugin)


def _check_upfirdn2d_inputs(inputs, impl, dtypes, plugin=None):
    """Values in ``dtypes`` and float64 first- and second-order gradients against the reference;
    ``inputs(dtype, seed)`` -> ``(x, f, kw)``."""
    def run(x, f, **kw):
        if plugin is None:
            return upfirdn2d(x, f, impl=impl, **kw)
        return upfirdn2d_compiled(x, f, kw.get("up", 1), kw.get("down", 1), kw.get("padding", 0),
                                  kw.get("flip_filter", False), kw.get("gain", 1), plugin)

    for dtype in dtypes:
        x, f, kw = inputs(dtype, 0)
        got = run(x, f, **kw)
        want = upfirdn2d_ref(x, f, **kw)
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, **DTYPE_TOL[dtype])
    x, f, kw = inputs(torch.float64, 1)
    fn_impl = lambda x: run(x, f, **kw)  # noqa: E731
    _check_grads(fn_impl, lambda x: upfirdn2d_ref(x, f, **kw), (x,))
    xg = x.detach().clone().requires_grad_(True)
    assert gradcheck(fn_impl, (xg,), fast_mode=True)
    assert gradgradcheck(fn_impl, (xg,), fast_mode=True)


@pytest.mark.parametrize("case", UPFIRDN_GRID, ids=_ids(UPFIRDN_GRID))
def test_upfirdn2d_cpp_matches_ref_values_and_gradients(cpp_plugin, case):
    _check_upfirdn2d(case, "cpp", "cpu", (torch.float64, torch.float32, torch.float16))


@pytest.mark.parametrize("case", UPFIRDN_GRID, ids=_ids(UPFIRDN_GRID))
def test_upfirdn2d_cuda_kernel_math_matches_ref_on_cpu(cpp_plugin, case):
    # The CPU row kernel and the CUDA per-pixel kernel differ; this runs the latter's
    # shared math (upfirdn2d.h: upfirdn2d_pixel) on the CPU over the same grid.
    _check_upfirdn2d(case, "cpp", "cpu", (torch.float64, torch.float32, torch.float16),
                     plugin=_PixelwisePlugin(cpp_plugin))


@pytest.mark.parametrize("case", UPFIRDN_GRID, ids=_ids(UPFIRDN_GRID))
def test_upfirdn2d_tiled_kernel_math_matches_ref_on_cpu(cpp_plugin, case):
    # The tiled CUDA kernel's tile math (upfirdn2d.h: tile_*) run block by block on the CPU.
    # At most 3 channel images in flight, so blocks also loop over channel images.
    _check_upfirdn2d(case, "cpp", "cpu", (torch.float64, torch.float32, torch.float16),
                     plugin=TiledKernel(cpp_plugin, max_grid_z=3))


# The passes StyleGAN2 runs here, at sizes that span several tiles with partial ones at the
# edges: (name, filter, x [N, C, H, W], upfirdn2d keywords as layers.py / networks.py / augment.py
# call it). Each one's forward and gradient passes must hit a specialization of the tiled kernel.
STYLEGAN_PASSES = [
    ("upsample2d_4x4", lambda: setup_filter([1, 3, 3, 1]), (2, 3, 20, 37), dict(up=2, padding=[2, 1, 2, 1], gain=4)),
    ("blur_after_transposed_conv", lambda: setup_filter([1, 3, 3, 1]), (1, 3, 41, 67),
     dict(padding=[1, 1, 1, 1], gain=4)),
    ("blur_before_stride2_conv", lambda: setup_filter([1, 3, 3, 1]), (1, 2, 36, 70), dict(padding=[1, 1, 1, 1])),
    ("downsample2d_4x4", lambda: setup_filter([1, 3, 3, 1]), (2, 2, 70, 66), dict(down=2, padding=[1, 1, 1, 1])),
    ("augment_sym6_up", lambda: setup_filter(list(range(1, 13))), (1, 2, 13, 70), dict(up=2, padding=[6, 5, 6, 5],
                                                                                         gain=4)),
    ("augment_sym6_down", lambda: setup_filter(list(range(1, 13))), (1, 2, 50, 140),
     dict(down=2, flip_filter=True)),
    ("separable_4_up", lambda: setup_filter([1, 3, 3, 1], separable=True), (1, 2, 19, 70),
     dict(up=2, padding=[2, 1, 2, 1], gain=4)),
    ("separable_4_down", lambda: setup_filter([1, 3, 3, 1], separable=True), (1, 2, 70, 66),
     dict(down=2, padding=[1, 1, 1, 1])),
    ("separable_4_filter", lambda: setup_filter([1, 3, 3, 1], separable=True), (1, 2, 70, 131),
     dict(padding=[2, 1, 2, 1])),
]


def _pass_inputs(shape, make_f, kw, device):
    def inputs(dtype, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
        return x, make_f().to(device), kw
    return inputs


def _tiled_kernel_names(plugin, shape, f, kw, elem_bytes=4) -> list[str]:
    """Which tiled kernel each 2-D pass of the op and of its gradient takes (upfirdn2d.h's plan)."""
    n, c, h, w = shape
    upx = upy = kw.get("up", 1)
    downx = downy = kw.get("down", 1)
    p = kw.get("padding", 0)
    padx0, padx1, pady0, pady1 = (p, p, p, p) if isinstance(p, int) else p
    k = f.shape[-1]
    fh = f.shape[0] if f.ndim == 2 else k
    oh = (h * upy + pady0 + pady1 - fh) // downy + 1
    ow = (w * upx + padx0 + padx1 - k) // downx + 1
    # The gradient's padding, as _Upfirdn2dCompiled.backward computes it.
    gp = (k - padx0 - 1, w * upx - ow * downx + padx0 - upx + 1, fh - pady0 - 1, h * upy - oh * downy + pady0 - upy + 1)
    names = []
    for (sh, u, d, pad) in (((n, c, h, w), upx, downx, (padx0, padx1, pady0, pady1)), ((n, c, oh, ow), downx, upx, gp)):
        if f.ndim == 2:
            names.append(plugin.upfirdn2d_tiled_kernel_name(*sh, fh, k, u, u, d, d, *pad, elem_bytes))
        else:  # separable: horizontal [1, k], then vertical [k, 1] on the horizontal pass's output
            names.append(plugin.upfirdn2d_tiled_kernel_name(*sh, 1, k, u, 1, d, 1, pad[0], pad[1], 0, 0, elem_bytes))
            mid_w = (sh[3] * u + pad[0] + pad[1] - k) // d + 1
            names.append(plugin.upfirdn2d_tiled_kernel_name(sh[0], sh[1], sh[2], mid_w, k, 1, 1, u, 1, d,
                                                            0, 0, pad[2], pad[3], elem_bytes))
    return names


@pytest.mark.parametrize("name, make_f, shape, kw", STYLEGAN_PASSES, ids=[p[0] for p in STYLEGAN_PASSES])
def test_upfirdn2d_tiled_specializations_match_ref_on_cpu(cpp_plugin, name, make_f, shape, kw):
    for elem_bytes in (4, 8):  # the same specialization for fp16/fp32 (float tiles) and fp64
        kernels = _tiled_kernel_names(cpp_plugin, shape, make_f(), kw, elem_bytes)
        assert all(k.startswith("spec ") for k in kernels), kernels
    _check_upfirdn2d_inputs(_pass_inputs(shape, make_f, kw, "cpu"), "cpp",
                            (torch.float64, torch.float32, torch.float16), plugin=TiledKernel(cpp_plugin))


def test_upfirdn2d_tiled_plan_takes_the_generic_path_or_declines(cpp_plugin):
    name = cpp_plugin.upfirdn2d_tiled_kernel_name
    assert name(1, 3, 20, 37, 4, 4, 2, 2, 1, 1, 2, 1, 2, 1, 4) == "spec 0 up=2x2 down=1x1 taps=4x4 tile=64x32"
    assert name(1, 3, 20, 37, 3, 3, 4, 4, 1, 1, 2, 1, 2, 1, 4).startswith("generic tile=32x32")
    assert name(1, 3, 64, 64, 9, 9, 1, 1, 4, 4, 1, 1, 1, 1, 8) == "generic tile=32x8"  # smaller tile to fit
    assert name(1, 3, 64, 64, 64, 64, 1, 1, 4, 4, 1, 1, 1, 1, 8) == "pixelwise"  # no tile fits shared memory
    assert name(1, 3, 2 ** 16, 2 ** 15, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 4) == "pixelwise"  # offsets past int32


def test_upfirdn2d_tiled_falls_back_to_per_pixel_when_no_tile_fits(cpp_plugin):
    x = torch.randn(1, 2, 40, 44, dtype=torch.float64)
    f = torch.rand(40, 40, dtype=torch.float32)
    kw = dict(down=4, padding=[3, 2, 1, 3])
    assert cpp_plugin.upfirdn2d_tiled_kernel_name(1, 2, 40, 44, 40, 40, 1, 1, 4, 4, 3, 2, 1, 3, 8) == "pixelwise"
    got = upfirdn2d_compiled(x, f, 1, 4, kw["padding"], False, 1, TiledKernel(cpp_plugin))
    torch.testing.assert_close(got, upfirdn2d_ref(x, f, **kw), **DTYPE_TOL[torch.float64])


def test_mtf_ops_cuda_tiled_routes_cuda_calls_and_their_gradients_to_the_tiled_kernel(cpp_plugin, monkeypatch):
    calls = []

    class Spy:  # the cpp plugin, recording which kernel each pass takes
        def upfirdn2d(self, *args):
            calls.append("per-pixel")
            return cpp_plugin.upfirdn2d(*args)

        def upfirdn2d_tiled(self, *args):
            calls.append("tiled")
            return cpp_plugin.upfirdn2d_tiled(*args)

    spy = Spy()
    monkeypatch.setattr(_build, "choose_impl", lambda op, x, impl, shape_class="any": "cuda")
    monkeypatch.setattr(_build, "get_plugin", lambda target, verify=None: spy)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 6, 7, requires_grad=True)
    for env, want in ((None, "per-pixel"), ("0", "per-pixel"), ("1", "tiled")):
        if env is None:
            monkeypatch.delenv(TILED_ENV, raising=False)
        else:
            monkeypatch.setenv(TILED_ENV, env)
        calls.clear()
        y = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])
        torch.autograd.grad(y.square().sum(), x)
        assert calls == [want, want], (env, calls)
    monkeypatch.setenv(TILED_ENV, "maybe")
    with pytest.raises(ValueError, match=TILED_ENV):
        tiled_enabled()


# ---------------------------------------------------------------------------- prepared-taps cache

class _OpCounter(TorchDispatchMode):
    """The aten operators run inside the mode (the plugin's own at::empty included)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def empty_taps_cache(monkeypatch):
    monkeypatch.setattr(upfirdn2d_module, "_taps_cache", {})


@pytest.mark.parametrize("taps, dtype", [([1, 3, 3, 1], torch.float32), (list(range(1, 13)), torch.float16)])
def test_a_repeated_call_prepares_no_taps(cpp_plugin, empty_taps_cache, taps, dtype):
    f = setup_filter(taps)
    x = torch.randn(1, 2, 8, 9).to(dtype)
    counts, outs = [], []
    for _ in range(3):
        with _OpCounter() as mode:
            outs.append(upfirdn2d_compiled(x, f, 2, 1, [2, 1, 2, 1], False, 4, cpp_plugin))
        counts.append(mode.ops)
    assert {"mul", "flip"} <= set(counts[0])                  # the first call prepares the taps
    assert counts[1] == counts[2] and len(counts[1]) < len(counts[0])
    assert not {"mul", "flip", "_to_copy", "clone", "copy_"} & set(counts[1]), counts[1]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    torch.testing.assert_close(outs[1], upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1], gain=4),
                               **DTYPE_TOL[dtype])


def test_taps_cache_sees_an_in_place_change_of_the_filter(cpp_plugin, empty_taps_cache):
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 8, 9, dtype=torch.float64)
    run = lambda: upfirdn2d_compiled(x, f, 1, 2, 1, False, 1, cpp_plugin)  # noqa: E731
    before = run()
    f.mul_(3)                                                   # same tensor, new version
    after = run()
    torch.testing.assert_close(after, 3 * before)
    torch.testing.assert_close(after, upfirdn2d_ref(x, f, down=2, padding=1))
    f.copy_(setup_filter([1, 2, 1, 1]))
    torch.testing.assert_close(run(), upfirdn2d_ref(x, f, down=2, padding=1))


def test_taps_cache_is_bounded_and_keeps_no_filter_alive(cpp_plugin, empty_taps_cache, monkeypatch):
    import gc
    import weakref

    cache = upfirdn2d_module._taps_cache
    x = torch.randn(1, 1, 6, 6)
    f = setup_filter([1, 2, 1])
    for flip in (False, True):
        upfirdn2d_compiled(x, f, 1, 1, 1, flip, 1, cpp_plugin)
    assert len(cache) == 1 and len(cache[id(f)]) == 2          # one filter, two preparations
    taps = weakref.ref(cache[id(f)][(x.device, False, 1.0, False)][2][0])
    dead = weakref.ref(f)
    del f
    gc.collect()
    assert dead() is None and taps() is None and cache == {}  # the filter and its taps are freed together
    monkeypatch.setattr(upfirdn2d_module, "TAPS_CACHE_FILTERS", 4)
    keep = [torch.rand(3, 3) for _ in range(10)]
    for f in keep:
        y = upfirdn2d_compiled(x, f, 1, 1, 1, False, 1, cpp_plugin)
        torch.testing.assert_close(y, upfirdn2d_ref(x, f, padding=1))  # past the bound: prepared every call
    assert len(cache) == 4


@pytest.mark.parametrize("op", ["upsample2d", "downsample2d", "filter2d"])
def test_resampling_wrappers_give_published_shapes_and_keep_dc(cpp_plugin, op):
    f = setup_filter([1, 3, 3, 1])
    x = torch.ones(1, 3, 8, 6)
    fn = dict(upsample2d=upsample2d, downsample2d=downsample2d, filter2d=filter2d)[op]
    want_hw = dict(upsample2d=(16, 12), downsample2d=(4, 3), filter2d=(8, 6))[op]
    for impl in ("ref", "cpp"):
        y = fn(x, f, impl=impl)
        assert tuple(y.shape[2:]) == want_hw
        # A normalized filter keeps a constant image constant away from the zero-padded border.
        assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.ones(()), atol=1e-6), impl


def test_setup_filter_follows_published_separable_rule():
    assert setup_filter([1, 3, 3, 1]).shape == (4, 4)          # short filters become 2-D
    assert setup_filter([1] * 8).shape == (8,)                 # >= 8 taps stay separable
    assert setup_filter([1, 3, 3, 1], separable=True).shape == (4,)
    torch.testing.assert_close(setup_filter([1, 3, 3, 1]).sum(), torch.tensor(1.0))
    torch.testing.assert_close(setup_filter([1, 1], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(setup_filter([1, 2], flip_filter=True, normalize=False),
                               torch.tensor([[4.0, 2.0], [2.0, 1.0]]))


def test_upfirdn2d_convolves_rather_than_correlates_unless_flip_filter():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1  # an impulse reproduces the filter (convolution) or its flip (correlation)
    f = torch.arange(1.0, 10.0).reshape(3, 3)
    y = upfirdn2d(x, f, padding=1, impl="ref")[0, 0, 1:4, 1:4]
    torch.testing.assert_close(y, f)
    y = upfirdn2d(x, f, padding=1, flip_filter=True, impl="ref")[0, 0, 1:4, 1:4]
    torch.testing.assert_close(y, f.flip([0, 1]))


# ---------------------------------------------------------------------------- grid_sample_reflect (plain torch)


def _affine_grids(n: int, out_h: int, out_w: int, reach: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random affine sampling grids ``[n, out_h, out_w, 2]`` reaching ``reach`` times past the image."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.rand([n, 2, 3], generator=g, dtype=torch.float64) * 2 - 1) * reach  # [n, 2, 3]
    grid = torch.nn.functional.affine_grid(theta, [n, 1, out_h, out_w], align_corners=False)
    return grid.to(dtype)


@pytest.mark.parametrize("n, c, h, w, out_h, out_w", [
    (4, 3, 16, 16, 21, 21),   # the pipe's case: square RGB, output larger than input
    (3, 1, 7, 12, 9, 5),      # grey, non-square in and out
    (2, 2, 1, 5, 4, 6),       # a single row
])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_grid_sample_reflect_matches_torch_grid_sample(n, c, h, w, out_h, out_w, dtype, atol):
    x = torch.rand([n, c, h, w], generator=torch.Generator().manual_seed(h), dtype=dtype) * 2 - 1
    grid = _affine_grids(n, out_h, out_w, reach=3.0, dtype=dtype, seed=w)
    assert (grid.abs() > 1).any() and (grid.abs() > 2.5).any()         # mirrored once and twice
    expected = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                                               align_corners=False)
    torch.testing.assert_close(grid_sample_reflect(x, grid), expected, rtol=0, atol=atol)


def test_grid_sample_reflect_is_exact_on_pixel_centres_and_mirrors_whole_pixels():
    x = torch.rand([2, 3, 6, 6], generator=torch.Generator().manual_seed(0)) * 2 - 1  # [N, C, H, W] in [-1, 1)
    px = torch.arange(-6, 12, dtype=torch.float64)                     # pixel centres, 1 image out each side
    gx = (2 * px + 1) / 6 - 1                                          # align_corners=False normalisation
    gy = torch.full_like(gx, (2 * 2 + 1) / 6 - 1)                      # row 2
    grid = torch.stack([gx, gy], dim=-1).expand(2, 1, len(px), 2)      # [2, 1, 18, 2]
    row = grid_sample_reflect(x, grid)[:, :, 0]                        # [2, 3, 18]
    mirrored = torch.cat([x[..., 2, :].flip(-1), x[..., 2, :], x[..., 2, :].flip(-1)], dim=-1)
    torch.testing.assert_close(row, mirrored, rtol=0, atol=1e-6)


def test_grid_sample_reflect_differentiates_to_second_order_in_images_and_grid():
    """Checked numerically in float64; the grid avoids pixel centres, where bilinear has kinks."""
    g = torch.Generator().manual_seed(3)
    x = (torch.rand([2, 2, 4, 5], generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    grid = _affine_grids(2, 3, 4, reach=2.5, dtype=torch.float64, seed=4)
    grid = grid + torch.rand(grid.shape, generator=g, dtype=torch.float64) * 0.1  # off the affine lattice
    assert (grid.abs() > 1).any()
    grid.requires_grad_(True)
    assert torch.autograd.gradcheck(grid_sample_reflect, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample_reflect, (x, grid))


# ---------------------------------------------------------------------------- dispatch

def test_auto_table_covers_every_activation_and_shape_class():
    keys = {("bias_act", a) for a in activation_funcs} | {("upfirdn2d", c) for c in ("up", "down", "filter")}
    assert set(_build.AUTO_TABLE) == keys
    assert set(_build.AUTO_TABLE.values()) <= {"cpp", "ref"}


def test_auto_follows_the_table_and_mtf_ops_ref_forces_the_reference(monkeypatch):
    seen = []
    monkeypatch.setattr(_build, "get_plugin", lambda target, verify=None: seen.append(target))  # None -> ref
    x = torch.randn(1, 2, 4, 4)
    bias_act(x, None, act="lrelu")
    bias_act(x, None, act="tanh")
    upfirdn2d(x, setup_filter([1, 3, 3, 1]), up=2, padding=[2, 1, 2, 1])
    upfirdn2d(x, setup_filter([1, 3, 3, 1]), padding=1)
    want = [_build.AUTO_TABLE[k] for k in [("bias_act", "lrelu"), ("bias_act", "tanh"), ("upfirdn2d", "up"),
                                           ("upfirdn2d", "filter")]]
    assert seen == [t for t in want if t != "ref"]  # ref needs no plugin
    seen.clear()
    monkeypatch.setenv("MTF_OPS", "ref")
    bias_act(x, None, act="lrelu")
    upfirdn2d(x, setup_filter([1, 3, 3, 1]), up=2, padding=[2, 1, 2, 1])
    assert seen == []
    bias_act(x, None, act="lrelu", impl="cpp")  # an explicit impl wins over the environment
    assert seen == ["cpp"]


def test_impl_cuda_on_a_cpu_tensor_says_what_to_do():
    with pytest.raises(ValueError, match="impl='cuda' runs on CUDA tensors"):
        bias_act(torch.zeros(2, 3), impl="cuda")


def test_importing_the_ops_builds_nothing():
    import subprocess
    import sys
    code = ("import gan.ops, sys; from gan.ops import _build; "
            "assert 'torch.utils.cpp_extension' not in sys.modules; assert not any(_build.build_attempts.values())")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- cuda (skipped without a GPU)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cuda_plugin(ext_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", _build.OpsBuildWarning)
        plugin = _build.get_plugin("cuda")
        assert plugin is not None, f"the cuda build failed: {_build.failure('cuda')}"
        for verify in (bias_act_self_test, upfirdn2d_self_test):  # each op's self-test on the GPU passes
            assert _build.get_plugin("cuda", verify=verify) is plugin
    return plugin


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("case", BIAS_ACT_GRID, ids=_ids(BIAS_ACT_GRID))
def test_bias_act_cuda_matches_ref(cuda_plugin, case):
    _check_bias_act(case, "cuda", "cuda", (torch.float32, torch.float16))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kernel", ["per-pixel", "tiled"])
@pytest.mark.parametrize("case", UPFIRDN_GRID, ids=_ids(UPFIRDN_GRID))
def test_upfirdn2d_cuda_matches_ref(cuda_plugin, case, kernel):
    # tiled: at most 3 channel images in flight, so that blocks loop over channel images too
    plugin = TiledKernel(cuda_plugin, max_grid_z=3) if kernel == "tiled" else None
    _check_upfirdn2d(case, "cuda", "cuda", (torch.float32, torch.float16), plugin=plugin)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kernel", ["per-pixel", "tiled"])
@pytest.mark.parametrize("name, make_f, shape, kw", STYLEGAN_PASSES, ids=[p[0] for p in STYLEGAN_PASSES])
def test_upfirdn2d_cuda_stylegan_passes_match_ref(cuda_plugin, name, make_f, shape, kw, kernel):
    plugin = TiledKernel(cuda_plugin) if kernel == "tiled" else cuda_plugin
    _check_upfirdn2d_inputs(_pass_inputs(shape, make_f, kw, "cuda"), "cuda", (torch.float32, torch.float16),
                            plugin=plugin)


@pytest.mark.cuda
@needs_cuda
def test_upfirdn2d_cuda_tiled_switch_runs_the_tiled_kernel_and_agrees_with_its_cpu_twin(cuda_plugin, cpp_plugin,
                                                                                        monkeypatch):
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(4, 8, 33, 65, dtype=torch.float64)
    kw = dict(up=2, padding=[2, 1, 2, 1], gain=4)
    monkeypatch.setenv(TILED_ENV, "1")
    got = upfirdn2d(x.cuda(), f.cuda(), impl="cuda", **kw)
    direct = upfirdn2d_compiled(x.cuda(), f.cuda(), 2, 1, kw["padding"], False, 4, TiledKernel(cuda_plugin))
    assert torch.equal(got, direct)
    cpu = upfirdn2d_compiled(x, f, 2, 1, kw["padding"], False, 4, TiledKernel(cpp_plugin))
    torch.testing.assert_close(got.cpu(), cpu, rtol=1e-12, atol=1e-12)  # fp64: equal up to FMA contraction
    assert upfirdn2d_self_test(cuda_plugin, torch.device("cuda")) == []  # now tests the tiled kernel too


@pytest.mark.cuda
@needs_cuda
def test_upfirdn2d_cuda_steady_state_launches_no_taps_kernel(cuda_plugin, empty_taps_cache):
    f = setup_filter([1, 3, 3, 1])                               # on the CPU, as layers keep it until .to()
    x = torch.randn(2, 4, 16, 16, device="cuda")
    counts = []
    for _ in range(2):
        with _OpCounter() as mode:
            upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="cuda")
        counts.append(mode.ops)
    assert not {"mul", "flip", "_to_copy", "copy_"} & set(counts[1]), counts[1]
