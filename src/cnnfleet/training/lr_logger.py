"""The learning rate of each optimizer step, logged every `log_every_n_steps` steps.

Lightning's LearningRateMonitor also copies each value into `trainer.callback_metrics` as a tensor
on the training device, a host-to-device copy that synchronises the GPU on every logging step (seen
with torch.cuda.set_sync_debug_mode on an H100). The values are host floats; this logs them as such,
under the same keys (lr-<Optimizer>, lr-<Optimizer>/pg<N> for more parameter groups) and at the
same step (the LR used by optimizer step k is logged at step k - 1, Lightning's convention).
"""

import lightning as L

from cnnfleet.training.log_rows import log_rows


class LearningRateLogger(L.Callback):
    def __init__(self, log_momentum: bool = False) -> None:
        self.log_momentum = log_momentum

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if not trainer.loggers or batch_idx % trainer.accumulate_grad_batches:
            return  # one row per optimizer step: the first batch of its accumulation window
        step = trainer.global_step  # steps done; the next one is step + 1
        if (step + 1) % trainer.log_every_n_steps:
            return
        stats = {}
        for optimizer in trainer.optimizers:
            name = f"lr-{type(optimizer).__name__}"
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                key = name if len(groups) == 1 else f"{name}/pg{i + 1}"
                stats[key] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("betas", (group.get("momentum", 0.0),))[0]
                    stats[f"{key}-momentum"] = float(momentum)
        log_rows(trainer, stats, step=step)
