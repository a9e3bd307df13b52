"""classify.models: every registry entry trains at a small size; ImageNet weights from the cache only."""

from __future__ import annotations

import pytest
import torch
import torchvision
from click.testing import CliRunner

from classify.cli import main
from classify.models import MODELS, PAPER_MODELS, create_model, weights_file
from gan.util import MissingWeights, UserError


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registry_model_trains_a_step_and_outputs_num_classes(name, one_thread):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    size = max(32, MODELS[name].min_input)
    x = torch.rand(2, 3, size, size)  # [N, C, H, W]
    model.train()
    out = model(x)
    assert out.shape == (2, 3)
    out.logsumexp(1).sum().backward()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == 3 and head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    first = next(p for p in model.parameters() if p.ndim == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0  # gradients reach the first conv


def test_paper_models_are_registered_and_unknown_names_are_errors():
    assert set(PAPER_MODELS) <= set(MODELS)
    with pytest.raises(UserError, match="unknown model 'resnet18'.*tiny_cnn"):
        create_model("resnet18", 2)


def test_imagenet_weights_are_read_from_torch_cache_and_the_head_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_file("mobilenet_v3_large")
    assert path == tmp_path / "hub" / "checkpoints" / "mobilenet_v3_large-5c1a4163.pth"
    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v3_large().state_dict()  # random stand-in with the right keys
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    torch.manual_seed(2)
    model = create_model("mobilenet_v3_large", 4, pretrained=True)
    state = model.state_dict()
    assert torch.equal(state["features.0.0.weight"], reference["features.0.0.weight"])
    assert torch.equal(state["classifier.0.weight"], reference["classifier.0.weight"])
    assert state["classifier.3.weight"].shape == (4, 1280)  # new head, not the 1000-class one
    # --weights PATH points elsewhere.
    other = tmp_path / "elsewhere.pth"
    path.rename(other)
    model = create_model("mobilenet_v3_large", 4, weights=other)
    assert torch.equal(model.state_dict()["features.0.0.weight"], reference["features.0.0.weight"])


def test_wrong_weights_file_is_an_error(tmp_path):
    bad = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(UserError, match="does not hold mobilenet_v3_large ImageNet weights"):
        create_model("mobilenet_v3_large", 2, weights=bad)


def test_missing_weights_message_and_exit_status_2(tmp_path, monkeypatch, synthetic_curated):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeights):
        create_model("convnext_base", 2, pretrained=True)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--data", str(synthetic_curated), "--task", "gender", "--model", "convnext_base",
        "--recipe", "notebook", "--outdir", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "convnext_base-6075fbad.pth"
    text = " ".join(result.output.split())
    assert str(expected) in text
    assert "https://download.pytorch.org/models/convnext_base-6075fbad.pth" in text
    assert "--weights PATH" in text and "never downloads" in text
    assert not out.exists() or not any(out.iterdir())  # failed before writing anything
