"""Stopping on a signal without losing work, and without deadlocking DDP.

SIGTERM (any run: Ctrl-C's polite cousin, `kill`, Kubernetes, SLURM at the time limit) and, in
SLURM tasks, SIGUSR1 (sent --signal seconds before the limit) only set a flag. After every
training batch the ranks all-reduce the flags (one small tensor), so all of them act at the same
step boundary: they save a checkpoint together and stop.

- SIGTERM: checkpoints/last.ckpt, then a message and exit code 143 (rank 0; other ranks exit 0
  so Lightning's process observer does not kill rank 0 mid-message). `ckpt_path=last` resumes at
  that very step with the same data order and random state (see data/resumable.py and the
  RNG state in module.py).
- SIGUSR1 under SLURM: hpc_ckpt_<N>.ckpt, `scontrol requeue`, exit 0; the requeued job lands in
  the same run folder (slurm-<job id>) and resumes from it (run/resume.py).

Why not Lightning's handlers: its SIGUSR1 handler saves inside the signal handler, and its
SIGTERM handler broadcasts inside it. Python runs a handler whenever the receiving rank's main
thread gets to it, so under DDP one rank can enter a collective while another sits in a gradient
all-reduce: both wait until the collective timeout (measured here: a 2-node gloo job hung 600 s,
then died without requeueing).
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
REQUEUE, STOP = 1, 2  # flag bits


class Preempted(BaseException):
    """Raised on every rank after the hpc checkpoint is saved and the job is requeued."""


class Stopped(BaseException):
    """Raised on every rank after SIGTERM's checkpoint is saved."""

    def __init__(self, path: str, step: int) -> None:
        super().__init__(path)
        self.path, self.step = path, step


def next_hpc_path(run_dir: str) -> Path:
    """hpc_ckpt_<N+1>.ckpt after the highest existing N (Lightning's naming, so its tools agree)."""
    numbers = [
        int(m.group(1)) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if (m := re.match(r"hpc_ckpt_(\d+)", p.stem))
    ]
    return Path(run_dir) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


class GracefulStop(L.Callback):
    def __init__(self, slurm_job_id: str | None = None, requeue_signal: int = signal.SIGUSR1) -> None:
        self.job_id = slurm_job_id
        self.requeue_signal = requeue_signal
        self.flags = 0

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self.flags |= REQUEUE  # acted on at the next step boundary, on every rank at once

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.flags |= STOP

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (in Trainer._run): ours replace them
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.job_id is not None:
            signal.signal(self.requeue_signal, self._on_requeue_signal)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        bits = torch.tensor([bool(self.flags & REQUEUE), bool(self.flags & STOP)], dtype=torch.int32,
                            device=pl_module.device)  # fmt: skip
        if trainer.world_size > 1:
            torch.distributed.all_reduce(bits, op=torch.distributed.ReduceOp.MAX)  # every rank agrees
        requeue, stop = bits.tolist()  # host sync: two ints per step
        value = REQUEUE * requeue + STOP * stop
        if not value:
            return
        if value & REQUEUE and self.job_id is not None:
            path = next_hpc_path(trainer.default_root_dir)
            trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes (atomically); barrier after
            if trainer.is_global_zero:
                log.info("preempted at step %d: saved %s; requeueing SLURM job %s", trainer.global_step, path,
                         self.job_id)  # fmt: skip
                subprocess.run(["scontrol", "requeue", self.job_id], check=False)
            raise Preempted(str(path))
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path)
        raise Stopped(str(path), trainer.global_step)


def graceful_stop(env: dict[str, str] | None = None) -> GracefulStop:
    """The callback for every run; SLURM tasks also get SIGUSR1 requeueing (Lightning's is off)."""
    return GracefulStop(slurm_task_id(os.environ if env is None else env))
