"""Random access to the samples of a split's tar shards, by position (plan.py names them).

Each shard's tar headers are read once per process into a table (sample -> offset, size, label);
a sample is then one seek and one read of its encoded image, never a decode. A worker reads only
the samples of its own batches. Shard files are found through `locate`, which returns a local
path (the prepared folder itself, or a cache that object storage fills: storage.py).
"""

import os
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnfleet.data.shards.format import IMAGE_EXT, LABEL_EXT, Shard
from cnnfleet.errors import DataError

OPEN_FILES = 8  # shard files a process keeps open, at least (more when a shuffle window spans more)


@dataclass
class ShardTable:
    path: str
    offsets: np.ndarray  # byte offset of each sample's image
    sizes: np.ndarray  # its length in bytes
    labels: np.ndarray
    keys: list[str]


def read_table(path: str, shard: Shard) -> ShardTable:
    """The shard's sample table from its tar headers; DataError naming the file when it is not intact."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise DataError(
            f"shard {path} is missing (index.json lists it); copy it again or run the same "
            "cnnfleet-prepare command again"
        ) from None
    if size != shard.bytes:
        raise DataError(
            f"shard {path} is {size} bytes but index.json says {shard.bytes}: the file is truncated "
            "or was changed; copy it again or run cnnfleet-prepare again"
        )
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if ext == IMAGE_EXT:
                    images[key] = (member.offset_data, member.size)
                elif ext == LABEL_EXT:
                    labels[key] = int(tar.extractfile(member).read())
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise DataError(
            f"shard {path} is damaged ({exc}); copy it again or run the same cnnfleet-prepare command "
            "again with --verify"
        ) from None
    keys = list(images)
    if len(keys) != shard.count or set(keys) != set(labels):
        raise DataError(
            f"shard {path} holds {len(keys)} images and {len(labels)} labels but index.json says "
            f"{shard.count} samples; run the same cnnfleet-prepare command again with "
            "--verify"
        )
    offsets, sizes = zip(*(images[k] for k in keys), strict=True)
    return ShardTable(path, np.array(offsets), np.array(sizes), np.array([labels[k] for k in keys]), keys)


class SplitReader:
    """Encoded image bytes and labels of one split, by sample position."""

    def __init__(self, shards: list[Shard], locate: Callable[[Shard], str], window: int = 0) -> None:
        """`window`: samples a batch may be drawn from (the shuffle window): its shards are kept open."""
        self.shards, self.locate = shards, locate
        mean_count = max(1, sum(s.count for s in shards) // max(1, len(shards)))
        self.open_files = min(256, max(OPEN_FILES, -(-window // mean_count) + 2))
        self.starts = np.cumsum([0] + [s.count for s in shards])
        self.tables: dict[int, ShardTable] = {}
        self.files: OrderedDict[int, object] = OrderedDict()

    def __getstate__(self) -> dict:  # worker processes open their own files
        return {**self.__dict__, "tables": {}, "files": OrderedDict()}

    def _table(self, number: int) -> ShardTable:
        if number not in self.tables:
            self.tables[number] = read_table(self.locate(self.shards[number]), self.shards[number])
        return self.tables[number]

    def _file(self, number: int) -> object:
        if number in self.files:
            self.files.move_to_end(number)
        else:
            if len(self.files) >= self.open_files:
                self.files.popitem(last=False)[1].close()
            self.files[number] = open(self._table(number).path, "rb")  # noqa: SIM115 (kept open, closed on eviction)
        return self.files[number]

    def read(self, positions: np.ndarray) -> tuple[list[bytes], list[int], list[str]]:
        """(encoded images, labels, '<shard file>:<key>' names) of these samples, in the order given;
        the reads go shard by shard, in file order."""
        numbers = np.searchsorted(self.starts, positions, side="right") - 1
        data: list[bytes] = [b""] * len(positions)
        labels, names = [0] * len(positions), [""] * len(positions)
        for i in np.lexsort((positions, numbers)):
            number = int(numbers[i])
            table, sample = self._table(number), int(positions[i] - self.starts[number])
            handle = self._file(number)
            handle.seek(int(table.offsets[sample]))
            data[i] = handle.read(int(table.sizes[sample]))
            labels[i], names[i] = int(table.labels[sample]), f"{table.path}:{table.keys[sample]}"
        return data, labels, names
