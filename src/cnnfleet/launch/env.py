"""Which process is this, and who started it? The one reader of launcher environment variables.

Read before any process group exists. Order follows the launchers: torchrun sets RANK; SLURM sets
SLURM_PROCID (srun tasks); processes started by Lightning (or by hand, Lightning's environment)
set NODE_RANK and LOCAL_RANK. Everything else in cnnfleet receives these facts (launch/plan.py).
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_ENV = "CNNFLEET_RUN_TOKEN"  # set by cnnfleet-submit's script: one identity per submission
SUBMISSION_ENV = "CNNFLEET_SUBMISSION"  # the sbatch script cnnfleet-submit wrote, copied into the run folder
LIGHTNING_IGNORED_SLURM_JOB_NAMES = ("bash", "interactive")  # Lightning treats these as interactive shells
SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def global_rank(env: Mapping[str, str] | None = None, devices_per_node: int = 1) -> int:
    env = _env(env)
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and "SLURM_JOB_ID" in env:
        return int(env["SLURM_PROCID"])
    return int(env.get("NODE_RANK", 0)) * devices_per_node + int(env.get("LOCAL_RANK", 0))


def slurm_task_id(env: Mapping[str, str] | None = None) -> str | None:
    """The job id when this process is a task of a SLURM job step that Lightning will manage.

    Array tasks get `<array job>_<task>`. None in the batch shell itself (no SLURM_STEP_ID), in
    interactive allocations (job named bash/interactive) and outside SLURM.
    """
    env = _env(env)
    if "SLURM_JOB_ID" not in env or "SLURM_STEP_ID" not in env:
        return None
    if env.get("SLURM_JOB_NAME") in LIGHTNING_IGNORED_SLURM_JOB_NAMES:
        return None
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def torchrun_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """torchrun's --rdzv-id (TORCHELASTIC_RUN_ID) when this process was started by torchrun."""
    return _env(env).get("TORCHELASTIC_RUN_ID")


def lightning_launched_child(env: Mapping[str, str] | None = None) -> bool:
    """A rank > 0 that Lightning's subprocess launcher started (not torchrun's, not SLURM's)."""
    env = _env(env)
    if "TORCHELASTIC_RUN_ID" in env or "SLURM_PROCID" in env:
        return False
    return int(env.get("LOCAL_RANK", "0")) > 0


@dataclass(frozen=True)
class Launcher:
    """Who started this process and under which identity (the run folder's owner)."""

    kind: str  # local | slurm | torchrun
    job_id: str | None  # SLURM job id (array: <job>_<task>) or torchrun's --rdzv-id
    restarts: int  # SLURM_RESTART_COUNT (a requeued job) or TORCHELASTIC_RESTART_COUNT
    token: str | None  # CNNFLEET_RUN_TOKEN: unique per submission, kept across requeues

    @property
    def folder_name(self) -> str | None:
        """The run folder every rank of this job agrees on, or None for an ordinary local run."""
        if self.job_id is None:
            return None
        return f"{self.kind}-{SAFE_ID.sub('_', self.job_id)}"


def launcher(env: Mapping[str, str] | None = None) -> Launcher:
    env = _env(env)
    token = env.get(TOKEN_ENV) or None
    if (job := slurm_task_id(env)) is not None:
        return Launcher("slurm", job, int(env.get("SLURM_RESTART_COUNT") or 0), token)
    if (run_id := torchrun_run_id(env)) is not None:
        return Launcher("torchrun", run_id, int(env.get("TORCHELASTIC_RESTART_COUNT") or 0), token)
    return Launcher("local", None, 0, token)


def rendezvous_address(env: Mapping[str, str] | None = None) -> str:
    """MASTER_ADDR:MASTER_PORT as the ranks see it, for messages."""
    env = _env(env)
    return f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"


def submission_script(env: Mapping[str, str] | None = None) -> str | None:
    """The sbatch script this job was submitted with (cnnfleet-submit), if any."""
    return _env(env).get(SUBMISSION_ENV) or None
