"""The on-disk format cnnfleet-prepare writes and `data=shards` reads.

A prepared folder:

    <root>/index.json                      what is there: classes, splits, shards, settings
    <root>/train/shard-000000.tar          WebDataset tar shards: per sample <key>.jpg + <key>.cls
    <root>/val/shard-000000.tar            (key = <shard>_<sample>, .cls = the label in ASCII)
    <root>/test/...                        optional; without it the test split is val

The shards are plain POSIX tar files in WebDataset's layout (webdataset, timm and `tar tf` read
them); samples were shuffled once before sharding, so a shard holds a mix of classes. index.json
is written last: a folder without it is a preparation that has not finished.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from cnnfleet.errors import DataError

FORMAT = "cnnfleet-shards/1"
INDEX = "index.json"
SPLITS = ("train", "val", "test")
IMAGE_EXT, LABEL_EXT = "jpg", "cls"


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def sample_key(shard: int, sample: int) -> str:
    return f"{shard:06d}_{sample:06d}"


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the prepared folder: <split>/shard-NNNNNN.tar
    count: int  # samples in it
    bytes: int  # file size (a truncated copy is caught when opened)
    sha256: str


@dataclass
class ShardIndex:
    """index.json, read: the class names, each split's shards in order, and how they were made."""

    root: str  # the local folder it was read from (for s3:// roots: the cache's copy)
    classes: list[str]
    splits: dict[str, list[Shard]]
    settings: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self, split: str) -> list[int]:
        return [shard.count for shard in self.splits[split]]

    def size(self, split: str) -> int:
        return sum(self.counts(split))

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "classes": self.classes,
            "splits": {name: [vars(s) for s in shards] for name, shards in self.splits.items()},
            "settings": self.settings,
        }

    @classmethod
    def read(cls, root: str | Path) -> "ShardIndex":
        """The index of a prepared folder; DataError (one line, with the fix) for anything else."""
        root_text = str(root)
        path = Path(root) / INDEX
        if not Path(root).is_dir():
            raise DataError(
                f"data.root={root_text} does not exist; prepare shards with cnnfleet-prepare <images> {root_text}"
            )
        if not path.is_file():
            if (Path(root) / ".prepare").is_dir():
                hint = "its preparation has not finished: run the same cnnfleet-prepare command again to complete it"
            elif (Path(root) / "train").is_dir():
                hint = (
                    f"it looks like an image folder: use data=imagefolder, or cnnfleet-prepare {root_text} "
                    "<new folder> and set data.root to that folder"
                )
            else:
                hint = "write shards with cnnfleet-prepare <image folder> <new folder> and set data.root to that folder"
            raise DataError(f"data.root={root_text} has no {INDEX}; {hint}")
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT:
                raise DataError(
                    f"{path} is format {raw.get('format')!r}, this cnnfleet reads {FORMAT!r}; "
                    "prepare the data set again with this version's cnnfleet-prepare"
                )
            splits = {name: [Shard(**s) for s in shards] for name, shards in raw["splits"].items()}
            index = cls(root_text, [str(c) for c in raw["classes"]], splits, dict(raw.get("settings", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is damaged ({type(exc).__name__}: {exc}); prepare the data set again") from None
        for name in ("train", "val"):
            if not index.splits.get(name) or index.size(name) == 0:
                raise DataError(
                    f"{path}: the {name} split is empty; prepare the data set again with a {name} "
                    "split (cnnfleet-prepare --val-fraction for sources without one)"
                )
        if index.num_classes < 2:
            raise DataError(f"{path} lists {index.num_classes} class; a classifier needs at least 2")
        return index

    def eval_split(self, split: str) -> str:
        """test falls back to val when the folder has no test split."""
        return split if self.splits.get(split) else "val"
