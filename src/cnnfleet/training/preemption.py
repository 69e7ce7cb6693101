"""SLURM preemption that cannot deadlock DDP: SIGUSR1 is acted on at a step boundary all ranks share.

Lightning's own handler saves the hpc checkpoint inside the signal handler. Python runs a handler
whenever the receiving rank's main thread gets to it, so under DDP one rank can enter
save_checkpoint's barrier while another sits in a gradient all-reduce: both wait until the
collective timeout (measured here: a 2-node gloo job hung 600 s, then died without requeueing).
Here the handler only sets a flag; after every training batch the ranks all-reduce the flag (one
int), and if any rank was signalled, all of them save the hpc checkpoint together, rank 0 runs
`scontrol requeue`, and the process stops. The requeued job lands in the same run folder
(slurm-<job id>) and resumes from that checkpoint (run/resume.py).
"""

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnfleet.run.ranks import slurm_task_id

log = logging.getLogger(__name__)


class Preempted(BaseException):
    """Raised on every rank after the hpc checkpoint is saved and the job is requeued."""


def next_hpc_path(run_dir: str) -> Path:
    """hpc_ckpt_<N+1>.ckpt after the highest existing N (Lightning's naming, so its tools agree)."""
    numbers = [
        int(m.group(1)) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if (m := re.match(r"hpc_ckpt_(\d+)", p.stem))
    ]
    return Path(run_dir) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


class SlurmPreemption(L.Callback):
    def __init__(self, job_id: str, requeue_signal: int = signal.SIGUSR1) -> None:
        self.job_id = job_id
        self.requeue_signal = requeue_signal
        self.requested = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True  # acted on at the next step boundary, on every rank at once

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signal.signal(self.requeue_signal, self._on_signal)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        flag = torch.tensor([int(self.requested)], device=pl_module.device)
        if trainer.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # sync point: all ranks agree
        if not flag.item():  # .item(): host sync, one int per step
            return
        path = next_hpc_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes (atomically); barrier after
        if trainer.is_global_zero:
            log.info("preempted at step %d: saved %s; requeueing SLURM job %s", trainer.global_step, path, self.job_id)
            subprocess.run(["scontrol", "requeue", self.job_id], check=False)
        raise Preempted(str(path))


def slurm_preemption(env: dict[str, str] | None = None) -> SlurmPreemption | None:
    """The callback for SLURM tasks (Lightning's own SIGUSR1 handling is then switched off)."""
    job_id = slurm_task_id(os.environ if env is None else env)
    return SlurmPreemption(job_id) if job_id is not None else None
