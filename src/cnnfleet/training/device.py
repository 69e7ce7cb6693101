"""Resolve the device group (accelerator, devices, strategy, precision) for the hardware present."""

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cnnfleet.errors import ConfigError

GPU_NAMES = ("gpu", "cuda")


@dataclass(frozen=True)
class DevicePlan:
    """What Lightning receives; also printed in the run summary."""

    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def describe(self) -> str:
        name = torch.cuda.get_device_name(0) if self.accelerator == "gpu" else "cpu"
        nodes = f" x {self.num_nodes} nodes" if self.num_nodes > 1 else ""
        return f"{name} x{self.devices}{nodes}, strategy {self.strategy}, {self.precision}"


def auto_precision(accelerator: str) -> str:
    """bf16-mixed on GPUs with bf16, 16-mixed (loss scaling) on older GPUs, 32-true on CPU."""
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _count_devices(requested: object, accelerator: str) -> int:
    available = torch.cuda.device_count() if accelerator == "gpu" else 1
    if requested == "auto" or requested == -1:
        return available
    if not isinstance(requested, int) or requested < 1:
        raise ConfigError(f"device.devices must be a positive int or 'auto', got {requested!r}")
    if accelerator == "gpu" and requested > available:
        raise ConfigError(
            f"device.devices={requested} but only {available} GPU(s) are visible; "
            f"use device.devices={available} or check CUDA_VISIBLE_DEVICES"
        )
    return requested


def plan_devices(cfg: DictConfig) -> DevicePlan:
    """Turn the device config into concrete Lightning arguments; ConfigError on impossible requests."""
    accelerator = str(cfg.accelerator).lower()
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    elif accelerator in GPU_NAMES:
        if not torch.cuda.is_available():
            raise ConfigError("device.accelerator=gpu but no CUDA GPU is visible; use device=cpu or run on a GPU node")
        accelerator = "gpu"
    elif accelerator != "cpu":
        raise ConfigError(f"device.accelerator={cfg.accelerator!r} is not supported; valid: auto, cpu, gpu")
    devices = _count_devices(cfg.devices, accelerator)
    if cfg.num_nodes < 1:
        raise ConfigError(f"device.num_nodes must be >= 1, got {cfg.num_nodes}")
    precision = auto_precision(accelerator) if cfg.precision == "auto" else str(cfg.precision)
    return DevicePlan(accelerator, devices, int(cfg.num_nodes), str(cfg.strategy), precision)
