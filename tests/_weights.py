"""Stand-ins for the pretrained files and networks the metrics need.

* :func:`gan.extractors.make_random_inception` (used by the fixtures directly): a random-weight file with the
  real Inception's layers, for the tests that need torch-fidelity's real architecture (the
  equivalence with ``torch_fidelity.calculate_metrics``, torchrun runs).
* :class:`StubExtractor`: a tiny deterministic network with the extractors' interface
  (``features_list``, uint8 ``[N, 3, H, W]`` in, one float ``[N, D]`` per feature out, the
  same feature names), built from a small weights file by :func:`load_stub`. Its pool and
  VGG features are 64-d, not 2048/4096: FID's matrix square root of a 2048 x 2048 product
  alone takes 10-40 s on a busy 2-core machine, and the protocol does not depend on D.
  :func:`use_stub_extractors` puts it in :data:`gan.extractors.LOADERS`, so the metrics
  protocol (weights file resolved and hashed, cache, sharding, per-class, result rows, CLI,
  in-training metrics) runs through the same code in seconds instead of pushing 299-px
  images through Inception on the CPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from gan import extractors as E

if TYPE_CHECKING:
    import pytest

#: Output size of each feature name (the real ones: 2048, 1008, 4096).
FEATURE_DIMS = {E.POOL: 64, E.LOGITS: 1008, E.VGG_FEATURE: 64}
POOLED = 8  # images are average-pooled to POOLED x POOLED before the projection
GAIN = 4.0  # features of O(1) spread, as Inception's, so FID of unlike sets is well above 1


class StubExtractor(torch.nn.Module):
    """uint8 ``[N, 3, H, W]`` (any H, W >= POOLED) -> a tuple of float ``[N, D]``, one per
    name in ``features_list``: average-pooled pixels through fixed random projections and a
    ReLU. Deterministic, independent of the batch, and sensitive to every pixel value, so
    uint8 conversion or resize bugs still change the numbers."""

    def __init__(self, features_list: Sequence[str], weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.features_list = list(features_list)
        self.proj = torch.nn.ParameterDict({_key(n): torch.nn.Parameter(weights[_key(n)], requires_grad=False)
                                            for n in self.features_list})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3, (x.dtype, x.shape)
        p = F.adaptive_avg_pool2d(x.float() / 255, POOLED).flatten(1)  # [N, 3 * POOLED^2]
        return tuple(torch.relu(p @ self.proj[_key(n)]) for n in self.features_list)


def _key(name: str) -> str:
    return "f_" + name  # ParameterDict keys must be identifiers-like


def make_stub_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the stub's projections (He-scaled times GAIN) for every feature name."""
    g = torch.Generator().manual_seed(seed)
    d_in = 3 * POOLED * POOLED
    state = {_key(n): torch.randn(d_in, d, generator=g) * GAIN * (2 / d_in) ** 0.5 for n, d in FEATURE_DIMS.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def load_stub(weights: str | os.PathLike, device: str | torch.device = "cpu",
              features: Sequence[str] = (E.POOL,)) -> StubExtractor:
    """A :data:`gan.extractors.LOADERS` entry: the stub with the projections in ``weights``."""
    return StubExtractor(features, torch.load(weights, weights_only=True)).to(device)


def use_stub_extractors(monkeypatch: "pytest.MonkeyPatch") -> None:
    """Build every extractor as :func:`load_stub` until ``monkeypatch`` is undone."""
    for name in E.LOADERS:
        monkeypatch.setitem(E.LOADERS, name, load_stub)
