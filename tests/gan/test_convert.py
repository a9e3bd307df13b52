"""``gan.convert``: the name mapping between the published StyleGAN2-ADA state dicts and ours,
and the errors for state dicts that do not fit (the parity of the converted networks'
outputs is in ``test_networks.py``)."""

from __future__ import annotations

import pytest
import torch

from gan.convert import ConversionError, load_published_state_dict, ours_to_published, published_to_ours
from gan.networks import NetworkConfig, build_discriminator, build_generator
from gan.ops import setup_filter

from tests._settings import shared_fixture


@pytest.fixture(scope="module")
def published():
    """The published networks' weights, inputs and outputs (module-scoped: loaded once)."""
    return torch.load(shared_fixture("sg2a-tiny.pt"), weights_only=True)


def test_name_mapping_examples_both_ways():
    pairs = {
        "mapping.fc0.weight": "mapping.fc0.weight",
        "mapping.w_avg": "mapping.w_avg",
        "mapping.embed.weight": "mapping.embed.weight",
        "synthesis.b4.const": "synthesis.block4.const",
        "synthesis.b4.conv1.weight": "synthesis.block4.conv.weight",
        "synthesis.b8.conv0.noise_const": "synthesis.block8.conv_up.noise_const",
        "synthesis.b8.torgb.affine.bias": "synthesis.block8.to_rgb.affine.bias",
        "b32.fromrgb.weight": "block32.from_rgb.weight",
        "b16.conv1.bias": "block16.conv_down.bias",
        "b16.skip.weight": "block16.skip.weight",
        "b4.out.weight": "epilogue.out.weight",
        "b4.conv.weight": "epilogue.conv.weight",
    }
    for theirs, ours in pairs.items():
        assert published_to_ours(theirs) == ours
        assert ours_to_published(ours) == theirs
    assert published_to_ours("synthesis.b8.skip.weight") is None  # resnet generators are not supported


def test_conversion_rejects_mismatched_state_dicts(published):
    e = published["uncond"]
    cfg = NetworkConfig(**e["config"])
    G, D = build_generator(cfg), build_discriminator(cfg)

    with pytest.raises(ConversionError, match="no counterpart.*Generator"):
        load_published_state_dict(G, e["D"])  # D weights into G

    extra = dict(e["G"], **{"synthesis.b8.skip.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match=r"1 key\(s\).*synthesis\.b8\.skip\.weight"):
        load_published_state_dict(G, extra)

    missing = {k: v for k, v in e["G"].items() if k != "synthesis.b16.conv0.weight"}
    with pytest.raises(ConversionError, match=r"not in it: synthesis\.b16\.conv0\.weight"):
        load_published_state_dict(G, missing)

    wide = build_generator(NetworkConfig(**dict(e["config"], channel_max=32)))
    with pytest.raises(ConversionError, match="shapes differ.*channel_base, channel_max"):
        load_published_state_dict(wide, e["G"])

    odd_filter = dict(e["D"], **{"b8.conv1.resample_filter": setup_filter([1, 2, 1])})
    with pytest.raises(ConversionError, match=r"b8\.conv1\.resample_filter.*not the \[1, 3, 3, 1\]"):
        load_published_state_dict(D, odd_filter)

    cond = build_generator(NetworkConfig(**dict(e["config"], c_dim=3)))
    with pytest.raises(ConversionError, match=r"not in it:.*mapping\.embed"):
        load_published_state_dict(cond, e["G"])
