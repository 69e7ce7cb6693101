"""Every registered model builds and maps (B, C, H, W) to (B, num_classes)."""

import sys

import pytest
import torch

from cnnfleet.errors import ConfigError
from cnnfleet.models import MODELS, create_model

# every model option at the shapes of the data sets it is meant for: (channels, image size)
CASES = {
    "simple_cnn": ({}, [(1, 8), (1, 28), (3, 32)]),
    "resnet_cifar": ({"width": 8}, [(1, 8), (1, 28), (3, 32)]),
    "airbench": ({}, [(1, 8), (1, 28), (3, 32)]),
    "torchvision": ({"name": "resnet18"}, [(1, 28), (3, 32)]),
    "timm": ({"name": "resnet18"}, [(1, 28), (3, 32)]),
}


def test_every_model_option_is_covered() -> None:
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_trains_one_step_at_its_data_shapes(name: str, capsys) -> None:
    kwargs, shapes = CASES[name]
    for channels, size in shapes:
        torch.manual_seed(0)
        model = create_model(name, in_channels=channels, num_classes=7, **kwargs)
        x, y = torch.randn(4, channels, size, size), torch.randint(0, 7, (4,))
        logits = model(x)
        assert logits.shape == (4, 7)
        torch.nn.functional.cross_entropy(logits, y).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        with capsys.disabled():  # the parameter count of each option, in the test log
            print(f"\n{name} {kwargs} {channels}x{size}x{size}: {sum(p.numel() for p in model.parameters()):,} params")


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny", "efficientnet_b0", "mobilenet_v3_large"])
def test_torchvision_models_by_name(name: str) -> None:
    model = create_model("torchvision", in_channels=3, num_classes=5, name=name)
    logits = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert logits.shape == (2, 5)


def test_unknown_library_model_names_suggest_close_ones() -> None:
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet5'; did you mean resnet50"):
        create_model("torchvision", in_channels=3, num_classes=10, name="resnet5")
    with pytest.raises(ConfigError, match="unknown timm model 'convnext_nan'; did you mean convnext_nano"):
        create_model("timm", in_channels=3, num_classes=10, name="convnext_nan")


def test_missing_timm_extra_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'cnnfleet\[timm\]'"):
        create_model("timm", in_channels=3, num_classes=10, name="resnet18")


def test_pretrained_weights_are_never_downloaded(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="are not on this machine"):
        create_model("torchvision", in_channels=3, num_classes=10, name="resnet18", weights="DEFAULT")


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid: airbench, resnet_cifar, simple_cnn, timm, torchvision"):
        create_model("resnet", in_channels=1, num_classes=10)


def test_resnet_depth_is_checked() -> None:
    with pytest.raises(ConfigError, match="model.depth=50"):
        create_model("resnet_cifar", in_channels=1, num_classes=10, depth=50)


def test_resnet34_has_more_blocks_than_resnet18() -> None:
    r18 = create_model("resnet_cifar", in_channels=3, num_classes=10, depth=18, width=8)
    r34 = create_model("resnet_cifar", in_channels=3, num_classes=10, depth=34, width=8)
    assert len(r18.stages) == 8 and len(r34.stages) == 16
