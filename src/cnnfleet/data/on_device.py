"""Batches sliced from tensors that already live on the training device (no DataLoader).

The technique behind the fastest CIFAR-10 trainers (airbench): the split is one tensor on the
GPU, each batch is one index-gather, and augmentation runs on whole batches there, so no worker
process, collate or host-to-device copy sits between steps. The order is exactly the DataLoader
path's (data/sharding.py): training batches follow the TrainingSampler (whole global batches of a
seeded permutation per epoch; Lightning calls its set_epoch through `.sampler`), evaluation
batches are the same `even_eval_batches`. On CPU the two paths give bit-identical runs.
"""

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from cnnfleet.data.resumable import ResumeAware


class DeviceBatches(ResumeAware):
    """An iterable of (images, labels) batches; images are cast to float32 as they are taken.
    Training batches resume mid-epoch (ResumeAware: skip_fn gives the batches already done)."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batches: list[list[int]] | None = None,
        sampler: DistributedSampler | None = None,
        batch_size: int = 1,
    ) -> None:
        if (batches is None) == (sampler is None):
            raise ValueError("give either fixed batches (evaluation) or a sampler (training)")
        self.images, self.labels = images, labels
        self.batches, self.sampler, self.batch_size = batches, sampler, batch_size
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes

    def _index_batches(self) -> list[Tensor]:
        if self.batches is not None:
            return [torch.as_tensor(b, device=self.images.device) for b in self.batches]
        order = torch.as_tensor(list(self.sampler), device=self.images.device)
        return list(order.split(self.batch_size))  # whole batches: the TrainingSampler yields no partial one

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in self._index_batches()[self.batches_to_skip() :]:  # at the epoch's first next()
            yield self.images.index_select(0, index).float(), self.labels.index_select(0, index)

    def __len__(self) -> int:
        if self.batches is not None:
            return len(self.batches)
        return -(-len(self.sampler) // self.batch_size)


def storage_dtype(device: torch.device) -> torch.dtype:
    """Half the memory and bandwidth on GPUs; exact float32 on CPU (no bandwidth to save there)."""
    return torch.float16 if device.type == "cuda" else torch.float32
