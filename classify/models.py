"""The baseline classifiers: a small registry over torchvision -> ``create_model(name, num_classes)``.

The MTF paper (Haffar, Sánchez, Domingo-Ferrer, *IEEE Access* 13, 2025) trains five
torchvision models but does not name them in its public text; its best is ConvNeXt-Base.
**Our choice** of the five is the set defined in the authors' published notebook:
``convnext_base`` (Liu et al. 2022), ``resnet50`` (He et al. 2016), ``vgg16`` (Simonyan &
Zisserman 2015), ``efficientnet_b7`` (Tan & Le 2019) and ``mobilenet_v3_large`` (Howard et
al. 2019), with the notebook's ``alexnet`` (Krizhevsky et al. 2012) as an extra. The
ImageNet head is replaced by a fresh ``Linear(features, num_classes)``, as the notebook does.

``tiny_cnn`` is **ours**, not a published baseline: four conv blocks and a linear head
(~0.3 M parameters) for the CPU demo and the tests, where a torchvision model would take
minutes.

ImageNet weights are never downloaded. They are read from torch's cache,
``$TORCH_HOME/hub/checkpoints/<torchvision file name>`` (``~/.cache/torch/hub/...`` by
default, where ``torchvision`` itself would put them), or from ``weights=PATH``. A missing
file raises :class:`gan.util.MissingWeights` whose message says which file, where it goes
and its public URL; ``mtf-classify`` prints it and exits with status 2 (as every CLI of the
package does for a missing weights file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from gan.util import MissingWeights, UserError

__all__ = ["ModelSpec", "MODELS", "PAPER_MODELS", "require_weights", "create_model", "weights_file", "TinyCNN"]


class TinyCNN(nn.Module):
    """Ours: a small VGG-style CNN for the CPU demo and tests (not a published baseline).

    Four 3x3 conv blocks (BatchNorm, ReLU; stride 2 from the second), global average
    pooling and a linear head; any input side >= 8 px works.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` float images -> ``[N, num_classes]`` logits."""
        assert x.ndim == 4 and x.shape[1] == 3, x.shape
        return self.classifier(self.pool(self.features(x)))


def _replace(container: nn.Module, index: int, num_classes: int) -> None:
    old = container[index]  # type: ignore[index]
    assert isinstance(old, nn.Linear), old
    container[index] = nn.Linear(old.in_features, num_classes)  # type: ignore[index]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    ``build()`` makes the ImageNet-shaped model (random init), ``set_head`` replaces its
    classifier for ``num_classes``; ``weights`` is the torchvision weights entry used for
    ImageNet initialization (None: none exist); ``min_input`` is the smallest input side
    the network accepts.
    """

    name: str
    build: Callable[[], nn.Module]
    set_head: Callable[[nn.Module, int], None]
    weights: torchvision.models.WeightsEnum | None
    min_input: int
    description: str


def _tiny_build() -> nn.Module:
    return TinyCNN(1000)


def _tiny_head(m: nn.Module, n: int) -> None:
    _replace(m.classifier, 2, n)  # type: ignore[arg-type]


_tv = torchvision.models

#: name -> spec. The first five are our reading of the paper's five (see the module docstring).
MODELS: dict[str, ModelSpec] = {
    "convnext_base": ModelSpec(
        "convnext_base", lambda: _tv.convnext_base(weights=None),
        lambda m, n: _replace(m.classifier, 2, n), _tv.ConvNeXt_Base_Weights.IMAGENET1K_V1, 32,
        "ConvNeXt-Base (Liu et al. 2022), 88.6 M params; the paper's best"),
    "resnet50": ModelSpec(
        "resnet50", lambda: _tv.resnet50(weights=None),
        lambda m, n: setattr(m, "fc", nn.Linear(m.fc.in_features, n)), _tv.ResNet50_Weights.IMAGENET1K_V2, 32,
        "ResNet-50 (He et al. 2016), 25.6 M params"),
    "vgg16": ModelSpec(
        "vgg16", lambda: _tv.vgg16(weights=None),
        lambda m, n: _replace(m.classifier, 6, n), _tv.VGG16_Weights.IMAGENET1K_V1, 32,
        "VGG-16 (Simonyan & Zisserman 2015), 138 M params"),
    "efficientnet_b7": ModelSpec(
        "efficientnet_b7", lambda: _tv.efficientnet_b7(weights=None),
        lambda m, n: _replace(m.classifier, 1, n), _tv.EfficientNet_B7_Weights.IMAGENET1K_V1, 32,
        "EfficientNet-B7 (Tan & Le 2019), 66.3 M params"),
    "mobilenet_v3_large": ModelSpec(
        "mobilenet_v3_large", lambda: _tv.mobilenet_v3_large(weights=None),
        lambda m, n: _replace(m.classifier, 3, n), _tv.MobileNet_V3_Large_Weights.IMAGENET1K_V2, 32,
        "MobileNetV3-Large (Howard et al. 2019), 5.5 M params"),
    "alexnet": ModelSpec(
        "alexnet", lambda: _tv.alexnet(weights=None),
        lambda m, n: _replace(m.classifier, 6, n), _tv.AlexNet_Weights.IMAGENET1K_V1, 64,
        "AlexNet (Krizhevsky et al. 2012), 61.1 M params; in the notebook, an extra here"),
    "tiny_cnn": ModelSpec(
        "tiny_cnn", _tiny_build, _tiny_head, None, 8,
        "ours: 4 conv blocks, 0.3 M params, for the CPU demo and tests (not a baseline)"),
}

#: The five models of the baselines grid (our choice; see the module docstring).
PAPER_MODELS = ("convnext_base", "resnet50", "vgg16", "efficientnet_b7", "mobilenet_v3_large")


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"models: unknown model {name!r}; pass one of {', '.join(MODELS)}")
    return MODELS[name]


def weights_file(name: str) -> Path | None:
    """Where torch's cache keeps ``name``'s ImageNet weights (None for models without any)."""
    spec = _spec(name)
    if spec.weights is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.weights.url)


def _missing_message(name: str, expected: Path, given: Path | None) -> str:
    spec = _spec(name)
    assert spec.weights is not None
    url = spec.weights.url
    where = f"--weights {given} does not exist" if given is not None else f"{expected} does not exist"
    return (
        f"models: {name} needs its ImageNet weights ({type(spec.weights).__name__}.{spec.weights.name}), "
        f"but {where}, and mtf-classify never downloads. Download {url} on a machine with internet "
        f"access and copy it to {expected} (torch's cache: $TORCH_HOME/hub/checkpoints/, default "
        f"~/.cache/torch/hub/checkpoints/), or give the file to mtf-classify train with --weights PATH; "
        f"or start from random weights with --set pretrained=[] (results will be far below the paper's)."
    )


def require_weights(name: str, weights: str | os.PathLike | None = None) -> Path:
    """The ImageNet weights file of ``name`` (``weights``, else torch's cache), checked to
    exist without building the model: :class:`gan.util.MissingWeights` with one paragraph
    (the file, where it goes, where to get it) when it does not."""
    spec = _spec(name)
    if spec.weights is None:
        raise UserError(f"models: {name} has no ImageNet weights; leave it out of the recipe's pretrained list")
    expected = weights_file(name)
    assert expected is not None
    path = Path(weights) if weights is not None else expected
    if not path.is_file():
        raise MissingWeights(_missing_message(name, expected, Path(weights) if weights is not None else None))
    return path


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build registry model ``name`` with a fresh ``num_classes``-way head.

    ``pretrained``: start from ImageNet weights, read from ``weights`` or torch's cache
    (never downloaded; :class:`gan.util.MissingWeights` when absent). The head is replaced after
    loading, so only the backbone is pretrained, as in the MTF notebook.
    """
    spec = _spec(name)
    if num_classes < 2:
        raise UserError(f"models: num_classes is {num_classes}; a classifier needs at least 2")
    use_weights = pretrained or weights is not None
    if use_weights:  # check before building: a big model takes seconds to initialize
        path = require_weights(name, weights)
    model = spec.build()
    if use_weights:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a weights file"
            raise UserError(f"models: {path} could not be read as a state dict ({type(exc).__name__}: {exc}); "
                            f"download {spec.weights.url} again") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        result = model.load_state_dict(state, strict=False) if isinstance(state, dict) else None
        if result is None or result.missing_keys or result.unexpected_keys:
            detail = "not a dict" if result is None else (
                f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[:2]}), "
                f"unexpected {len(result.unexpected_keys)} (e.g. {result.unexpected_keys[:2]})")
            raise UserError(f"models: {path} does not hold {name} ImageNet weights ({detail}); "
                            f"pass the file from {spec.weights.url}")
    spec.set_head(model, num_classes)
    return model
