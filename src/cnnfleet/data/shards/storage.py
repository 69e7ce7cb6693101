"""Where a prepared folder's files are read from: a local (or shared) folder as it is."""

from collections.abc import Callable
from pathlib import Path

from cnnfleet.data.shards.format import Shard, ShardIndex


def open_prepared(root: str, cache_dir: str | None) -> ShardIndex:
    """The prepared folder's index (torch-free: the launcher reads the class count from it)."""
    return ShardIndex.read(root)


def shard_locator(root: str, cache_dir: str | None) -> Callable[[Shard], str]:
    """A function giving each shard's local path (picklable: DataLoader workers call it)."""
    return LocalShards(root)


class LocalShards:
    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, shard: Shard) -> str:
        return str(Path(self.root) / shard.path)
