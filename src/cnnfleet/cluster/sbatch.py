"""The sbatch script: one srun task per device, requeue on SIGUSR1, every line explained.

Rendered from the `cluster` group and the training overrides; slurm/*.sbatch in the repository
are rendered examples (tests keep them in sync), meant to be read and edited by hand.
"""

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from omegaconf import DictConfig

from cnnfleet.errors import ConfigError

TEMPLATE = Template("""\
#!/bin/bash
# Rendered by cnnfleet-submit from the run's config (conf/cluster/*). Safe to edit by hand.
#SBATCH --job-name=$job_name
# nodes = device.num_nodes
#SBATCH --nodes=$nodes
# ONE task per device (= device.devices); cnnfleet-train stops with a message when they differ
#SBATCH --ntasks-per-node=$tasks
$cpus${resources}#SBATCH --time=$time
# $signal s before the time limit SLURM sends SIGUSR1 to the tasks: at the next training step
# all ranks save hpc_ckpt_N.ckpt in the run folder together, then the job requeues itself
#SBATCH --signal=SIGUSR1@$signal
${requeue}# a requeued attempt appends to the same log
#SBATCH --open-mode=append
#SBATCH --output=$output
${extra}
set -euo pipefail
${setup}cd $workdir
# logs/ lives here; the run folder is logs/$task/runs/slurm-<job id>, the same for every task
export CNNFLEET_ROOT=$root
# this submission's identity: a requeued job (same script) continues its run folder; a job that
# gets a reused id never takes over another run's folder (it trains in slurm-<job id>-<token>)
export CNNFLEET_RUN_TOKEN=$token
# the run folder keeps a copy of this script (job.sbatch); the job leaves its handoff files beside it
export CNNFLEET_SUBMISSION=$script
# cluster.requeue: 1 = SIGUSR1 requeues the job; 0 = it saves a checkpoint and stops
export CNNFLEET_REQUEUE=$requeue_flag
# srun starts the tasks; Lightning reads SLURM_PROCID/SLURM_LOCALID/SLURM_NODELIST for the ranks, and each
# task computes MASTER_ADDR (the first node) and MASTER_PORT (10000 + job id mod 20000) from this
# allocation: values exported in the submitting shell are ignored.
# --kill-on-bad-exit=1: one failed task ends the whole job instead of leaving the others waiting.
${container_note}srun --kill-on-bad-exit=1 $srun_container$command && status=0 || status=$$?
# an end the tasks could not record (a rank killed, out of memory, a lost node) goes into the run's state
$job_end "$$status" || true
# where scontrol requeue is unavailable inside the job (a container without SLURM's tools), rank 0
# asks for a follow-up job instead: it continues the same run folder once this job has ended
handoff="$$(dirname "$$CNNFLEET_SUBMISSION")/job-$$SLURM_JOB_ID"
if [ -f "$$handoff.follow-up" ]; then
  rm -f "$$handoff.follow-up"
  run_dir="$$(cat "$$handoff.run")"
  sbatch --dependency=afterany:$$SLURM_JOB_ID --export=ALL,CNNFLEET_RUN_DIR="$$run_dir" "$$CNNFLEET_SUBMISSION"
fi
exit "$$status"
""")


@dataclass(frozen=True)
class JobLayout:
    """Processes of the job as both SLURM and Lightning see them."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int

    @property
    def device_overrides(self) -> list[str]:
        """device.* overrides that make cnnfleet-train agree with the allocation."""
        accelerator = "gpu" if self.gpus_per_node > 0 else "cpu"
        strategy = "ddp" if self.nodes * self.tasks_per_node > 1 else "auto"
        return [
            f"device.accelerator={accelerator}",
            f"device.devices={self.tasks_per_node}",
            f"device.num_nodes={self.nodes}",
            f"device.strategy={strategy}",
        ]


def job_layout(cluster: DictConfig, user_overrides: list[str]) -> JobLayout:
    """The layout from the cluster group; ConfigError when the user's device.* contradicts it."""
    if cluster.nodes < 1 or cluster.tasks_per_node < 1:
        raise ConfigError("cluster.nodes and cluster.tasks_per_node must be >= 1")
    if cluster.gpus_per_node and cluster.tasks_per_node != cluster.gpus_per_node:
        raise ConfigError(
            f"cluster.tasks_per_node={cluster.tasks_per_node} but cluster.gpus_per_node={cluster.gpus_per_node}: "
            "DDP runs one task per GPU, make them equal"
        )
    layout = JobLayout(int(cluster.nodes), int(cluster.tasks_per_node), int(cluster.gpus_per_node))
    wanted = dict(item.split("=", 1) for item in layout.device_overrides)
    for item in user_overrides:
        key, _, value = item.partition("=")
        if key in ("device.devices", "device.num_nodes") and value != wanted[key]:
            source = "cluster.tasks_per_node" if key == "device.devices" else "cluster.nodes"
            raise ConfigError(f"{key}={value} contradicts {source}={wanted[key]}; set {source} instead")
    return layout


def _sbatch_lines(pairs: list[tuple[str, object]]) -> str:
    return "".join(f"#SBATCH --{flag}={value}\n" for flag, value in pairs if value not in (None, "", 0))


def _cpus_lines(cpus_per_task: int | None, derived: bool) -> str:
    if cpus_per_task is None:
        return "# cores per task: cluster.cpus_per_task=null is derived from the partition when submitted\n"
    how = " (derived from the partition: its smallest fitting node's CPUs / tasks)" if derived else ""
    return (
        f"# cores per task{how}: each task's intra-op threads and decode workers stay within them\n"
        f"#SBATCH --cpus-per-task={cpus_per_task}\n"
    )


@dataclass(frozen=True)
class Container:
    """How the tasks run: on the host (the submitting Python's cnnfleet-train), or in a container
    image through pyxis (srun --container-image) or Apptainer (apptainer exec), where cnnfleet-train
    and python3 are the image's. The working folder and CNNFLEET_ROOT are mounted at the same paths."""

    srun_flags: str  # srun's own flags (pyxis)
    prefix: list[str]  # before the command (apptainer exec ...)
    train: str  # the cnnfleet-train to run
    job_end: str  # the batch shell's epilogue command
    note: str  # comment lines above srun


def container(cluster: DictConfig, workdir: str, root: str, host_python: str) -> Container:
    host_train = str(Path(host_python).parent / "cnnfleet-train")
    host_end = f"{shlex.quote(host_python)} -m cnnfleet.cluster.job_end"
    if not cluster.container:
        return Container("", [], host_train, host_end, "")
    mounts = list(dict.fromkeys([*cluster.container_mounts, workdir, root]))
    image = cluster.container
    if cluster.container_runtime == "pyxis":
        binds = ",".join(m if ":" in m else f"{m}:{m}" for m in mounts)
        flags = (
            f"--container-image={shlex.quote(image)} --container-mounts={shlex.quote(binds)} "
            f"--container-workdir={shlex.quote(workdir)} "
        )
        end = f"srun --nodes=1 --ntasks=1 {flags}python3 -m cnnfleet.cluster.job_end"
        note = (
            "# pyxis: every task runs in the image (cluster.container), the folders above mounted at the same paths\n"
        )
        return Container(flags, [], "cnnfleet-train", end, note)
    gpu = ["--nv"] if cluster.gpus_per_node else []
    prefix = ["apptainer", "exec", *gpu, "--bind", ",".join(mounts), "--pwd", workdir, image]
    end = f"srun --nodes=1 --ntasks=1 {shlex.join(prefix)} python3 -m cnnfleet.cluster.job_end"
    note = "# apptainer: every task runs in the image (cluster.container); --nv exposes the GPUs\n"
    return Container("", prefix, "cnnfleet-train", end, note)


def render(
    cluster: DictConfig,
    layout: JobLayout,
    train_args: list[str],
    workdir: str,
    root: str,
    task: str,
    output: str,
    token: str,
    script: str,
    cpus_per_task: int | None = None,
    python: str = sys.executable,
) -> str:
    """The sbatch script text; `cpus_per_task` as checked against the partition (resources.py)."""
    resources = _sbatch_lines(
        [
            ("gpus-per-node", layout.gpus_per_node),
            ("mem", cluster.mem),
            ("partition", cluster.partition),
            ("account", cluster.account),
            ("qos", cluster.qos),
            ("constraint", cluster.constraint),
        ]
    )
    extra = "".join(f"#SBATCH {line}\n" for line in cluster.extra_sbatch)
    setup = "".join(f"{line}\n" for line in cluster.setup)
    requeue = "# a requeued job keeps its id: same run folder, it resumes from its checkpoint\n#SBATCH --requeue\n"
    cpus = _cpus_lines(
        cpus_per_task if cpus_per_task is not None else cluster.cpus_per_task, derived=cluster.cpus_per_task is None
    )
    box = container(cluster, workdir, root, python)
    return TEMPLATE.substitute(
        job_name=cluster.job_name,
        nodes=layout.nodes,
        tasks=layout.tasks_per_node,
        cpus=cpus,
        resources=resources,
        time=cluster.time,
        signal=cluster.signal_seconds,
        requeue=requeue if cluster.requeue else "#SBATCH --no-requeue\n",
        output=output,
        extra=extra,
        setup=setup,
        workdir=shlex.quote(workdir),
        root=shlex.quote(root),
        task=task,
        command=shlex.join([*box.prefix, box.train, *train_args]),
        token=token,
        script=shlex.quote(script),
        requeue_flag=1 if cluster.requeue else 0,
        container_note=box.note,
        srun_container=box.srun_flags,
        job_end=box.job_end,
    )
