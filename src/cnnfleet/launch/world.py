"""The one division of the global batch among the processes of a run (the sharding rule 1 x B == N x B/N)."""

from cnnfleet.errors import ConfigError


def per_device_batch(global_batch: int, world_size: int) -> int:
    """Global batch / world size; ConfigError when it does not divide."""
    if global_batch % world_size:
        raise ConfigError(
            f"data.batch_size={global_batch} (global) is not divisible by the world size {world_size}; "
            f"use a multiple of {world_size}"
        )
    return global_batch // world_size
