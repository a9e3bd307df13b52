"""Random-weight stand-ins for the pretrained files the metrics need (used by the test
fixtures and by ``benchmarks/fid_speed.py`` when the real file is absent: the compute is
the same, so speed numbers hold, but the metric values mean nothing)."""
from __future__ import annotations

from pathlib import Path


def make_random_inception(path: Path, seed: int = 0) -> Path:
    """Write an Inception state dict with torch-fidelity's keys and He-initialised convs.

    Default init gives features ~0, which makes every metric degenerate; He init keeps
    the activations alive. The real loading code (``create_feature_extractor`` with a
    weights path) then reads this file as it would read the real one.
    """
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    class _NoLoad(fi.FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):  # skip the weights load in __init__
            return None

    orig = fi.load_state_dict_from_url
    fi.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(seed)
        net = _NoLoad("inception-v3-compat", ["2048"])
    finally:
        fi.load_state_dict_from_url = orig
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
