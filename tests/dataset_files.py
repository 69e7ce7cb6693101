"""Small data sets written in each real on-disk format (nothing downloads in tests).

Images are class prototypes plus noise, so one epoch already learns something.
"""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def images(n: int, classes: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    prototypes = np.random.RandomState(1234).randint(0, 256, size=(classes, *shape))  # the same in every split
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % classes
    noisy = prototypes[labels] + rng.randint(-40, 41, size=(n, *shape))
    return noisy.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format (big-endian magic 0x08 = ubyte, then the dimensions), gzipped as distributed."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 300, n_test: int = 100) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = images(n, 10, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def write_cifar10(root: Path, per_batch: int = 60, n_test: int = 100) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x, y = images(per_batch, 10, (3, 32, 32), seed=i)
        _pickle(folder / f"data_batch_{i}", {"data": x.reshape(per_batch, -1), "labels": y.tolist()})
    x, y = images(n_test, 10, (3, 32, 32), seed=9)
    _pickle(folder / "test_batch", {"data": x.reshape(n_test, -1), "labels": y.tolist()})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    return root


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 200) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = images(n, 100, (3, 32, 32), seed)
        entry = {"data": x.reshape(n, -1), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
        _pickle(folder / name, entry)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"class{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super{i:02d}" for i in range(20)],
        },
    )
    return root


def _pickle(path: Path, data: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(data, f)


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: int = 8,
    size: int = 40,
    splits: tuple[str, ...] = ("train", "val"),
) -> Path:
    """PNG and JPEG files (alternating), RGB, in <root>/<split>/<class>/."""
    for s, split in enumerate(splits):
        x, y = images(per_class * len(classes), len(classes), (size, size, 3), seed=s)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(img).save(folder / f"{split}_{i}.{ext}")
    return root
