"""Images in the ImageNet layout: <root>/train/<class>/*.jpg, <root>/val/<class>/*.jpg (and
optionally <root>/test/<class>/...; without it the test split is val).

Read by torchvision's ImageFolder with standard transforms (train: RandomResizedCrop, flip,
optional RandAugment/TrivialAugmentWide; eval: resize + center crop), decoded in DataLoader
workers. Class indices come from train/ and are reused for val/ and test/, so a split that
lacks a class keeps the same label numbering; a class that exists only in val/ is an error.
"""

from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from cnnfleet.data.augment import mix, policy_transform
from cnnfleet.data.class_folders import check_class_count
from cnnfleet.data.in_memory import SplitLoaders
from cnnfleet.data.resumable import completed_batches
from cnnfleet.data.sharding import sharded_loader
from cnnfleet.errors import DataError
from cnnfleet.launch.env import cpus_per_process


class TrainClassesFolder(ImageFolder):
    """ImageFolder whose class indices are given (train/'s), whatever classes this folder holds."""

    def __init__(self, root: str, class_to_idx: dict[str, int], **kwargs: object) -> None:
        self.fixed_classes = dict(class_to_idx)
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self.fixed_classes), dict(self.fixed_classes)


def load_image(path: str, mode: str) -> object:
    """PIL image in `mode` (RGB or L); DataError naming the file when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from None


def train_transform(
    image_size: int, crop_scale_min: float, horizontal_flip: bool, policy: str, mean: list, std: list
) -> object:
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), antialias=True)]
    if horizontal_flip:
        ops.append(v2.RandomHorizontalFlip())
    auto = policy_transform(policy)
    if auto is not None:
        ops.append(auto())
    return v2.Compose([*ops, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def eval_transform(image_size: int, resize_size: int, mean: list, std: list) -> object:
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def default_workers(devices_per_node: int) -> int:
    """Decode workers per rank: this process's CPU share minus the training thread, at least 1, at most 8."""
    cores, _ = cpus_per_process(devices_per_node)  # SLURM's --cpus-per-task under SLURM
    return max(1, min(8, cores - 1))


class ImageFolderDataModule(SplitLoaders, L.LightningDataModule):
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
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise DataError(f"data.channels={channels}: image folders are read as RGB (3) or grayscale (1)")
        self.root = Path(root)
        self.batch_size, self.num_classes, self.channels = batch_size, num_classes, channels
        self.image_size, self.resize_size = image_size, resize_size
        self.mean, self.std = list(mean), list(std)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.crop_scale_min, self.horizontal_flip = crop_scale_min, horizontal_flip
        policy_transform(auto_augment)  # a typo fails before any file is read
        self.auto_augment, self.mixup_alpha, self.cutmix_alpha = auto_augment, mixup_alpha, cutmix_alpha
        self.shuffle_seed = shuffle_seed
        self.splits: dict = {}
        self.classes: list[str] = []

    # ------------------------------------------------------------------ reading the folders

    def _folder(self, split: str) -> Path | None:
        path = self.root / split
        return path if path.is_dir() else None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_classes = check_class_count(self.root, self.num_classes)
        self.num_classes = len(train_classes)
        self.classes = train_classes
        mode = "RGB" if self.channels == 3 else "L"
        train_tf = train_transform(
            self.image_size, self.crop_scale_min, self.horizontal_flip, self.auto_augment, self.mean, self.std
        )
        eval_tf = eval_transform(self.image_size, self.resize_size, self.mean, self.std)
        self.splits["train"] = self._dataset("train", train_tf, mode)
        self.splits["val"] = self._dataset("val", eval_tf, mode)
        self.splits["test"] = self._dataset("test" if self._folder("test") else "val", eval_tf, mode)

    def _dataset(self, split: str, transform: object, mode: str) -> ImageFolder:
        folder = self.root / split
        extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(self.classes))
        if extra:
            raise DataError(
                f"{folder} has classes that train/ does not: {', '.join(extra[:5])}; every class needs training images"
            )
        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        try:
            dataset = TrainClassesFolder(
                str(folder), class_to_idx, transform=transform, loader=partial(load_image, mode=mode), allow_empty=True
            )
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"cannot read {folder}: {exc}") from None
        if len(dataset) == 0:
            raise DataError(
                f"{folder} holds no images (.jpg, .jpeg, .png, .bmp, .tif, .webp, ...) in its class folders"
            )
        return dataset

    @property
    def class_names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_classes)]

    def split_sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items()}

    # ------------------------------------------------------------------ loaders

    def _world(self) -> tuple[int, int, int]:
        if self.trainer is None:
            return 1, 0, 1
        return self.trainer.world_size, self.trainer.global_rank, self.trainer.num_devices

    def loader(self, split: str, train: bool = False) -> DataLoader:
        world, rank, local_devices = self._world()
        workers = self.num_workers if self.num_workers is not None else default_workers(local_devices)
        pin = self.pin_memory if self.pin_memory is not None else torch.cuda.is_available()
        return sharded_loader(
            self.splits[split],
            train,
            world,
            rank,
            self.batch_size,
            self.shuffle_seed,
            num_workers=workers,
            pin_memory=pin,
            skip_fn=lambda: completed_batches(self.trainer),
        )

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """MixUp/CutMix on the device (the per-image transforms ran in the workers)."""
        if self.trainer is None or not self.trainer.training:
            return batch
        return mix(*batch, self.num_classes, self.mixup_alpha, self.cutmix_alpha)
