"""Which samples each rank reads, in which order: pure index arithmetic on the shards' sample counts.

A sample is named by its position in the split (shard by shard, in the index's order). The plan
never touches a file, so it is the same on every rank and after every restart:

- training, epoch e: the shards in a seeded order (seed + e), their samples concatenated and cut to
  whole global batches (the last partial one is dropped, other samples each epoch); rank r takes the
  r-th contiguous 1/N of that sequence, so each rank reads its own run of shards (at most the one
  shard at each boundary is shared, each rank reading its own part) and the samples of an epoch
  are the same for 1 and N ranks; inside its part a rank shuffles each window of
  `shuffle_window` consecutive samples (a full permutation there: a window spans several shards,
  which cnnfleet-prepare filled with a shuffled mix of classes);
- evaluation: every sample exactly once, in order, rank r reading its contiguous 1/N, in as many
  batches as every other rank (DDP's collectives never wait on a rank that ran out of batches).

Batch j of a rank is fully determined by (seed, epoch, rank, j): a resumed epoch drops the batches
already trained and goes on with batch k, whichever worker process reads it (reader.py).
"""

import math

import numpy as np

from cnnfleet.data.sharding import per_device_batch, steps_per_epoch


def epoch_sequence(counts: list[int], seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Every sample position of the split in this epoch's shard order."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    order = np.arange(len(counts))
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(counts))
    return np.concatenate([np.arange(starts[s], starts[s] + counts[s], dtype=np.int64) for s in order])


def train_plan(
    counts: list[int], seed: int, epoch: int, world: int, rank: int, global_batch: int, shuffle_window: int
) -> np.ndarray:
    """(steps, global_batch / world) positions: this rank's training batches of the epoch."""
    batch = per_device_batch(global_batch, world)
    steps = steps_per_epoch(sum(counts), global_batch)
    sequence = epoch_sequence(counts, seed, epoch, shuffle=True)[: steps * global_batch]
    mine = sequence[rank * steps * batch : (rank + 1) * steps * batch].copy()
    rng = np.random.default_rng([seed, epoch, rank, 1])
    for start in range(0, len(mine), shuffle_window):
        window = mine[start : start + shuffle_window]
        window[:] = rng.permutation(window)
    return mine.reshape(steps, batch)


def eval_plan(counts: list[int], world: int, rank: int, batch: int) -> list[np.ndarray]:
    """This rank's evaluation batches: its contiguous share, in the same number of batches on every rank."""
    total = sum(counts)
    mine = np.arange(rank * total // world, (rank + 1) * total // world, dtype=np.int64)
    num_batches = max(1, math.ceil(math.ceil(total / world) / batch))
    return [chunk for chunk in np.array_split(mine, num_batches) if len(chunk)]


def worker_batches(num_batches: int, skip: int, workers: int, worker: int) -> range:
    """The batch numbers worker `worker` of `workers` produces when an epoch starts at batch `skip`.

    A DataLoader takes batches from its workers in turn (worker 0, 1, ...), so worker w produces
    batches skip + w, skip + w + workers, ...: the loader yields skip, skip + 1, ... in order,
    whatever the number of workers (it decides only who reads which batch, never what is in it)."""
    return range(skip + worker, num_batches, workers)
