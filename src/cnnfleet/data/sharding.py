"""How a split is divided among the DDP ranks, so that a run does not depend on the layout.

`data.batch_size` is the GLOBAL batch B; each of the N ranks loads B / N. The contract: 1 process x B
and N processes x B/N see the same samples at every optimizer step (the union of the ranks' batch t is
the one-process batch t). The data modules shard the data themselves (the trainer runs with
use_distributed_sampler=False), also with one process:

- training (`TrainingSampler`): one seeded permutation per epoch, cut to whole global batches; rank r
  takes every N-th index from position r. Rank r's batch t is then positions tB + r, tB + r + N, ...
  and the ranks' batches t together are positions tB .. tB + B - 1: the one-process batch t. The cut
  drops the epoch's last partial global batch (n mod B samples, other ones each epoch), as timm's
  train.py does: torch's DistributedSampler instead pads an epoch with repeated samples to a multiple
  of N, so its last batch held 44 samples with 2 ranks and 43 with one (digits, B = 64) and full-epoch
  runs diverged (3e-2 after 3 epochs);
- validation/test: every sample exactly once (no padding duplicates in the metrics), split into the
  same number of batches on every rank, so DDP's per-forward collectives never wait on a rank that ran
  out of batches.
"""

import math
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cnnfleet.data.resumable import ResumableDataLoader, SkipFn
from cnnfleet.data.workers import worker_start
from cnnfleet.errors import ConfigError
from cnnfleet.launch.world import per_device_batch


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Whole global batches in a training epoch; ConfigError when there is none (the run could not train)."""
    if global_batch > num_samples:
        raise ConfigError(
            f"data.batch_size={global_batch} (global) is larger than the {num_samples} training images: "
            f"an epoch would have no step; use data.batch_size <= {num_samples}"
        )
    return num_samples // global_batch


class TrainingSampler(DistributedSampler):
    """This rank's training indices of an epoch: whole global batches only, resumable mid-epoch.

    The permutation is DistributedSampler's (randperm seeded with seed + epoch; Lightning calls
    set_epoch), cut to a multiple of `global_batch` before rank r takes indices[r::N] (module
    docstring). `global_batch` defaults to one sample per rank (DistributedSampler's drop_last).
    `skip`: indices to drop once, at the start of the next epoch's iteration: the batches a run
    resumed mid-epoch has already trained on (data/resumable.py)."""

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        global_batch: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.global_batch = global_batch or num_replicas
        per_device_batch(self.global_batch, num_replicas)
        self.total_size = steps_per_epoch(len(dataset), self.global_batch) * self.global_batch
        self.num_samples = self.total_size // num_replicas  # what len() returns
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = list(range(len(self.dataset)))
        mine = order[: self.total_size][self.rank :: self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])


def even_eval_batches(num_samples: int, world_size: int, rank: int, batch_size: int) -> list[list[int]]:
    """This rank's share (every world-th sample, no repeats) in as many batches as every other rank."""
    mine = np.arange(rank, num_samples, world_size)
    num_batches = max(1, math.ceil(math.ceil(num_samples / world_size) / batch_size))
    return [chunk.tolist() for chunk in np.array_split(mine, num_batches) if len(chunk)]


def sharded_loader(
    dataset: Dataset,
    train: bool,
    world: int,
    rank: int,
    global_batch: int,
    seed: int,
    num_workers: int = 0,
    skip_fn: SkipFn | None = None,
    **kwargs: Any,
) -> DataLoader:
    """This rank's loader of B / world images a batch: the TrainingSampler's whole global batches for
    training (resumable mid-epoch), every sample exactly once in equal batch counts for evaluation."""
    batch = per_device_batch(global_batch, world)
    # its own generator: creating a DataLoader iterator otherwise draws a worker seed from the global
    # torch RNG each epoch, which shifts augmentation randomness after a resume
    common = {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "generator": torch.Generator().manual_seed(seed),
        **worker_start(num_workers),
        **kwargs,
    }
    if train:
        sampler = TrainingSampler(dataset, num_replicas=world, rank=rank, seed=seed, global_batch=global_batch)
        loader = ResumableDataLoader(dataset, batch_size=batch, sampler=sampler, **common)
        loader.skip_fn = skip_fn
        return loader
    return DataLoader(dataset, batch_sampler=even_eval_batches(len(dataset), world, rank, batch), **common)
