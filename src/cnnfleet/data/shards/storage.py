"""Where a prepared folder's files are read from: a local (or shared) folder as it is."""

from collections.abc import Callable
from pathlib import Path

from cnnfleet.data.shards.format import Shard, ShardIndex


def open_prepared(root: str, cache_dir: str | None) -> tuple[ShardIndex, Callable[[Shard], str]]:
    """The index and a function giving each shard's local path."""
    index = ShardIndex.read(root)
    return index, lambda shard: str(Path(root) / shard.path)
