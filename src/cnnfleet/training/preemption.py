"""Acting on a stop request (launch/signals.py) without losing work and without deadlocking DDP.

Where the ranks act, all at once (one all-reduce of the flags, MAX, so every rank agrees):
- after a training batch that completed an optimizer step (never inside a gradient-accumulation
  window: a half-accumulated batch would be counted as done and skipped on resume). One process
  reads its own flags; under DDP the flags exchanged after step t are read after step t+1
  (training/lagged.py), so no step waits for the device and every rank stops at the same step;
- at the end of a validation run (a request during validation waits for its end, not for the
  next training batch);
- after each test batch (the test is abandoned; the resumed run tests again).

Then: SIGUSR1 under SLURM saves hpc_ckpt_<N>.ckpt (older ones are pruned), rank 0 runs `scontrol
requeue`, and the requeued job resumes from it in the same folder. Where scontrol is unavailable
inside the job (a container without SLURM's tools), rank 0 asks the batch shell for a follow-up
job instead (run/handoff.py), which continues the same folder under a new job id. With
cluster.requeue=false SIGUSR1 saves and stops. SIGTERM and SIGINT save checkpoints/last.ckpt.
Every rank raises `Stopped`; tasks/train.py records the status and exits (130/143/138, 0 for a requeue).

Lightning's own handlers are kept out (`keep_our_signal_handlers`): its SIGUSR1 handler saves inside
the handler and its SIGTERM handler broadcasts inside it, the deadlock pattern described in
launch/signals.py.
"""

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnfleet.launch import signals
from cnnfleet.launch.env import requeue_enabled, slurm_task_id
from cnnfleet.run.handoff import request_follow_up
from cnnfleet.run.layout import CHECKPOINTS_DIR, LAST_CKPT
from cnnfleet.run.smoke import smoke_run
from cnnfleet.training.lagged import LaggedRead

log = logging.getLogger(__name__)


class Stopped(BaseException):
    """Raised on every rank once a stop request is acted on; `path` is the checkpoint saved (or None);
    `requeued`: the job continues by itself (requeued, or a follow-up job requested; rank 0 knows)."""

    def __init__(self, request: int, path: str | None, step: int, phase: str, requeued: bool = False) -> None:
        super().__init__(path)
        self.request, self.path, self.step, self.phase, self.requeued = request, path, step, phase, requeued

    @property
    def signal_name(self) -> str:
        return signals.NAMES[self.request]


def next_hpc_path(run_dir: str) -> Path:
    """hpc_ckpt_<N+1>.ckpt after the highest existing N (Lightning's naming, so its tools agree)."""
    numbers = [
        int(m.group(1)) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if (m := re.match(r"hpc_ckpt_(\d+)", p.stem))
    ]
    return Path(run_dir) / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def prune_hpc_checkpoints(run_dir: str | Path, keep: Path | None = None) -> None:
    """Delete hpc_ckpt_*.ckpt but `keep`: called once a newer complete checkpoint exists (a newer
    hpc checkpoint, or checkpoints/last.ckpt saved after the resume), so preemptions leave no heap."""
    for path in Path(run_dir).glob("hpc_ckpt_*.ckpt"):
        if keep is None or path.resolve() != Path(keep).resolve():
            path.unlink(missing_ok=True)


def requeue_slurm_job(job_id: str | None) -> bool:
    """Rank 0 asks SLURM to requeue this job (it keeps its id, so it finds its run folder); False when it cannot."""
    if job_id is None:
        return False
    log.info("requeueing SLURM job %s", job_id)
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("scontrol requeue %s is unavailable here (%s)", job_id, exc)
        return False
    if done.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job_id, done.stderr.strip() or done.returncode)
    return done.returncode == 0


def continue_job(job_id: str | None) -> bool:
    """Rank 0 after SIGUSR1: requeue the job, else ask its batch shell for a follow-up job; True when the
    run will continue by itself. Off with cluster.requeue=false."""
    if job_id is None or not requeue_enabled():
        return False
    if requeue_slurm_job(job_id):
        return True
    if request_follow_up(job_id):
        log.warning("the batch script submits a follow-up job that continues this run (sbatch --dependency)")
        return True
    log.warning("job %s cannot be requeued: resubmit it with cnnfleet-submit hydra.run.dir=<this run folder>", job_id)
    return False


def keep_our_signal_handlers(trainer: L.Trainer) -> None:
    """Lightning re-registers its SIGTERM/SIGUSR1 handlers at every fit/test; ours stay instead."""
    trainer._signal_connector.register_signal_handlers = lambda: None  # private API, Lightning 2.6


def _exchange(device: torch.device) -> torch.Tensor:
    """Every rank's flags, combined (MAX per bit) on the device: a collective, queued, not read."""
    flags = signals.pending()
    bits = torch.tensor([(flags >> i) & 1 for i in range(3)], dtype=torch.int32)
    bits = bits.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else bits
    torch.distributed.all_reduce(bits, op=torch.distributed.ReduceOp.MAX)  # every rank agrees
    return bits


def _request(bits: list[int]) -> int:
    return signals.strongest(sum(int(bit) << i for i, bit in enumerate(bits)))


def agreed_request(device: torch.device, world_size: int) -> int:
    """The strongest stop request of any rank, now (a collective: every rank must call it at the same point)."""
    if world_size == 1:
        return signals.strongest(signals.pending())
    return _request(_exchange(device).tolist())  # host sync: 3 ints, at phase ends only


def stop_if_requested(phase: str, step: int, is_rank_zero: bool, trainer: L.Trainer | None = None) -> None:
    """Between phases (start-up, before the test): act on a stop request. Ranks that have met agree
    through one all-reduce; before they meet (start-up of a DDP run) nothing happens here: a rank that
    left alone would leave the others waiting in the rendezvous until device.timeout_s (measured: a
    Ctrl-C in DDP start-up hung), so the first collective check in training acts instead."""
    if trainer is not None and trainer.world_size > 1:
        if not torch.distributed.is_initialized():
            return
        request = agreed_request(trainer.strategy.root_device, trainer.world_size)
    else:
        request = signals.strongest(signals.pending())
    if not request:
        return
    requeued = request == signals.REQUEUE and is_rank_zero and continue_job(slurm_task_id())
    raise Stopped(request, None, step, phase, requeued)


def ends_optimizer_step(trainer: L.Trainer, batch_idx: int) -> bool:
    """True after the batch that completes a gradient-accumulation window (an optimizer step)."""
    accumulate = trainer.accumulate_grad_batches
    return (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == trainer.num_training_batches


class GracefulStop(L.Callback):
    def __init__(self, slurm_job_id: str | None = None) -> None:
        self.job_id = slurm_job_id
        self._lagged = LaggedRead()  # DDP: the flags exchanged after the previous optimizer step

    def _step_request(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """After an optimizer step: one process reads its flags; DDP ranks read the exchange of the
        previous step (identical on every rank) and queue this step's."""
        if trainer.world_size == 1:
            return signals.strongest(signals.pending())
        previous = self._lagged.take()
        self._lagged.start(_exchange(pl_module.device))
        return _request(previous[0]) if previous is not None else 0

    def _stop(self, trainer: L.Trainer, request: int, phase: str, save: bool) -> None:
        path = None
        save = save and not smoke_run(trainer)  # a smoke run's weights are no result
        hpc = request == signals.REQUEUE and self.job_id is not None and requeue_enabled()
        if save and hpc:
            path = next_hpc_path(trainer.default_root_dir)
        elif save:
            path = Path(trainer.default_root_dir) / CHECKPOINTS_DIR / LAST_CKPT
        if path is not None:
            trainer.save_checkpoint(path, weights_only=False)  # all ranks take part; rank 0 writes atomically
        requeued = False
        if trainer.is_global_zero:
            if hpc and path is not None:
                prune_hpc_checkpoints(trainer.default_root_dir, keep=path)
            requeued = request == signals.REQUEUE and continue_job(self.job_id)
        raise Stopped(request, str(path) if path else None, trainer.global_step, phase, requeued)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not ends_optimizer_step(trainer, batch_idx):
            return
        request = self._step_request(trainer, pl_module)
        if request and batch_idx + 1 < trainer.num_training_batches:
            self._stop(trainer, request, "training", save=True)
        # A request at an epoch's last batch waits for the end of its validation (or, without one, the next
        # step; the epoch's end writes last.ckpt meanwhile): Lightning 2.6 resumes a checkpoint saved here into
        # a new epoch without counting that epoch as started, so the NEXT mid-epoch checkpoint replayed its
        # epoch from batch 0 (measured: stops at steps 57 = 3 x 19, then 90; the third attempt trained
        # 14 batches twice and overran the one-cycle schedule). Flags only grow: the request is read again.

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._lagged.take()  # superseded: the flags only grow, and this exchange is newer
        request = agreed_request(pl_module.device, trainer.world_size)
        if request:
            self._stop(trainer, request, "validation", save=True)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        request = agreed_request(pl_module.device, trainer.world_size)
        if request:
            self._stop(trainer, request, "test", save=False)  # the weights are saved; the test runs again


def graceful_stop() -> GracefulStop:
    """The callback for every run; SLURM tasks requeue on SIGUSR1 (Lightning's handler is off)."""
    return GracefulStop(slurm_task_id())
