"""A rank's batches of one split as an IterableDataset: each worker reads and decodes its own batches.

The plan (plan.py) fixes every batch; worker w of W produces batches skip + w, skip + w + W, ...,
and the DataLoader takes them in turn, so the loader yields the plan's batches in order. The epoch
and the batches to skip (a mid-epoch resume: data/resumable.py) are written by ShardLoader in the
main process when an epoch's iteration starts, into a tensor in shared memory that the persistent
workers read when they begin the epoch (their shard tables and open files stay with them).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnfleet.data.sharding import per_device_batch, steps_per_epoch
from cnnfleet.data.shards import decode as dec
from cnnfleet.data.shards.plan import eval_plan, train_plan, worker_batches
from cnnfleet.data.shards.reader import SplitReader
from cnnfleet.data.workers import worker_start


@dataclass(frozen=True)
class ImageSpec:
    """How samples become training images (the data config's keys)."""

    channels: int
    image_size: int
    resize_size: int
    crop_scale_min: float
    horizontal_flip: bool
    auto_augment: str


def batch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ShardBatches(IterableDataset):
    """This rank's batches of a split; decoded to uint8 (B, C, S, S) here, or left encoded for the GPU."""

    def __init__(
        self,
        reader: SplitReader,
        counts: list[int],
        train: bool,
        world: int,
        rank: int,
        global_batch: int,
        seed: int,
        shuffle_window: int,
        spec: ImageSpec,
        decode_on_device: bool,
    ) -> None:
        self.reader, self.counts, self.train = reader, counts, train
        self.world, self.rank, self.global_batch = world, rank, global_batch
        self.seed, self.shuffle_window, self.spec = seed, shuffle_window, spec
        self.decode_on_device = decode_on_device
        self.position = torch.zeros(2, dtype=torch.int64).share_memory_()  # (epoch, batches to skip)
        self.batch = per_device_batch(global_batch, world)
        total = sum(counts)
        self.num_batches = (
            steps_per_epoch(total, global_batch) if train else len(eval_plan(counts, world, rank, self.batch))
        )

    def start_epoch(self, epoch: int, skip: int) -> None:
        """Main process, before the epoch's iteration: what every worker reads when it begins it."""
        self.position[0], self.position[1] = epoch, skip if self.train else 0

    def plan(self, epoch: int) -> Any:
        if self.train:
            return train_plan(
                self.counts, self.seed, epoch, self.world, self.rank, self.global_batch, self.shuffle_window
            )
        return eval_plan(self.counts, self.world, self.rank, self.batch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch, skip = self.position.tolist()
        plan = self.plan(epoch)
        for number in worker_batches(len(plan), skip, workers, worker):
            yield self.make_batch(plan[number], epoch, number)

    def make_batch(self, positions: np.ndarray, epoch: int, number: int) -> Any:
        spec = self.spec
        data, labels, names = self.reader.read(positions)
        sizes = [dec.jpeg_size(d, n) for d, n in zip(data, names, strict=True)]
        seed = batch_seed(self.seed, epoch, self.rank, number, self.train)
        boxes, flips = dec.plan_crops(
            sizes, self.train, spec.image_size, spec.resize_size, spec.crop_scale_min, spec.horizontal_flip, seed
        )
        labels_t = torch.tensor(labels, dtype=torch.int64)
        policy = spec.auto_augment if self.train else "none"
        if self.decode_on_device:
            return {
                "jpeg": data,
                "names": names,
                "boxes": boxes,
                "flips": flips,
                "labels": labels_t,
                "seed": seed,
                "policy": policy,
            }
        images = dec.crop_resize(dec.decode(data, names, spec.channels, "cpu"), boxes, flips, spec.image_size)
        return dec.apply_policy(images, policy, seed), labels_t


def decode_raw(batch: dict, spec: ImageSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch left encoded by the workers, decoded and cropped on `device` (nvJPEG on CUDA)."""
    images = dec.decode(batch["jpeg"], batch["names"], spec.channels, device)
    images = dec.crop_resize(images, batch["boxes"], batch["flips"], spec.image_size)
    return dec.apply_policy(images, batch["policy"], batch["seed"]), batch["labels"]


class ShardLoader(DataLoader):
    """DataLoader over ShardBatches (persistent workers) that tells it, in the main process, which epoch
    starts and how many of its batches a resumed run has already trained."""

    def __init__(
        self, dataset: ShardBatches, epoch_fn: Callable[[], int], skip_fn: Callable[[], int], **kwargs: Any
    ) -> None:
        workers = kwargs.get("num_workers", 0)
        super().__init__(dataset, batch_size=None, persistent_workers=workers > 0, **worker_start(workers), **kwargs)
        self.epoch_fn, self.skip_fn = epoch_fn, skip_fn

    def __iter__(self) -> Iterator[Any]:
        self.dataset.start_epoch(self.epoch_fn(), self.skip_fn())
        yield from super().__iter__()

    def state_dict(self) -> dict:  # resumable for Lightning; the position comes from the restored loop
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
