"""FLOPs per image and model FLOPs utilisation (MFU): how much of the device's peak the run uses.

FLOPs are counted once, before training, by torch's FlopCounterMode over one forward and backward
pass of a copy of the network on the meta device (no memory, no compute; what Lightning's
measure_flops does), so every run knows its FLOPs per training image whatever the device. MFU is
achieved FLOP/s over the peak of the devices for the run's arithmetic (bf16, fp16, tf32 or fp32,
dense, from the vendors' datasheets); on CPUs and unknown GPUs there is no peak and no MFU.
"""

import copy
import logging
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

# dense (no sparsity) peak TFLOP/s per device, from NVIDIA's datasheets (SXM parts where there are two)
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}


def arithmetic(precision: str) -> str:
    """The tensor-core arithmetic a Lightning precision setting trains with."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else "fp32"


def peak_flops(device: torch.device, precision: str) -> tuple[float, str] | None:
    """(peak FLOP/s of one device, what it is) for a known GPU, else None (CPU, an unknown card)."""
    if device.type != "cuda":
        return None
    return peak_for(torch.cuda.get_device_name(device), arithmetic(precision))


def peak_for(device_name: str, kind: str) -> tuple[float, str] | None:
    """The table's peak for a device name as torch reports it ("NVIDIA H100 80GB HBM3")."""
    for card, peaks in PEAK_TFLOPS.items():  # whole words: an A10G or L40 is not an A10 or L4
        if re.search(rf"\b{re.escape(card)}\b", device_name) and kind in peaks:
            return peaks[kind] * 1e12, f"{peaks[kind]:g} TFLOP/s {kind} ({card})"
    return None


def train_flops_per_image(net: torch.nn.Module, shape: tuple[int, int, int]) -> float | None:
    """FLOPs of one image's forward and backward pass (meta-device copy, batch of 2); None when a
    layer cannot run on the meta device (said once in the log, the run goes on)."""
    try:
        meta = copy.deepcopy(net).to("meta")
        meta.train()
        images = torch.empty(2, *shape, device="meta")
        with FlopCounterMode(display=False) as counter:
            meta(images).sum().backward()
        return counter.get_total_flops() / 2
    except Exception as exc:  # noqa: BLE001  (a count for the logs is not worth a failed run)
        log.info("FLOPs per image not counted (%s: %s); no MFU for this run", type(exc).__name__, exc)
        return None
