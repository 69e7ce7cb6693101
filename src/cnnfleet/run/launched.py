"""Hydra overrides that make every rank of one run share one run folder.

Lightning's own DDP launcher already re-launches local ranks with `hydra.run.dir=<rank 0's
folder> hydra.output_subdir=null`. Processes started by an outside launcher (SLURM's srun,
torchrun, or by hand on each node) each start their own Hydra app and would each make a
timestamped folder: here they agree on a folder keyed by the launcher's id (`slurm-<job id>`,
`torchrun-<rdzv id>`), so a requeued SLURM job finds its own checkpoints; ranks > 0 dump no
config and log to their own file.
"""

import re
from collections.abc import Mapping

from omegaconf import DictConfig

from cnnfleet.errors import ConfigError
from cnnfleet.overrides import override_value
from cnnfleet.run.ranks import global_rank, slurm_task_id, torchrun_run_id

SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def launched_rank_overrides(cfg: DictConfig, overrides: list[str], env: Mapping[str, str]) -> list[str]:
    """Overrides to append for this process; empty for an ordinary single-process run."""
    device = cfg.get("device")
    devices = device.devices if isinstance(device, DictConfig) and isinstance(device.devices, int) else 1
    rank = global_rank(env, devices_per_node=devices)
    run_id = torchrun_run_id(env)
    slurm_id = slurm_task_id(env)
    extra: list[str] = []
    if override_value(overrides, "hydra.run.dir") is None:
        if slurm_id is not None:
            name = "slurm-" + SAFE_ID.sub("_", slurm_id)
            extra.append(f"hydra.run.dir={cfg.paths.log_dir}/{cfg.task_name}/runs/{name}")
        elif run_id is not None:
            if run_id == "none" and int(env.get("WORLD_SIZE", "1")) > 1:
                raise ConfigError(
                    "torchrun without --rdzv-id: pass the same --rdzv-id=<run name> on every node "
                    "(or hydra.run.dir=<shared folder>) so all ranks write to one run folder"
                )
            name = "torchrun-" + SAFE_ID.sub("_", run_id)
            extra.append(f"hydra.run.dir={cfg.paths.log_dir}/{cfg.task_name}/runs/{name}")
        elif rank > 0:
            raise ConfigError(
                f"this process is rank {rank} (NODE_RANK/LOCAL_RANK set) but no hydra.run.dir was given; "
                "pass rank 0's run folder as hydra.run.dir=<folder>, or start the nodes with torchrun --rdzv-id"
            )
    if rank > 0:
        if override_value(overrides, "hydra.output_subdir") is None:
            extra.append("hydra.output_subdir=null")  # rank 0 alone dumps the config
        if override_value(overrides, "hydra.job.name") is None:
            extra.append(f"hydra.job.name={cfg.task_name}_rank{rank}")  # its own log file
    return extra
