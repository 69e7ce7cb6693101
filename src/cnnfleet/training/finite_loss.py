"""Stop training at the first non-finite loss, before any checkpoint can hold the bad weights.

Each step records, on the device and without a host sync, the first step whose loss was NaN or
inf. Every `check_every_n_steps` optimizer steps the ranks agree (one all-reduce, queued like any
other kernel) on the earliest bad step, and that answer is read on the host one step later
(training/lagged.py): no step waits for the device. Before each validation, at each epoch end and
before each checkpoint save the check is immediate, and raising in `on_save_checkpoint` aborts the
save before the file is written, so no checkpoint ever holds non-finite weights.
"""

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from cnnfleet.errors import CnnfleetError
from cnnfleet.training.lagged import LaggedRead

NONE = 2**62  # "no bad step yet"; the earliest bad step wins the MIN all-reduce


class NonFiniteLoss(CnnfleetError):
    """The training loss became NaN or inf."""

    exit_code = 1  # the run failed (its input was valid)


class StopOnNonFiniteLoss(L.Callback):
    def __init__(self, check_every_n_steps: int = 1) -> None:
        if check_every_n_steps < 1:
            raise ValueError("check_every_n_steps must be >= 1")
        self.every = check_every_n_steps
        self._first_bad: torch.Tensor | None = None
        self._value: torch.Tensor | None = None
        self._lagged = LaggedRead()  # the last exchange's answer, read one step later
        self._exchanged_at = -1  # global step of the last exchange (once per optimizer step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if self._first_bad is None:
            self._first_bad = torch.full((), NONE, dtype=torch.long, device=loss.device)
            self._value = torch.zeros((), dtype=loss.dtype, device=loss.device)
        # global_step has already counted this batch's optimizer step: the bad step is global_step
        step = trainer.global_step
        keep = torch.isfinite(loss) | (self._first_bad != NONE)  # a few kernels, no host read
        self._first_bad = torch.where(keep, self._first_bad, step)
        self._value = torch.where(keep, self._value, loss)
        if step % self.every == 0 and step != self._exchanged_at:
            self._exchanged_at = step
            self._raise_if_bad(trainer, pl_module, self._lagged.take())
            self._lagged.start(self._agreed())

    def _agreed(self) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self._first_bad  # never changed in place: each step makes a new tensor
        first_bad = self._first_bad.clone()
        dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)  # one collective (no barrier: every rank is here)
        return first_bad

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Immediate (a host sync): at phase ends and checkpoint saves, never inside a step."""
        if self._first_bad is None:
            return
        self._raise_if_bad(trainer, pl_module, self._lagged.take())
        self._raise_if_bad(trainer, pl_module, (int(self._agreed()), None))

    def _raise_if_bad(self, trainer: L.Trainer, pl_module: L.LightningModule, read: tuple | None) -> None:
        if read is None:
            return
        first = read[0]  # the earliest bad step, lagged or immediate
        if first == NONE:
            return
        kind = "nan" if torch.isnan(self._value).item() else "inf"
        raise NonFiniteLoss(
            f"training loss became {kind} at optimizer step {first} (epoch {trainer.current_epoch}); "
            f"likely causes: learning rate too high (optimizer.lr={_lr(pl_module)}), fp16 overflow "
            "(use device.precision=bf16-mixed or 32-true), or exploding gradients (trainer.gradient_clip_val=1.0); "
            "the checkpoints written before it are kept"
        )


def _lr(pl_module: L.LightningModule) -> Any:
    optimizer = getattr(pl_module, "hparams", {}).get("optimizer", {})
    return optimizer.get("lr", "?") if isinstance(optimizer, Mapping) else "?"
