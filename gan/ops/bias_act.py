"""Fused bias + activation + gain + clamp, the nonlinearity of every StyleGAN2 layer.

``y = clamp(act(x + b, alpha) * gain, -clamp, clamp)`` with ``b`` broadcast along ``dim``.
Fusing the four steps saves three full-size temporaries per layer (Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data", appendix B.1: custom
CUDA kernels for the bias/activation and resampling ops).

Three implementations sit behind one dispatch point, :func:`bias_act`:

* ``ref``  -- plain torch ops (:func:`bias_act_ref`); autograd gives gradients of every order.
* ``cpp``  -- a C++ CPU kernel (``bias_act.cpp``) parallelised with ``at::parallel_for``.
* ``cuda`` -- a CUDA kernel (``bias_act.cu``) with the same per-element math
  (``bias_act.h``), so CPU parity tests also check the GPU formulas.

The compiled paths are ``torch.autograd.Function``s whose backward is again built
from the compiled op (the gradient of ``act`` is a per-element function of ``x`` or
``y``), so R1 and path-length regularisation (which differentiate a gradient) work.
:func:`self_test` checks the kernels against the reference; the build manager runs it
on the first load of the ``cuda`` target on a GPU, ``mtf-gan doctor`` on every target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gan.ops import _build


@dataclass(frozen=True)
class ActivationSpec:
    """One activation: its default ``alpha`` and ``gain`` and how the kernels compute it.

    ``def_gain`` keeps the output variance of a He-initialised layer at ~1: sqrt(2)
    for the rectifiers, which zero half of a symmetric input (He et al. 2015, eq. 10),
    1 for the saturating ones (as in the published StyleGAN2-ADA table).
    ``code`` is the id the C++/CUDA kernels switch on (``bias_act.h``: ``mtf::Act``);
    ``has_2nd_grad`` says whether the activation has a non-zero second derivative
    (if not, the compiled double backward skips that term).
    """

    name: str
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    code: int
    has_2nd_grad: bool


def _spec(name, func, def_alpha, def_gain, code, has_2nd_grad) -> ActivationSpec:
    return ActivationSpec(name, func, float(def_alpha), float(def_gain), code, has_2nd_grad)


_SQRT2 = math.sqrt(2)

#: Activation table: name -> :class:`ActivationSpec`. ``code`` is the id the C++/CUDA
#: kernels switch on (see ``bias_act.h``); keep the two in sync.
activation_funcs: dict[str, ActivationSpec] = {
    "linear":   _spec("linear",   lambda x, a: x,                        0.0, 1.0,    1, False),
    "relu":     _spec("relu",     lambda x, a: F.relu(x),                0.0, _SQRT2, 2, False),
    "lrelu":    _spec("lrelu",    lambda x, a: F.leaky_relu(x, a),       0.2, _SQRT2, 3, False),
    "tanh":     _spec("tanh",     lambda x, a: torch.tanh(x),            0.0, 1.0,    4, True),
    "sigmoid":  _spec("sigmoid",  lambda x, a: torch.sigmoid(x),         0.0, 1.0,    5, True),
    "elu":      _spec("elu",      lambda x, a: F.elu(x),                 0.0, 1.0,    6, True),
    "selu":     _spec("selu",     lambda x, a: F.selu(x),                0.0, 1.0,    7, True),
    "softplus": _spec("softplus", lambda x, a: F.softplus(x),            0.0, 1.0,    8, True),
    "swish":    _spec("swish",    lambda x, a: torch.sigmoid(x) * x,     0.0, _SQRT2, 9, True),
}

IMPLS = ("auto", "ref", "cpp", "cuda")


def _resolve_params(act: str, alpha, gain, clamp) -> tuple[ActivationSpec, float, float, float]:
    """Fill in the table defaults; ``clamp < 0`` means no clamping."""
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown act={act!r}; choose one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = "auto") -> torch.Tensor:
    """Add bias ``b`` along ``dim``, apply ``act``, scale by ``gain``, clamp to ``[-clamp, clamp]``.

    Args:
        x:     input of any shape, float16/32/64, e.g. ``[N, C, H, W]`` or ``[N, C]``.
        b:     ``[x.shape[dim]]`` bias of ``x``'s dtype, or ``None``.
        dim:   the dimension of ``x`` that ``b`` runs along (default 1, channels).
        act:   a key of :data:`activation_funcs`.
        alpha: activation shape parameter (lrelu slope); ``None`` = table default.
        gain:  output scale; ``None`` = table default (sqrt(2) for relu/lrelu/swish).
        clamp: clamp the scaled output to ``[-clamp, clamp]``; ``None`` = no clamp.
               StyleGAN2-ADA clamps fp16 layers at 256 to avoid overflow.
        impl:  ``'auto'`` (the fixed table ``gan.ops._build.AUTO_TABLE``; ``cuda`` for CUDA
               tensors; ``$MTF_OPS=ref`` sends every ``'auto'`` call to the reference),
               ``'ref'``, ``'cpp'`` (CPU tensors) or ``'cuda'`` (CUDA tensors).

    Returns:
        A tensor of ``x``'s shape and dtype.
    """
    assert isinstance(x, torch.Tensor)
    if impl not in IMPLS:
        raise ValueError(f"bias_act: impl={impl!r}; choose one of {IMPLS}")
    spec, alpha_, gain_, clamp_ = _resolve_params(act, alpha, gain, clamp)
    if b is not None:
        _check_bias(x, b, dim)
    chosen = _build.choose_impl("bias_act", x, impl, shape_class=act)
    if chosen != "ref":
        plugin = _build.get_plugin(chosen, verify=self_test)
        if plugin is not None:
            if b is not None and b.dtype != x.dtype:  # same type promotion as `x + b` in ref
                dtype = torch.result_type(x, b)
                x, b = x.to(dtype), b.to(dtype)
            dim = dim if b is not None else 0  # dim only places the bias
            return _bias_act_compiled(dim, spec, alpha_, gain_, clamp_, plugin).apply(x, b)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _check_bias(x: torch.Tensor, b: torch.Tensor, dim: int) -> None:
    if not (isinstance(b, torch.Tensor) and b.ndim == 1):
        raise ValueError("bias_act: b must be a 1-D tensor or None")
    if not 0 <= dim < x.ndim:
        raise ValueError(f"bias_act: dim={dim} is out of range for a {x.ndim}-D input")
    if b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias_act: b has {b.shape[0]} entries but x.shape[{dim}] = {x.shape[dim]}")


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None,
                 clamp: float | None = None) -> torch.Tensor:
    """Reference twin of :func:`bias_act` in plain torch ops; autograd differentiates it to any order."""
    spec, alpha, gain, clamp = _resolve_params(act, alpha, gain, clamp)
    if b is not None:
        _check_bias(x, b, dim)
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def self_test(plugin, device: torch.device, dtype: torch.dtype = torch.float32) -> list[str]:
    """This op's self-test: the cases in which the compiled kernels of ``plugin`` disagree
    with :func:`bias_act_ref` for every activation on small inputs; empty when all agree.

    Passed as ``verify`` to :func:`gan.ops._build.get_plugin`; :mod:`gan.ops.doctor` runs it too.
    """
    x, b, tol = _build.self_test_inputs(device, dtype)
    bad = []
    for act in activation_funcs:
        want = bias_act_ref(x, b, act=act, clamp=3.0)
        spec, alpha, gain, clamp = _resolve_params(act, None, None, 3.0)
        got = _bias_act_compiled(1, spec, alpha, gain, clamp, plugin).apply(x, b)
        if not torch.allclose(got.float(), want.float(), **tol):
            bad.append(f"bias_act act={act}")
    return bad



_compiled_cache: dict[tuple, type[torch.autograd.Function]] = {}


def _bias_act_compiled(dim: int, spec: ActivationSpec, alpha: float, gain: float, clamp: float,
                       plugin) -> type[torch.autograd.Function]:
    """The autograd.Function for one parameter set, running the kernels of ``plugin``.

    Forward: mode 0 of the kernel. Backward: ``dx = dy * act'`` (mode 1), wrapped in
    a second Function so that its own backward -- ``d(dy) = d(dx) * act'`` (mode 1
    again) and ``d(x) = d(dx) * dy * act''`` (mode 2) -- gives second-order gradients.
    The bias gradient is the input gradient summed over every dim but ``dim``.
    """
    key = (dim, spec.name, alpha, gain, clamp, id(plugin))
    if key in _compiled_cache:
        return _compiled_cache[key]

    def run(mode: int, x: torch.Tensor, b: torch.Tensor | None, dy: torch.Tensor | None) -> torch.Tensor:
        empty = x.new_empty([0])
        return plugin.bias_act(x, empty if b is None else b, empty if dy is None else dy, mode, spec.code,
                               alpha, gain, clamp, dim)

    def reduce_bias(g: torch.Tensor) -> torch.Tensor:
        return g.sum([i for i in range(g.ndim) if i != dim])  # [x.shape[dim]]

    class BiasActGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b):  # dx = dy * gain * act'(x + b), masked by the clamp
            ctx.save_for_backward(dy, x, b)
            return run(1, x, b, dy)

        @staticmethod
        def backward(ctx, d_dx):
            dy, x, b = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActGrad.apply(d_dx, x, b)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = run(2, x, b, d_dx * dy)
                if ctx.needs_input_grad[2]:
                    d_b = reduce_bias(d_x)
            return d_dy, d_x, d_b

    class BiasActCompiled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # y = clip(gain * act(x + b), -clamp, clamp)
            ctx.save_for_backward(x, b)
            return run(0, x, b, None)

        @staticmethod
        def backward(ctx, dy):
            x, b = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = BiasActGrad.apply(dy, x, b)
            if ctx.needs_input_grad[1]:
                db = reduce_bias(dx)
            return dx, db

    _compiled_cache[key] = BiasActCompiled
    return BiasActCompiled
