"""Training throughput for the run summary: images/s over training batches, validation excluded."""

import time

import lightning as L
import torch


class FitTimer(L.Callback):
    """Counts images (all ranks) and wall time of training epochs; validation time is excluded."""

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.images = 0
        self._started: float | None = None

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # once per epoch: count finished work only
        return time.perf_counter()

    def _stop(self, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.train_seconds += self._now(pl_module) - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.images += int(batch[0].shape[0]) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._started = self._now(pl_module)  # mid-epoch validation: training resumes

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.train_seconds if self.train_seconds > 0 else None
