"""FLOPs per training image (meta-device count) and the peak table MFU is measured against."""

import pytest
import torch
import torchvision

from cnnfleet.models.simple_cnn import SimpleCNN
from cnnfleet.training.flops import arithmetic, peak_for, train_flops_per_image


def test_resnet50_counts_three_times_its_forward_flops() -> None:
    # 4.09 GMAC forward at 224 px = 8.2 GFLOP; backward twice that: 24.3 GFLOP per training image
    flops = train_flops_per_image(torchvision.models.resnet50(), (3, 224, 224))
    assert flops == pytest.approx(24.3e9, rel=0.01)


def test_counting_leaves_the_network_untouched() -> None:
    net = SimpleCNN(in_channels=1, num_classes=10, widths=[8, 16], dropout=0.0, norm="batch")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert train_flops_per_image(net, (1, 8, 8)) > 0
    after = net.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())
    assert all(p.grad is None for p in net.parameters())


def test_a_network_the_meta_device_cannot_run_gives_no_count() -> None:
    class HostRead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * float(x.abs().max())  # reads a value: impossible on meta

    assert train_flops_per_image(HostRead(), (1, 2, 2)) is None


@pytest.mark.parametrize(
    ("name", "kind", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA A100-SXM4-40GB", "tf32", 156.0),
        ("NVIDIA L4", "fp16", 121.0),
        ("NVIDIA L40S", "bf16", 362.1),
        ("Tesla T4", "fp16", 65.0),
        ("NVIDIA A10G", "bf16", None),
        ("Tesla V100-SXM2-16GB", "bf16", None),
    ],
)
def test_peaks_match_whole_card_names_and_the_arithmetic(name: str, kind: str, tflops: float | None) -> None:
    peak = peak_for(name, kind)
    assert (peak[0] / 1e12 if peak else None) == tflops


def test_precision_settings_map_to_their_arithmetic() -> None:
    assert arithmetic("bf16-mixed") == "bf16" and arithmetic("16-mixed") == "fp16"
    assert arithmetic("32-true") in ("fp32", "tf32")
