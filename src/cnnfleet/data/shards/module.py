"""`data=shards`: train from a folder prepared by cnnfleet-prepare, streaming: nothing is held in memory
but the batches being read (a data set larger than memory trains the same way).

Each rank reads its own run of shards (plan.py), every worker its own batches (loader.py); the order
is a function of (seed, epoch, rank, batch), so a run resumed mid-epoch continues with the next
batch exactly (the loop's position is in the checkpoint). `data.decode`: cpu decodes in the
DataLoader workers; gpu leaves the JPEGs encoded until the main process decodes each batch with
nvJPEG on the training GPU; auto picks gpu when the run trains on CUDA.
"""

import lightning as L
import torch
from torch import Tensor

from cnnfleet.data.augment import mix, policy_transform
from cnnfleet.data.image_folder import default_workers
from cnnfleet.data.in_memory import SplitLoaders
from cnnfleet.data.resumable import completed_batches
from cnnfleet.data.sharding import per_device_batch
from cnnfleet.data.shards.decode import normalize
from cnnfleet.data.shards.format import ShardIndex
from cnnfleet.data.shards.loader import ImageSpec, ShardBatches, ShardLoader, decode_raw
from cnnfleet.data.shards.reader import SplitReader
from cnnfleet.data.shards.storage import open_prepared, shard_locator
from cnnfleet.errors import ConfigError, DataError

DECODE = ("auto", "cpu", "gpu")


class ShardsDataModule(SplitLoaders, L.LightningDataModule):
    def __init__(
        self,
        root: str,
        batch_size: int,
        num_classes: int | None,
        channels: int,
        image_size: int,
        resize_size: int,
        mean: list[float],
        std: list[float],
        num_workers: int | None,
        pin_memory: bool | None,
        crop_scale_min: float,
        horizontal_flip: bool,
        auto_augment: str,
        mixup_alpha: float,
        cutmix_alpha: float,
        decode: str = "auto",
        shuffle_window: int = 10000,
        cache_dir: str | None = None,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if decode not in DECODE:
            raise ConfigError(f"data.decode={decode!r}; valid: {', '.join(DECODE)}")
        policy_transform(auto_augment)  # a typo fails before any file is read
        self.root, self.cache_dir = root, cache_dir
        self.batch_size, self.num_classes = batch_size, num_classes
        self.channels, self.image_size = channels, image_size
        self.spec = ImageSpec(channels, image_size, resize_size, crop_scale_min, horizontal_flip, auto_augment)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.decode, self.shuffle_window, self.shuffle_seed = decode, shuffle_window, shuffle_seed
        self.index: ShardIndex | None = None
        self.locate = None

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        self.index = open_prepared(self.root, self.cache_dir)
        self.locate = shard_locator(self.root, self.cache_dir)
        if self.num_classes is not None and self.num_classes != self.index.num_classes:
            raise DataError(
                f"data.num_classes={self.num_classes} but {self.root} holds {self.index.num_classes} "
                "classes; leave data.num_classes unset (null: read from index.json)"
            )
        self.num_classes = self.index.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.index.classes) if self.index else [str(i) for i in range(self.num_classes or 0)]

    def split_sizes(self) -> dict[str, int]:
        return {name: self.index.size(self.index.eval_split(name)) for name in ("train", "val", "test")}

    # ------------------------------------------------------------------ loaders

    def _world(self) -> tuple[int, int, int]:
        if self.trainer is None:
            return 1, 0, 1
        return self.trainer.world_size, self.trainer.global_rank, self.trainer.num_devices

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def decode_on_device(self) -> bool:
        device = self._device()
        if self.decode == "gpu" and device.type != "cuda":
            raise ConfigError(
                f"data.decode=gpu needs a CUDA device, this run trains on {device.type}; "
                "use data.decode=auto or data.decode=cpu"
            )
        return device.type == "cuda" and self.decode != "cpu"

    def loader(self, split: str, train: bool = False) -> ShardLoader:
        world, rank, local_devices = self._world()
        per_device_batch(self.batch_size, world)
        name = self.index.eval_split(split)
        shards = self.index.splits[name]
        reader = SplitReader(shards, self.locate, window=self.shuffle_window if train else 0)
        dataset = ShardBatches(
            reader,
            self.index.counts(name),
            train,
            world,
            rank,
            self.batch_size,
            self.shuffle_seed,
            self.shuffle_window,
            self.spec,
            self.decode_on_device(),
        )
        workers = self.num_workers if self.num_workers is not None else default_workers(local_devices)
        pin = self.pin_memory if self.pin_memory is not None else torch.cuda.is_available()
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        return ShardLoader(
            dataset,
            epoch_fn=epoch,
            skip_fn=lambda: completed_batches(self.trainer) if train else 0,
            num_workers=workers,
            pin_memory=pin,
        )

    def on_before_batch_transfer(self, batch: object, dataloader_idx: int) -> object:
        """Batches the workers left encoded are decoded on the training GPU here (nvJPEG, batched)."""
        if isinstance(batch, dict):
            return decode_raw(batch, self.spec, self._device())
        return batch

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """uint8 -> normalised float32 on the device; MixUp/CutMix for training batches."""
        images, labels = batch
        images = normalize(images, self.mean, self.std)
        if self.trainer is None or not self.trainer.training:
            return images, labels
        return mix(images, labels, self.num_classes, self.mixup_alpha, self.cutmix_alpha)
