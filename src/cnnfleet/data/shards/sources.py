"""What cnnfleet-prepare reads: an ImageFolder tree or the MNIST/CIFAR files torchvision reads.

A source is its class names and, per split, a list of samples (a file path or a uint8 array, and
the label). Sources without a validation split (MNIST, CIFAR) get a stratified share of their
training split, as `data=mnist` does (data/in_memory.py's split, same seed rule).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnfleet.errors import DataError

FORMATS = ("imagefolder", "mnist", "fashion_mnist", "cifar10", "cifar100")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class Source:
    classes: list[str]
    splits: dict[str, list[tuple[object, int]]]  # split -> [(path or uint8 array, label)]
    mode: str  # PIL mode the images are written in: RGB or L


def image_folder(root: Path, channels: int) -> Source:
    from cnnfleet.data.class_folders import train_classes

    classes = train_classes(root)
    lookup = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list[tuple[object, int]]] = {}
    for split in ("train", "val", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        samples = []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if class_dir.name not in lookup:
                raise DataError(f"{class_dir} is a class that train/ does not have; every class needs training images")
            samples += [
                (str(f), lookup[class_dir.name])
                for f in sorted(class_dir.rglob("*"))
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            ]
        if not samples:
            raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        if split == "train":
            empty = sorted(set(classes) - {classes[label] for _, label in samples})
            if empty:
                raise DataError(
                    f"{folder}/{empty[0]} holds no images ({len(empty)} class folder(s) without any); "
                    "add images or remove the folder"
                )
        splits[split] = samples
    return Source(classes, splits, "RGB" if channels == 3 else "L")


def torchvision_files(root: Path, name: str, val_fraction: float, seed: int) -> Source:
    from cnnfleet.data.in_memory import stratified_split
    from cnnfleet.data.torchvision_sets import EXPECTED, dataset_class, unpack_gzipped_idx

    folder, files = EXPECTED[name]
    if name.endswith("mnist"):
        unpack_gzipped_idx(root / folder, files)
    try:
        train, test = (
            dataset_class(name, verify_checksums=False)(str(root), train=t, download=False) for t in (True, False)
        )
    except (RuntimeError, OSError) as exc:
        raise DataError(
            f"{name}: cannot read its files in {root / folder} ({str(exc).strip().splitlines()[0]}); "
            f"expected {', '.join(files)}"
        ) from None
    images, labels = np.asarray(train.data), np.asarray(train.targets, dtype=np.int64)
    index = stratified_split(labels, val_fraction, 0.0, seed=seed)
    test_images, test_labels = np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)

    def samples(x: np.ndarray, y: np.ndarray) -> list[tuple[object, int]]:
        return [(x[i], int(y[i])) for i in range(len(y))]

    return Source(
        [str(c) for c in train.classes],
        {
            "train": samples(images[index["train"]], labels[index["train"]]),
            "val": samples(images[index["val"]], labels[index["val"]]),
            "test": samples(test_images, test_labels),
        },
        "L" if images.ndim == 3 else "RGB",
    )


def read_source(kind: str, root: Path, channels: int, val_fraction: float, seed: int, output: Path) -> Source:
    if not root.is_dir():
        raise DataError(f"source {root} {'is not a folder' if root.exists() else 'does not exist'}")
    if output.resolve().is_relative_to(root.resolve()):
        raise DataError(f"output {output} is inside the source {root}; write the shards elsewhere")
    if kind == "imagefolder":
        source = image_folder(root, channels)
        if "val" not in source.splits:
            raise DataError(f"{root} has no val/ folder; expected {root}/val/<class>/<image>")
        return source
    return torchvision_files(root, kind, val_fraction, seed)
