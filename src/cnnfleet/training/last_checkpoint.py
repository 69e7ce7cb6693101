"""checkpoints/last.ckpt: the latest state, so a kill loses at most an epoch (or N steps, or M minutes).

Lightning 2.6's ModelCheckpoint writes `last` only in a validation where it also wrote a top-k
checkpoint (model_checkpoint.py, on_validation_end), so its last.ckpt lagged the run: a finished
400-step run had last at step 380, and a Ctrl-C in epoch 17 resumed from epoch 14. This callback
writes it at every epoch end (after validation, so best.ckpt and the loop state agree) and,
optionally, every N optimizer steps or M minutes; a stop request saves it too (preemption.py).
"""

import time
from pathlib import Path
from typing import Any

import lightning as L

from cnnfleet.errors import ConfigError
from cnnfleet.run.layout import LAST_CKPT
from cnnfleet.training.preemption import ends_optimizer_step, prune_hpc_checkpoints


class LastCheckpoint(L.Callback):
    def __init__(self, dirpath: str, every_n_steps: int | None = None, every_n_minutes: float | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"callbacks.last_checkpoint.every_n_steps={every_n_steps} must be >= 1 (null: off)")
        if every_n_minutes is not None and not every_n_minutes > 0:
            raise ConfigError(f"callbacks.last_checkpoint.every_n_minutes={every_n_minutes} must be > 0 (null: off)")
        self.path = Path(dirpath) / LAST_CKPT
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self._saved_at = time.monotonic()

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank takes part; rank 0 writes it atomically
        self._saved_at = time.monotonic()
        if trainer.is_global_zero:  # a newer complete checkpoint: a preemption's hpc checkpoints are obsolete
            prune_hpc_checkpoints(trainer.default_root_dir)

    def _minutes_due(self, trainer: L.Trainer) -> bool:
        """Rank 0's clock decides, so every rank saves at the same step (a collective)."""
        due = self.every_n_minutes is not None and time.monotonic() - self._saved_at >= 60 * self.every_n_minutes
        return bool(trainer.strategy.broadcast(due, src=0)) if trainer.world_size > 1 else due

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not ends_optimizer_step(trainer, batch_idx) or batch_idx + 1 == trainer.num_training_batches:
            return  # the epoch's end saves anyway
        step = trainer.global_step
        if (self.every_n_steps and step % self.every_n_steps == 0) or (
            self.every_n_minutes is not None and self._minutes_due(trainer)
        ):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)
