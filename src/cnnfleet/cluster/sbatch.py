"""The sbatch script: one srun task per device, requeue on SIGUSR1, every line explained.

Rendered from the `cluster` group and the training overrides; slurm/*.sbatch in the repository
are rendered examples (tests keep them in sync), meant to be read and edited by hand.
"""

import shlex
from dataclasses import dataclass
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
# the run folder keeps a copy of this script (job.sbatch)
export CNNFLEET_SUBMISSION=$script
# srun starts the tasks; Lightning reads SLURM_PROCID/SLURM_LOCALID/SLURM_NODELIST for the ranks.
# --kill-on-bad-exit=1: one failed task ends the whole job instead of leaving the others waiting.
srun --kill-on-bad-exit=1 $command
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
    return (f"# cores per task{how}: each task's intra-op threads and decode workers stay within them\n"
            f"#SBATCH --cpus-per-task={cpus_per_task}\n")  # fmt: skip


def render(cluster: DictConfig, layout: JobLayout, train_command: list[str], workdir: str, root: str,
           task: str, output: str, token: str, script: str, cpus_per_task: int | None = None) -> str:  # fmt: skip
    """The sbatch script text; `cpus_per_task` as checked against the partition (resources.py)."""
    cpus = _cpus_lines(cpus_per_task if cpus_per_task is not None else cluster.cpus_per_task,
                       derived=cluster.cpus_per_task is None)  # fmt: skip
    resources = _sbatch_lines([
        ("gpus-per-node", layout.gpus_per_node), ("mem", cluster.mem), ("partition", cluster.partition),
        ("account", cluster.account), ("qos", cluster.qos), ("constraint", cluster.constraint),
    ])  # fmt: skip
    extra = "".join(f"#SBATCH {line}\n" for line in cluster.extra_sbatch)
    setup = "".join(f"{line}\n" for line in cluster.setup)
    requeue = "# a requeued job keeps its id: same run folder, it resumes from its checkpoint\n#SBATCH --requeue\n"
    return TEMPLATE.substitute(
        job_name=cluster.job_name, nodes=layout.nodes, tasks=layout.tasks_per_node, cpus=cpus,
        resources=resources, time=cluster.time, signal=cluster.signal_seconds,
        requeue=requeue if cluster.requeue else "#SBATCH --no-requeue\n", output=output, extra=extra, setup=setup,
        workdir=shlex.quote(workdir), root=shlex.quote(root), task=task, command=shlex.join(train_command),
        token=token, script=shlex.quote(script),
    )  # fmt: skip
