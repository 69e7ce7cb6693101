"""Base DataModule for data sets that fit in memory: one tensor per split, fixed seeded split.

`batch_size` is the GLOBAL batch; each rank loads batch_size / world_size. The module shards
the data itself (the trainer runs with use_distributed_sampler=False):

- training: torch's DistributedSampler (seeded permutation per epoch, rank r takes every
  world-th index), also with one process, so the samples of step t are the same set whatever
  the world size: 2 ranks x B/2 see exactly what 1 rank x B sees;
- validation/test: every sample exactly once (no padding duplicates in the metrics), split into
  the same number of batches on every rank, so DDP's per-forward collectives never wait on a
  rank that ran out of batches.
"""

import math

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from cnnfleet.data.augment import augment
from cnnfleet.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Index arrays per split; each class is divided in the same proportions.

    Raises ConfigError when the fractions leave no training data.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    rng = np.random.RandomState(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def per_device_batch(global_batch: int, world_size: int) -> int:
    """Global batch / world size; ConfigError when it does not divide."""
    if global_batch % world_size:
        raise ConfigError(
            f"data.batch_size={global_batch} (global) is not divisible by the world size {world_size}; "
            f"use a multiple of {world_size}"
        )
    return global_batch // world_size


def even_eval_batches(num_samples: int, world_size: int, rank: int, batch_size: int) -> list[list[int]]:
    """This rank's share (every world-th sample, no repeats) in as many batches as every other rank."""
    mine = np.arange(rank, num_samples, world_size)
    num_batches = max(1, math.ceil(math.ceil(num_samples / world_size) / batch_size))
    return [chunk.tolist() for chunk in np.array_split(mine, num_batches) if len(chunk)]


class InMemoryDataModule(L.LightningDataModule):
    """Subclasses implement `load_arrays`; this class splits, normalises and serves batches."""

    def __init__(
        self,
        batch_size: int,
        num_classes: int,
        channels: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        num_workers: int = 0,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"data.mean/data.std need one value per channel ({channels}); got {mean} / {std}")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.shuffle_seed = shuffle_seed
        self.splits: dict[str, TensorDataset] = {}

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return all images as float32 (N, C, H, W) in the data set's natural scale and int64 labels."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = self.load_arrays()
        self._check_shapes(images, labels)
        index = stratified_split(labels, *self.fractions, seed=self.split_seed)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (torch.from_numpy(images) - mean) / std
        y = torch.from_numpy(labels)
        self.splits = {name: TensorDataset(x[idx], y[idx]) for name, idx in index.items()}

    def _check_shapes(self, images: np.ndarray, labels: np.ndarray) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if images.shape[1:] != expected:
            raise DataError(
                f"data: images have shape {tuple(images.shape[1:])}, config says (channels, size, size) = {expected}"
            )
        if labels.max() >= self.num_classes:
            raise DataError(f"data: labels go up to {labels.max()}, but data.num_classes={self.num_classes}")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augment training batches on the training device, after the host-to-device copy."""
        if self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        return augment(images, self.crop_padding, self.horizontal_flip), labels

    def split_sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items()}

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) outside one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def per_device_batch_size(self) -> int:
        """Global batch / world size; ConfigError when it does not divide."""
        return per_device_batch(self.batch_size, self._world()[0])

    def loader(self, split: str, train: bool = False) -> DataLoader:
        if split not in self.splits:
            raise ConfigError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        dataset, (world, rank), batch = self.splits[split], self._world(), self.per_device_batch_size()
        common = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        if train:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.shuffle_seed)
            return DataLoader(dataset, batch_size=batch, sampler=sampler, **common)
        return DataLoader(dataset, batch_sampler=even_eval_batches(len(dataset), world, rank, batch), **common)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
