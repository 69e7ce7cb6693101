"""Validate at the step where trainer.max_steps ends the fit, also in the middle of an epoch.

Lightning validates at epoch ends (or every val_check_interval) and stops at max_steps without a
last validation: a run of `trainer.max_steps=50` on 100-step epochs ended with no val/ metrics, no
best.ckpt (ModelCheckpoint warned that its monitored key was never logged) and tested whatever the
weights were. Lightning's epoch loop does validate when `trainer.should_stop` is set and the run
may stop (training_epoch_loop.py, _should_check_val_fx), as early stopping does; this callback sets
it on the batch that completes the last optimizer step. Every rank reaches the same step, so every
rank asks for the same validation.
"""

from typing import Any

import lightning as L


class ValidateAtMaxSteps(L.Callback):
    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 <= trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
