"""Base DataModule for data sets that fit in memory: one tensor per split, fixed seeded split.

`batch_size` is the GLOBAL batch; each rank loads batch_size / world_size. The splits are sharded
among the ranks by data/sharding.py (training: whole global batches, the same samples at every step
whatever the world size; validation/test: every sample exactly once), on the training device
(DeviceBatches) or through a DataLoader.
"""

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from cnnfleet.data.augment import augment, auto_augment, mix, policy_transform
from cnnfleet.data.on_device import DeviceBatches, storage_dtype
from cnnfleet.data.resumable import completed_batches
from cnnfleet.data.sharding import TrainingSampler, even_eval_batches, per_device_batch, sharded_loader
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
    classes, sizes = np.unique(labels, return_counts=True)
    n_test = _apportion(sizes, test_fraction, np.zeros_like(sizes))
    n_val = _apportion(sizes, val_fraction, n_test)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for cls, t, v in zip(classes, n_test, n_val, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        parts["test"].append(idx[:t])
        parts["val"].append(idx[t : t + v])
        parts["train"].append(idx[t + v :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _apportion(sizes: np.ndarray, fraction: float, taken: np.ndarray) -> np.ndarray:
    """Images per class for a split of `fraction` of all images: each class gets the floor of its
    share, and the images left over go to the classes with the largest remainders (Hamilton's
    method). Rounding each class on its own empties a split when classes are small (1000 classes
    of 4 images at val_fraction=0.1 round to 0 each); this keeps the split's total at
    round(N * fraction) and never takes more than a class has left after `taken`."""
    exact = sizes * fraction
    counts = np.minimum(np.floor(exact).astype(np.int64), sizes - taken)
    short = int(round(float(sizes.sum()) * fraction)) - int(counts.sum())
    room = counts < sizes - taken
    # largest remainder first; among equals, the classes the other split took least from
    order = [i for i in np.lexsort((taken, -(exact - counts))) if room[i]]
    counts[order[: max(0, short)]] += 1
    return counts


def select_classes(arrays: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[int]) -> dict:
    """Only the samples of `classes` (labels of the full set), relabelled 0..k-1 in the order given;
    DataError for a class the data set does not have."""
    present = set(np.concatenate([labels for _, labels in arrays.values()]).tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(
            f"data.classes={classes}: the data set has no class {absent[0]} (its labels are "
            f"{min(present)}..{max(present)})"
        )
    lookup = np.full(max(max(present), max(classes)) + 1, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    out = {}
    for name, (images, labels) in arrays.items():
        keep = lookup[labels] >= 0
        out[name] = (images[keep], lookup[labels[keep]])
    return out


class SplitLoaders:
    """Lightning's three loader hooks for a data module whose `loader(split, train)` builds them.
    `test_split`: what trainer.test reads (cnnfleet-eval split=val|train sets it), so that the data
    module's batch-transfer hooks (decode, normalise) run for every split it evaluates."""

    test_split = "test"

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_split)


class InMemoryDataModule(SplitLoaders, L.LightningDataModule):
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
        num_workers: int,
        crop_padding: int,
        horizontal_flip: bool,
        auto_augment: str,
        mixup_alpha: float,
        cutmix_alpha: float,
        on_device: bool | str,
        shuffle_seed: int = 0,
        classes: list[int] | None = None,
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
        policy_transform(auto_augment)  # a typo fails before any data is read
        self.auto_augment, self.mixup_alpha, self.cutmix_alpha = auto_augment, mixup_alpha, cutmix_alpha
        if on_device not in (True, False, "auto"):
            raise ConfigError(f"data.on_device={on_device!r}; use auto, true or false")
        self.on_device = on_device is not False  # auto: in-memory data sets always fit
        self.shuffle_seed = shuffle_seed
        self.classes = list(classes) if classes is not None else None  # data.classes: a subset, relabelled 0..k-1
        self.splits: dict[str, TensorDataset] = {}
        self.device_splits: dict[str, tuple[Tensor, Tensor]] = {}

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return all images as float32 (N, C, H, W) in 0..1 and int64 labels."""
        raise NotImplementedError

    def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(images, labels) per split. Default: one pool, split stratified by the configured fractions;
        data sets with an official test split override this."""
        images, labels = self.load_arrays()
        index = stratified_split(labels, *self.fractions, seed=self.split_seed)
        return {name: (images[idx], labels[idx]) for name, idx in index.items()}

    @property
    def class_names(self) -> list[str]:
        """Names for tables and the confusion matrix; data sets with named classes override this."""
        return [str(c) for c in self.classes] if self.classes else [str(i) for i in range(self.num_classes)]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.split_arrays()
        if self.classes is not None:
            arrays = select_classes(arrays, self.classes)
        for name, key in (("train", None), ("val", "data.val_fraction")):
            if len(arrays[name][1]) == 0:
                total = sum(len(labels) for _, labels in arrays.values())
                fix = f"raise {key}" if key else "lower data.val_fraction and data.test_fraction"
                val, test = self.fractions
                raise DataError(
                    f"the {name} split is empty ({total} images, data.val_fraction={val}, "
                    f"data.test_fraction={test}); {fix}"
                )
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        for name, (images, labels) in arrays.items():
            self._check_shapes(images, labels)
            x = (torch.from_numpy(images) - mean) / std
            self.splits[name] = TensorDataset(x, torch.from_numpy(labels))

    def _check_shapes(self, images: np.ndarray, labels: np.ndarray) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if images.shape[1:] != expected:
            raise DataError(
                f"data: images have shape {tuple(images.shape[1:])}, config says (channels, size, size) = {expected}"
            )
        if len(labels) and labels.max() >= self.num_classes:
            raise DataError(f"data: labels go up to {labels.max()}, but data.num_classes={self.num_classes}")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augment training batches on the training device, after the host-to-device copy."""
        if self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        images = augment(images, self.crop_padding, self.horizontal_flip)
        if self.auto_augment != "none":
            mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
            images = auto_augment(images, self.auto_augment, mean, std)
        return mix(images, labels, self.num_classes, self.mixup_alpha, self.cutmix_alpha)

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

    def _device_split(self, split: str) -> tuple[Tensor, Tensor] | None:
        """The split's tensors on the training device (moved once), or None for the DataLoader path."""
        if not self.on_device or self.trainer is None:
            return None
        if split not in self.device_splits:
            device = self.trainer.strategy.root_device
            images, labels = self.splits[split].tensors
            self.device_splits[split] = (images.to(device, storage_dtype(device)), labels.to(device))
        return self.device_splits[split]

    def loader(self, split: str, train: bool = False) -> DataLoader | DeviceBatches:
        if split not in self.splits:
            raise ConfigError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        world, rank = self._world()
        resume, on_device = (lambda: completed_batches(self.trainer)), self._device_split(split)
        if on_device is None:
            return sharded_loader(
                self.splits[split],
                train,
                world,
                rank,
                self.batch_size,
                self.shuffle_seed,
                num_workers=self.num_workers,
                skip_fn=resume,
            )
        batch, n = self.per_device_batch_size(), len(self.splits[split])
        if not train:
            return DeviceBatches(*on_device, batches=even_eval_batches(n, world, rank, batch))
        sampler = TrainingSampler(
            range(n), num_replicas=world, rank=rank, seed=self.shuffle_seed, global_batch=self.batch_size
        )
        batches = DeviceBatches(*on_device, sampler=sampler, batch_size=batch)
        batches.skip_fn = resume
        return batches
