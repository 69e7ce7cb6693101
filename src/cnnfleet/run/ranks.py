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


def torchrun_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """torchrun's --rdzv-id (TORCHELASTIC_RUN_ID) when this process was started by torchrun."""
    env = os.environ if env is None else env
    return env.get("TORCHELASTIC_RUN_ID")
