"""The processes a launcher started must be the processes the config asks for (SLURM, torchrun).

Part of launch/: the only package that reads launcher environment variables.
"""

import os
from collections.abc import Mapping

from cnnfleet.errors import ConfigError
from cnnfleet.launch.env import LIGHTNING_IGNORED_SLURM_JOB_NAMES


def _tasks_per_node(env: Mapping[str, str]) -> int:
    """SLURM_NTASKS_PER_NODE, else the first count of SLURM_TASKS_PER_NODE ("2(x3),1")."""
    value = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "1")
    return int(value.split(",")[0].split("(")[0])


def check_slurm(devices: int, num_nodes: int, env: Mapping[str, str]) -> None:
    """Inside a SLURM job: one srun task per device, as many nodes as device.num_nodes."""
    if "SLURM_JOB_ID" not in env or env.get("SLURM_JOB_NAME") in LIGHTNING_IGNORED_SLURM_JOB_NAMES:
        return
    ntasks = int(env.get("SLURM_NTASKS", "1"))
    if "SLURM_STEP_ID" not in env:
        if ntasks > 1:
            raise ConfigError(
                f"this SLURM job has {ntasks} tasks but cnnfleet-train runs in the batch shell; "
                "start it with `srun cnnfleet-train ...` (one task per device)"
            )
        return
    per_node, nodes = _tasks_per_node(env), int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    if per_node != devices:
        raise ConfigError(
            f"SLURM runs {per_node} task(s) per node but device.devices={devices}; one task per device: "
            f"set #SBATCH --ntasks-per-node={devices} or device.devices={per_node}"
        )
    if nodes != num_nodes:
        raise ConfigError(
            f"SLURM allocated {nodes} node(s) but device.num_nodes={num_nodes}; "
            f"set #SBATCH --nodes={num_nodes} or device.num_nodes={nodes}"
        )


def check_launcher(devices: int, num_nodes: int, env: Mapping[str, str] | None = None) -> None:
    """The processes a launcher (SLURM, torchrun) started must be the processes the config asks for."""
    env = os.environ if env is None else env
    check_slurm(devices, num_nodes, env)
    if "TORCHELASTIC_RUN_ID" not in env or "WORLD_SIZE" not in env:
        return
    started, per_node = int(env["WORLD_SIZE"]), int(env.get("LOCAL_WORLD_SIZE", devices))
    if started != devices * num_nodes or per_node != devices:
        raise ConfigError(
            f"torchrun started {started} processes ({per_node} per node) but the config asks for "
            f"device.devices={devices} x device.num_nodes={num_nodes}; set "
            f"device.devices=<--nproc-per-node> device.num_nodes=<--nnodes>"
        )
