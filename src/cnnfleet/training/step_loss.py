"""train/loss every `log_every_n_steps` optimizer steps, read one step late so no step waits for the
device (training/lagged.py). Lightning's own on-step logging converts the tensor with `.item()` at
each logging step, a host synchronisation; this callback replaces it for the loss.

The row carries Lightning's step convention (the k-th optimizer step logs at step k - 1), so a
resume cuts metrics.csv back exactly (run/attempt.py).
"""

from collections.abc import Mapping
from typing import Any

import lightning as L

from cnnfleet.training.lagged import LaggedRead
from cnnfleet.training.log_rows import log_rows
from cnnfleet.training.preemption import ends_optimizer_step


class TrainLossLogger(L.Callback):
    def __init__(self) -> None:
        self._lagged = LaggedRead()
        self.latest: float | None = None  # the last loss read (the progress bar shows it)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None or not ends_optimizer_step(trainer, batch_idx):
            return
        self._publish(trainer)
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self._lagged.start(loss.detach().float(), trainer.global_step)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._publish(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._publish(trainer)

    def _publish(self, trainer: L.Trainer) -> None:
        read = self._lagged.take()
        if read is None:
            return
        value, step = read
        self.latest = value
        log_rows(trainer, {"train/loss": self.latest}, step=step - 1)
