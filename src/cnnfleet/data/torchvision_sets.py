"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision's own dataset classes.

torchvision reads (and, with data.download=true, downloads) the real files; we take its arrays
into memory. The official test split is the test split; validation is a stratified share
(data.val_fraction) of the official training split. When files are missing and the download
fails (no internet), one line says which files are expected where.
"""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from cnnfleet.data.in_memory import InMemoryDataModule, stratified_split
from cnnfleet.data.prepare_lock import preparing, temporary_name
from cnnfleet.errors import DataError

# where torchvision looks under data.root, and the files it needs there
EXPECTED = {
    "mnist": (
        "MNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "fashion_mnist": (
        "FashionMNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "cifar10": ("cifar-10-batches-py", [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}


def dataset_class(name: str, verify_checksums: bool) -> type:
    import torchvision.datasets as tvd

    base = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
    cls = base[name]
    if verify_checksums or not name.startswith("cifar"):
        return cls
    # torchvision checks CIFAR files against the official MD5s; files you built yourself in the
    # same format (or tests) pass with data.verify_checksums=false: presence is checked instead
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def unpack_gzipped_idx(raw: Path, files: list[str]) -> None:
    """Extract `X.gz` next to it when only the gzipped IDX file is there (as distributed), atomically."""
    for name in files:
        packed = raw / f"{name}.gz"
        if not (raw / name).exists() and packed.is_file():
            partial = temporary_name(raw / name)
            with gzip.open(packed, "rb") as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, raw / name)


def _missing(root: Path, name: str) -> bool:
    folder, files = EXPECTED[name]
    return any(not (root / folder / f).is_file() for f in files)


def download_atomically(cls: type, root: Path, name: str) -> None:
    """torchvision downloads and extracts into its root in place; here into a temporary root, then each
    file is renamed into `root`, so readers never see half of a data set."""
    folder, files = EXPECTED[name]
    staging = temporary_name(root / f"download-{name}")
    try:
        for train in (True, False):
            cls(str(staging), train=train, download=True)
        (root / folder).mkdir(parents=True, exist_ok=True)
        for file in files:
            if not (root / folder / file).is_file():
                os.replace(staging / folder / file, root / folder / file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class TorchvisionDataModule(InMemoryDataModule):
    def __init__(self, name: str, root: str, download: bool, verify_checksums: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        if name not in EXPECTED:
            raise DataError(f"unknown torchvision data set '{name}'; valid: {', '.join(EXPECTED)}")
        self.name, self.root = name, Path(root)
        self.download, self.verify_checksums = download, verify_checksums
        self._classes: list[str] | None = None
        self._download_error: str | None = None

    def _prepare(self) -> None:
        """Unpack (MNIST .gz) or download what is missing, one process per data root at a time."""
        if not _missing(self.root, self.name):
            return
        folder, files = EXPECTED[self.name]
        with preparing(self.root, self.name):
            if self.name.endswith("mnist"):
                unpack_gzipped_idx(self.root / folder, files)
            if self.download and _missing(self.root, self.name):
                try:
                    download_atomically(dataset_class(self.name, self.verify_checksums), self.root, self.name)
                except (RuntimeError, OSError, ValueError) as exc:  # no internet, a bad archive: _open says what
                    self._download_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    def _open(self, train: bool) -> object:
        folder, files = EXPECTED[self.name]
        self._prepare()
        try:
            return dataset_class(self.name, self.verify_checksums)(str(self.root), train=train, download=False)
        except (RuntimeError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = self._download_error or first
            how = "the download failed" if self.download else "data.download=false"
            problem = "missing"
            if self.name.startswith("cifar") and self.verify_checksums:
                problem += " or not matching the official MD5s (data.verify_checksums=false accepts files you built)"
            packed = " (or as .gz)" if self.name.endswith("mnist") else ""
            raise DataError(
                f"data set '{self.name}': files {problem} in {self.root / folder} and {how} ({first}); expected "
                f"{', '.join(files)}{packed}; put them there, set data.root=<folder holding {folder.split('/')[0]}>, "
                "or allow the download"
            ) from None

    def prepare_data(self) -> None:
        """Lightning calls this on each node's local rank 0, then syncs the ranks: the nodes of a shared
        data root take turns (prepare_lock.py), so only the first downloads or unpacks."""
        self._prepare()

    def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        train, test = self._open(train=True), self._open(train=False)
        self._classes = [str(c) for c in train.classes]
        images, labels = self._arrays(train)
        index = stratified_split(labels, self.fractions[0], 0.0, seed=self.split_seed)
        return {
            "train": (images[index["train"]], labels[index["train"]]),
            "val": (images[index["val"]], labels[index["val"]]),
            "test": self._arrays(test),
        }

    @staticmethod
    def _arrays(dataset: object) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(dataset.data)
        # MNIST: (N, H, W) -> (N, 1, H, W); CIFAR: (N, H, W, C) -> (N, C, H, W)
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        return (data.astype(np.float32) / 255.0), np.asarray(dataset.targets, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        if self._classes and self.classes:  # data.classes: the subset's names, in its order
            return [self._classes[c] for c in self.classes]
        return self._classes or super().class_names
