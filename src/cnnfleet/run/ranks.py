"""Which process is this? Read from the launcher's environment, before any process group exists.

Order follows the launchers: torchrun sets RANK; SLURM sets SLURM_PROCID (srun tasks); processes
started by Lightning (or by hand, Lightning's environment) set NODE_RANK and LOCAL_RANK.
"""

import os
from collections.abc import Mapping


def global_rank(env: Mapping[str, str] | None = None, devices_per_node: int = 1) -> int:
    env = os.environ if env is None else env
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and "SLURM_JOB_ID" in env:
        return int(env["SLURM_PROCID"])
    return int(env.get("NODE_RANK", 0)) * devices_per_node + int(env.get("LOCAL_RANK", 0))


LIGHTNING_IGNORED_SLURM_JOB_NAMES = ("bash", "interactive")  # Lightning treats these as interactive shells


def slurm_task_id(env: Mapping[str, str] | None = None) -> str | None:
    """The job id when this process is a task of a SLURM job step that Lightning will manage.

    Array tasks get `<array job>_<task>`. None in the batch shell itself (no SLURM_STEP_ID), in
    interactive allocations (job named bash/interactive) and outside SLURM.
    """
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env or "SLURM_STEP_ID" not in env:
        return None
    if env.get("SLURM_JOB_NAME") in LIGHTNING_IGNORED_SLURM_JOB_NAMES:
        return None
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def torchrun_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """torchrun's --rdzv-id (TORCHELASTIC_RUN_ID) when this process was started by torchrun."""
    env = os.environ if env is None else env
    return env.get("TORCHELASTIC_RUN_ID")
