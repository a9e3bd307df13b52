"""``mtf-gan doctor`` (gan/ops/doctor.py): the environment lines, each target's build and the
parity of every op's self-test, on the ``cpp`` target that ``test_ops.py`` builds once."""

from __future__ import annotations

import pytest
import torch

from gan.ops import _build
from gan.ops._build import BuildError
from gan.ops.doctor import doctor
from gan.ops.doctor import self_test as doctor_self_test


def test_doctor_reports_the_cpp_build_and_parity_ok(ext_dir):
    lines = []
    assert doctor(("cpp",), echo=lines.append)
    text = "\n".join(lines)
    for name in ("torch", "compiler", "ninja", "extension cache", "cpp build", "cpp parity float32"):
        assert any(ln.split(None, 1)[1].startswith(name) for ln in lines if ln.strip()), (name, text)
    assert "FAIL" not in text


def test_doctor_fails_with_the_fix_when_the_compiler_is_missing(ext_dir, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    lines = []
    assert not doctor(("cpp",), echo=lines.append)
    text = "\n".join(lines)
    assert "FAIL  compiler" in text and "FAIL  cpp build" in text and "fix: install g++" in text


def test_self_test_catches_a_kernel_that_disagrees_with_ref(ext_dir):
    plugin = _build.get_plugin("cpp")
    assert plugin is not None

    class OffByOneUpfirdn:  # bias_act right, upfirdn2d shifted by one pixel
        bias_act = staticmethod(plugin.bias_act)

        @staticmethod
        def upfirdn2d(x, w, *args):
            return plugin.upfirdn2d(x, w, *args).roll(1, dims=3)

    doctor_self_test(plugin, device=torch.device("cpu"))  # the real kernels pass
    with pytest.raises(BuildError, match="disagree with the reference") as info:
        doctor_self_test(OffByOneUpfirdn(), device=torch.device("cpu"))
    assert "upfirdn2d" in info.value.cause and "bias_act" not in info.value.cause
