"""Resolve the device group (accelerator, devices, strategy, precision) for the hardware present.

Also checks the request against the processes the launcher started (launch/checks.py), so a
mismatch between `device.devices x device.num_nodes` and SLURM's or torchrun's is one clear line.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
from omegaconf import DictConfig

from cnnfleet.errors import ConfigError
from cnnfleet.launch.checks import check_launcher
from cnnfleet.launch.env import intra_op_threads

GPU_NAMES = ("gpu", "cuda")
DDP_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")


@dataclass(frozen=True)
class DevicePlan:
    """What Lightning receives; also printed in the run summary."""

    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str
    timeout_s: int = 600
    threads: int = 1  # torch intra-op threads per process (launch/env.py intra_op_threads)
    threads_from: str = ""

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def describe(self) -> str:
        name = torch.cuda.get_device_name(0) if self.accelerator == "gpu" else "cpu"
        nodes = f" x {self.num_nodes} nodes" if self.num_nodes > 1 else ""
        threads = f", {self.threads} CPU thread{'s' if self.threads > 1 else ''} per process ({self.threads_from})"
        return f"{name} x{self.devices}{nodes}, strategy {self.strategy}, {self.precision}{threads}"

    def strategy_arg(self) -> object:
        """The Lightning strategy; DDP gets our timeout so a missing rank fails instead of hanging."""
        if self.strategy not in DDP_STRATEGIES:
            return self.strategy
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(
            timeout=timedelta(seconds=self.timeout_s),
            find_unused_parameters=self.strategy == "ddp_find_unused_parameters_true",
        )


def auto_precision(accelerator: str) -> str:
    """bf16-mixed on GPUs with bf16, 16-mixed (loss scaling) on older GPUs, 32-true on CPU."""
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _resolve_accelerator(requested: str) -> str:
    accelerator = requested.lower()
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in GPU_NAMES:
        if not torch.cuda.is_available():
            raise ConfigError("device.accelerator=gpu but no CUDA GPU is visible; use device=cpu or run on a GPU node")
        return "gpu"
    if accelerator != "cpu":
        raise ConfigError(f"device.accelerator={requested!r} is not supported; valid: auto, cpu, gpu")
    return accelerator


def _count_devices(requested: object, accelerator: str) -> int:
    available = torch.cuda.device_count() if accelerator == "gpu" else (os.cpu_count() or 1)
    if requested in ("auto", -1):
        return available if accelerator == "gpu" else 1
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise ConfigError(f"device.devices must be a positive int or 'auto', got {requested!r}")
    if requested > available:
        what = "GPU(s) are visible" if accelerator == "gpu" else "CPU cores exist"
        hint = "check CUDA_VISIBLE_DEVICES" if accelerator == "gpu" else "one process per core at most"
        raise ConfigError(
            f"device.devices={requested} but only {available} {what}; use device.devices={available} ({hint})"
        )
    return requested


def plan_devices(cfg: DictConfig, env: Mapping[str, str] | None = None) -> DevicePlan:
    """Turn the device config into concrete Lightning arguments; ConfigError on impossible requests."""
    accelerator = _resolve_accelerator(str(cfg.accelerator))
    devices = _count_devices(cfg.devices, accelerator)
    if cfg.num_nodes < 1:
        raise ConfigError(f"device.num_nodes must be >= 1, got {cfg.num_nodes}")
    if cfg.timeout_s < 1:
        raise ConfigError(f"device.timeout_s must be >= 1 second, got {cfg.timeout_s}")
    strategy = str(cfg.strategy)
    if strategy == "auto" and devices * cfg.num_nodes > 1:
        strategy = "ddp"  # plain ddp: one process per device, never ddp_spawn
    precision = auto_precision(accelerator) if cfg.precision == "auto" else str(cfg.precision)
    if accelerator == "cpu" and precision in ("16-mixed", "16", "16-true"):
        raise ConfigError(
            f"device.precision={precision} has no CPU kernels (Lightning would silently run bf16-mixed); "
            "use device.precision=bf16-mixed or 32-true on CPU"
        )
    threads, source = intra_op_threads(devices, env)
    plan = DevicePlan(
        accelerator, devices, int(cfg.num_nodes), strategy, precision, int(cfg.timeout_s), threads, source
    )
    check_launcher(plan.devices, plan.num_nodes, env)
    return plan


def apply_threads(plan: DevicePlan) -> None:
    """This process (and, through OMP_NUM_THREADS, the ranks Lightning's launcher starts and their
    BLAS) uses its CPU share only; measured: a default run under load ran 4x slower with every core."""
    torch.set_num_threads(plan.threads)
    os.environ["OMP_NUM_THREADS"] = str(plan.threads)
