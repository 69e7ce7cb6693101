"""The hand-written PyTorch loop cnnfleet is measured against: what a careful engineer writes
without a framework. Same network, data tensors, optimizer, LR schedule, batch, precision and
memory format as the cnnfleet run; no validation, logging or checkpoints."""

import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from cnnfleet.training.optim import build_optimizer


def raw_train(
    net: nn.Module,
    images: Tensor,  # (N, C, H, W) on the device, normalised (float32, or float16 storage on GPUs)
    labels: Tensor,  # (N,) on the device
    optimizer_cfg: dict,  # cnnfleet's optimizer config (a _partial_ constructor), already LR-resolved
    scheduler_cfg: dict | None,
    batch_size: int,
    epochs: int,
    precision: str,  # 32-true | bf16-mixed | 16-mixed
    channels_last: bool = False,
    seed: int = 0,
) -> list[tuple[int, float]]:
    """Train and return (images, seconds) per epoch; each epoch ends with a device sync."""
    device = images.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(net, net, optimizer_cfg, net_prefix="")  # as cnnfleet's (layer_decay, freeze)
    steps_per_epoch = -(-len(images) // batch_size)
    scheduler = (
        instantiate(scheduler_cfg)(optimizer=optimizer, total_steps=epochs * steps_per_epoch) if scheduler_cfg else None
    )
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    generator = torch.Generator().manual_seed(seed)
    timings = []
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(images), generator=generator).to(device)
        for index in order.split(batch_size):
            x = images.index_select(0, index).float().contiguous(memory_format=memory_format)
            y = labels.index_select(0, index)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append((len(images), time.perf_counter() - start))
    return timings
