"""Progress, not only liveness: a rank that trains nothing for too long says where it waits.

The heartbeat (launch/heartbeat.py) finds a rank that stopped answering. A rank whose process lives
but makes no progress beats on: a DataLoader worker deadlocked at fork, a rank in a collective
that waits for a peer stuck in its data loader (seen: rank 1's worker hung at the first step,
rank 0 waited in DDP's buffer broadcast, for the 600 s collective timeout, without a word).

Every batch (trained, validated or tested) is progress. When none comes for
max(device.stall_after_s, STALL_STEPS x the recent step time), the rank logs one line naming
itself, the phase it waits in (which batch, the data loader or the step's collectives) and a
file with the stacks of all its threads (faulthandler), once per stall. It ends nothing: a slow
checkpoint write or a long first compilation is not a fault, and the collective timeout still
ends a real deadlock; a stop request meanwhile ends the process at its deadline (launch/signals.py).

Rank 0 also records each phase change (training, validation, test) in state.json.
"""

import faulthandler
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)
STALL_STEPS = 20  # recent step times without progress that make a stall (never less than stall_after_s)
CHECK_EVERY_S = 1.0


class ProgressWatch(L.Callback):
    def __init__(
        self, rank: int, stall_after_s: float, run_dir: Path, on_phase: Callable[[str, int], None] | None = None
    ) -> None:
        self.rank, self.stall_after_s, self.run_dir = rank, float(stall_after_s), Path(run_dir)
        self.on_phase = on_phase
        self.where = "start-up"
        self.last = time.monotonic()
        self.step_s: float | None = None  # the median training step of the last STALL_STEPS
        self._recent: deque[float] = deque(maxlen=STALL_STEPS)
        self.reported = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what the loop is doing

    def _progress(self, where: str) -> None:
        self.last, self.where, self.reported = time.monotonic(), where, False

    def _phase(self, trainer: L.Trainer, phase: str, where: str) -> None:
        self._progress(where)
        if self.on_phase is not None:
            self.on_phase(phase, trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()
        self._phase(trainer, "training", "training: waiting for the first batch (the data loader starts its workers)")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the last epoch's checkpoint: a wait from here on is the new epoch's, and is reported anew
        # (before this process's first step, its loader's workers are still starting: on_train_start's words)
        if self.step_s is not None:
            self._progress(f"training: waiting for batch 0 of epoch {trainer.current_epoch} from the data loader")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._progress(
            f"training batch {batch_idx} of epoch {trainer.current_epoch} (forward, backward, "
            "gradient all-reduce, optimizer)"
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._recent.append(time.monotonic() - self.last)
        self.step_s = statistics.median(self._recent)
        self._progress(
            f"training: waiting for batch {batch_idx + 1} of epoch {trainer.current_epoch} from the data loader"
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._phase(trainer, "validation", "validation: waiting for its first batch")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._progress("validation: waiting for the next batch or the metrics' all-reduce")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._phase(trainer, "training", "training: the end of a validation (checkpoints, loggers)")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()
        self._phase(trainer, "test", "test: waiting for its first batch")

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._progress("test: waiting for the next batch or the metrics' all-reduce")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._progress(f"writing a checkpoint at step {trainer.global_step}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.stop()

    # ------------------------------------------------------------------ the watch

    def limit_s(self) -> float:
        return max(self.stall_after_s, STALL_STEPS * self.step_s) if self.step_s else self.stall_after_s

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="cnnfleet-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            idle = time.monotonic() - self.last
            if idle >= self.limit_s() and not self.reported:
                self.reported = True
                self.report(idle)

    def report(self, idle: float) -> None:
        """One line naming the rank and where it waits; every thread's stack into the run folder."""
        path = self.run_dir / f"stacks-rank{self.rank}.txt"
        try:
            with open(path, "w") as handle:
                handle.write(f"rank {self.rank}, no progress for {idle:.0f} s, waiting in {self.where}\n\n")
                handle.flush()
                faulthandler.dump_traceback(file=handle, all_threads=True)
            where_stacks = f"the stacks of its threads are in {path}"
        except OSError as exc:
            where_stacks = f"its stacks could not be written ({exc})"
        recent = f"; its recent step took {self.step_s:.2f} s" if self.step_s else ""
        log.warning(
            "rank %d has made no progress for %.0f s%s: it waits in %s; %s",
            self.rank,
            idle,
            recent,
            self.where,
            where_stacks,
        )
