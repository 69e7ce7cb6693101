"""Training sharding: N ranks x B/N see the one-process batches of B at every step, the epoch's end included."""

import pytest
import torch
from torch.utils.data import TensorDataset

from cnnfleet.data.on_device import DeviceBatches
from cnnfleet.data.sharding import TrainingSampler, sharded_loader
from cnnfleet.errors import ConfigError

N_TRAIN, GLOBAL_BATCH = 1258, 64  # digits' training split at the default batch: 19 whole batches, 42 images left


def rank_batches(world: int, rank: int, epoch: int = 0) -> list[list[int]]:
    sampler = TrainingSampler(range(N_TRAIN), num_replicas=world, rank=rank, seed=5, global_batch=GLOBAL_BATCH)
    sampler.set_epoch(epoch)
    indices, per_rank = list(sampler), GLOBAL_BATCH // world
    return [indices[i : i + per_rank] for i in range(0, len(indices), per_rank)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_together_see_the_one_process_batch_at_every_step(world: int) -> None:
    for epoch in (0, 1):
        single = rank_batches(1, 0, epoch)
        ranks = [rank_batches(world, rank, epoch) for rank in range(world)]
        assert len(single) == 19 and all(len(batches) == 19 for batches in ranks)
        for step, expected in enumerate(single):
            union = [i for batches in ranks for i in batches[step]]
            assert len(expected) == GLOBAL_BATCH and sorted(union) == sorted(expected), f"epoch {epoch} step {step}"
        seen = [i for batches in ranks for batch in batches for i in batch]
        assert len(seen) == len(set(seen)) == 19 * GLOBAL_BATCH  # no padded duplicates


def test_the_dropped_remainder_changes_with_the_epoch() -> None:
    seen = [{i for batch in rank_batches(1, 0, epoch) for i in batch} for epoch in range(3)]
    assert len(set.union(*seen)) > len(seen[0])  # every image still gets trained on


@pytest.mark.parametrize("world", [1, 2, 4])
def test_loaders_have_exactly_the_whole_global_batches(world: int) -> None:
    labels = torch.arange(N_TRAIN)
    for rank in range(world):
        loader = sharded_loader(TensorDataset(labels), True, world, rank, GLOBAL_BATCH, seed=5)
        sampler = TrainingSampler(range(N_TRAIN), num_replicas=world, rank=rank, seed=5, global_batch=GLOBAL_BATCH)
        on_device = DeviceBatches(labels.float().view(-1, 1), labels, sampler=sampler, batch_size=GLOBAL_BATCH // world)
        assert len(loader) == len(on_device) == 19 == len(list(loader)) == len(list(on_device))
        assert [b[0].tolist() for b in loader] == [y.tolist() for _, y in on_device] == rank_batches(world, rank)


def test_a_resumed_epoch_skips_the_consumed_batches_once() -> None:
    loader = sharded_loader(TensorDataset(torch.arange(N_TRAIN)), True, 2, 1, GLOBAL_BATCH, seed=5)
    full = [b[0].tolist() for b in loader]
    loader.skip_fn = lambda: 7  # what completed_batches says after a resume at step 7 of the epoch
    assert [b[0].tolist() for b in loader] == full[7:]
    sampler = loader.sampler
    sampler.skip = 3
    assert list(sampler)[:2] == full[0][3:5] and len(list(sampler)) == len(sampler)  # the skip is used once


def test_a_global_batch_larger_than_the_training_split_is_a_config_error() -> None:
    expected = (
        "data.batch_size=2048 (global) is larger than the 1258 training images: an epoch would have no step; "
        "use data.batch_size <= 1258"
    )
    with pytest.raises(ConfigError) as error:
        sharded_loader(TensorDataset(torch.arange(N_TRAIN)), True, 2, 0, 2048, seed=0)
    assert str(error.value) == expected
    assert len(TrainingSampler(range(N_TRAIN), num_replicas=1, rank=0, global_batch=N_TRAIN)) == N_TRAIN
    with pytest.raises(ConfigError, match="not divisible by the world size 4"):
        TrainingSampler(range(N_TRAIN), num_replicas=4, rank=0, global_batch=66)
