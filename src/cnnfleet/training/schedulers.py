"""Learning-rate schedules stepped every optimizer step, all built as f(optimizer, total_steps, ...).

The shared signature lets the module complete any scheduler config the same way.
"""

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from cnnfleet.errors import ConfigError


def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
) -> LRScheduler:
    """One-cycle schedule peaking at each param group's configured lr.

    torch's OneCycleLR divides by zero when the warm-up phase ends at step 0 (pct_start x
    total_steps = 1, e.g. 4 steps at 0.25): tiny runs get a warm-up of at least 2 steps, and
    runs of 1-2 steps a constant lr."""
    if total_steps < 3:
        return LambdaLR(optimizer, lambda step: 1.0)
    peaks = [group["lr"] for group in optimizer.param_groups]
    return OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=total_steps,
        pct_start=max(pct_start, 2.0 / total_steps) if total_steps > 3 else 0.5,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,
    )


class WarmupCosine:
    """lr multiplier: linear 0 -> 1 over warmup steps, then cosine 1 -> min_lr_ratio.

    A class rather than a closure so LambdaLR's state_dict records its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Linear warm-up for `warmup_fraction` of the steps, then cosine decay."""
    if not 0 <= warmup_fraction < 1:
        raise ConfigError(f"scheduler.warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warmup = int(round(total_steps * warmup_fraction))
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup, min_lr_ratio))
