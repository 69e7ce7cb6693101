"""Every registered model builds and maps (B, C, H, W) to (B, num_classes)."""

import pytest
import torch

from cnnfleet.errors import ConfigError
from cnnfleet.models import MODELS, create_model

SHAPES = [(1, 8), (3, 32)]  # (channels, image size): digits, CIFAR


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_model_output_shape(name: str, channels: int, size: int) -> None:
    model = create_model(name, in_channels=channels, num_classes=7)
    logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_trains_one_step(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=3)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid: resnet_cifar, simple_cnn"):
        create_model("resnet", in_channels=1, num_classes=10)


def test_resnet_depth_is_checked() -> None:
    with pytest.raises(ConfigError, match="model.depth=50"):
        create_model("resnet_cifar", in_channels=1, num_classes=10, depth=50)


def test_resnet34_has_more_blocks_than_resnet18() -> None:
    r18 = create_model("resnet_cifar", in_channels=3, num_classes=10, depth=18, width=8)
    r34 = create_model("resnet_cifar", in_channels=3, num_classes=10, depth=34, width=8)
    assert len(r18.stages) == 8 and len(r34.stages) == 16
