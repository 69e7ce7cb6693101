"""Which process is this, and who started it? The one reader of launcher environment variables.

Read before any process group exists. Order follows the launchers: torchrun sets RANK; SLURM sets
SLURM_PROCID (srun tasks); processes started by Lightning (or by hand, Lightning's environment)
set NODE_RANK and LOCAL_RANK. Everything else in cnnfleet receives these facts (run/plan.py).
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_ENV = "CNNFLEET_RUN_TOKEN"  # set by cnnfleet-submit's script: one identity per submission
SUBMISSION_ENV = "CNNFLEET_SUBMISSION"  # the sbatch script cnnfleet-submit wrote, copied into the run folder
REQUEUE_ENV = "CNNFLEET_REQUEUE"  # "0" when cluster.requeue=false: SIGUSR1 saves and stops, nothing is requeued
RUN_DIR_ENV = "CNNFLEET_RUN_DIR"  # the run a follow-up job continues (sbatch --export from the job it follows)
TRIAL_ENV = "CNNFLEET_TRIAL"  # an Optuna trial's study, number and pruner (JSON), set by the sweep driver
SWEEP_DIR_ENV = "CNNFLEET_SWEEP_DIR"  # set for a sweep trial's own process tree: its W&B group
CPUS_ENV = "CNNFLEET_CPUS"  # cores this process tree may use (a local sweep's share per trial slot)
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


# ---------------------------------------------------------------- rendezvous and CPU share

PORT_BASE, PORT_SPAN = 10000, 20000  # below Linux's ephemeral range (32768-60999): outgoing sockets never hold them


def slurm_port(job_id: str) -> int:
    """MASTER_PORT for a SLURM job: 10000 + id mod 20000, so ids up to 19,999 apart never collide on a
    node (Lightning's 15000 + the id's last 4 digits gives jobs 1234 and 11234 the same port)."""
    return PORT_BASE + int(re.sub(r"\D", "", job_id) or 0) % PORT_SPAN


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list: 'n[3-5,9],m1' -> 'n3' (what `scontrol show hostnames` prints first)."""
    match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodelist.strip())
    if match is None:
        return "127.0.0.1"
    return match.group(1) + (match.group(2) or "")


def slurm_rendezvous(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """MASTER_ADDR/MASTER_PORT of a SLURM task, computed from its own allocation, or None outside SLURM.
    Values exported in the submitting shell reach the job (sbatch exports the environment) and
    Lightning would prefer them to the allocation, so they are replaced, never trusted."""
    env = _env(env)
    if slurm_task_id(env) is None:
        return None
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    return {"MASTER_ADDR": first_node(nodes), "MASTER_PORT": str(slurm_port(env["SLURM_JOB_ID"]))}


def pin_slurm_rendezvous() -> dict[str, str] | None:
    """Write this job's rendezvous into os.environ (every task computes the same); the inherited values
    it replaced, for the log."""
    wanted = slurm_rendezvous()
    if wanted is None:
        return None
    replaced = {k: os.environ[k] for k in wanted if k in os.environ and os.environ[k] != wanted[k]}
    os.environ.update(wanted)
    return replaced


def cpus_per_process(local_processes: int, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The cores one process of this node may use, and where that number comes from: SLURM's
    --cpus-per-task for a SLURM task, else the cores this process may run on, shared by the node's
    processes (torchrun, Lightning's launcher, or one process)."""
    env = _env(env)
    if slurm_task_id(env) is not None and (env.get("SLURM_CPUS_PER_TASK") or "").isdigit():
        return max(1, int(env["SLURM_CPUS_PER_TASK"])), "SLURM_CPUS_PER_TASK"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if (env.get(CPUS_ENV) or "").isdigit() and int(env[CPUS_ENV]) > 0:  # a sweep slot's share of this host
        cores = min(cores, int(env[CPUS_ENV]))
    share = max(1, cores // max(1, local_processes))
    return share, f"{cores} cores / {local_processes} process{'es' if local_processes > 1 else ''} per node"


def intra_op_threads(local_processes: int, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """torch's intra-op threads for this process: OMP_NUM_THREADS when set (the user's choice, or
    torchrun's), else its CPU share, so N processes of a node never run N x all-cores threads."""
    env = _env(env)
    given = env.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given), "OMP_NUM_THREADS"
    return cpus_per_process(local_processes, env)


def requeue_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False when the job was submitted with cluster.requeue=false."""
    return _env(env).get(REQUEUE_ENV, "1") != "0"


def continued_run_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The run folder a follow-up job continues (set by the job it follows), else None."""
    return _env(env).get(RUN_DIR_ENV) or None


def sweep_trial(env: Mapping[str, str] | None = None) -> dict | None:
    """The Optuna trial this run is (storage, study, trial id and number, pruner), or None."""
    import json

    text = _env(env).get(TRIAL_ENV)
    return json.loads(text) if text else None


def in_multirun() -> bool:
    """This process runs trials of a Hydra multirun (the sweep driver or an in-process trial)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def current_sweep_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The sweep folder this process trains for, or None outside a sweep."""
    if in_multirun():
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().sweep.dir)
    return _env(env).get(SWEEP_DIR_ENV) or None
