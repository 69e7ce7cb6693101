"""The classes of an image-folder data set are its train/ sub-folders: read them without torch, so the
command line can fill in `data.num_classes` before any process is launched (cli._run_overrides)."""

from pathlib import Path

from omegaconf import DictConfig, open_dict

from cnnfleet.errors import DataError


def train_classes(root: Path) -> list[str]:
    """The sorted class folder names under <root>/train; DataError (one line) when the layout is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root={root} does not exist; point it at a folder with train/ and val/ inside")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder; expected {root}/{split}/<class>/<image>")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}/train has no class folders; expected {root}/train/<class>/<image>")
    if len(classes) == 1:
        raise DataError(
            f"{root}/train has one class folder ({classes[0]}); a classifier needs at least 2 classes, one folder each"
        )
    return classes


def check_class_count(root: Path, num_classes: int | None) -> list[str]:
    """The classes; an explicit data.num_classes must equal the folder count."""
    classes = train_classes(root)
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(
            f"data.num_classes={num_classes} but {root}/train has {len(classes)} class folders; "
            f"set data.num_classes={len(classes)} or leave it unset (null: counted from the folders)"
        )
    return classes


def complete_from_data(cfg: DictConfig) -> list[str]:
    """Fill in `data.num_classes` when the data set's files define it and the config leaves it null
    (data=imagefolder: train/'s folders; data=shards: index.json); returns the override that says so,
    for the command every rank parses."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or data.get("num_classes", 0) is not None:
        return []
    target = str(data.get("_target_", ""))
    if target.endswith("ImageFolderDataModule"):
        count = len(train_classes(Path(str(data.root))))
    elif target.endswith("ShardsDataModule"):
        from cnnfleet.data.shards.storage import open_prepared

        count = open_prepared(str(data.root), data.get("cache_dir")).num_classes
    else:
        return []
    with open_dict(cfg):
        cfg.data.num_classes = count
    return [f"data.num_classes={count}"]
