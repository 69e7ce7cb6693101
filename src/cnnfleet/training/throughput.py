"""Throughput: images/s (global and per device), step time, the share of time spent waiting for
data, and peak GPU memory; logged every `log_every_n_steps` and summarised for the run.

Timing is host wall-clock. The wait for data is the gap between one batch's end and the next
batch's start (Lightning fetches the batch there); on a GPU the host runs ahead of the device,
so the interval totals are synchronised once per logging interval, not per step.
"""

import time
from typing import Any

import lightning as L
import torch


def _sync(pl_module: L.LightningModule) -> float:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)  # once per interval: count finished work only
    return time.perf_counter()


class ThroughputMonitor(L.Callback):
    def __init__(self) -> None:
        self.train_seconds = 0.0  # training epochs only, validation excluded
        self.data_wait_seconds = 0.0
        self.images = 0  # all ranks together
        self._epoch_started: float | None = None
        self._batch_ended: float | None = None
        self._interval = {"start": 0.0, "images": 0, "wait": 0.0, "steps": 0}
        # per epoch: training seconds and images of that epoch, val/acc after it (time-to-accuracy)
        self.epochs: list[dict] = []
        self._epoch_images = 0
        self._epoch_seconds = 0.0

    # ---------------------------------------------------------------- epoch-level timing
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch (measured: the first
        # interval then began at perf_counter's origin and reported ~78 minutes per step)
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_images, self._epoch_seconds = 0, 0.0
        self._epoch_started = self._batch_ended = _sync(pl_module)
        self._interval = {"start": self._epoch_started, "images": 0, "wait": 0.0, "steps": 0}

    def _stop(self, pl_module: L.LightningModule) -> None:
        if self._epoch_started is not None:
            seconds = _sync(pl_module) - self._epoch_started
            self.train_seconds += seconds
            self._epoch_seconds += seconds
            self._epoch_started = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._epoch_started = self._batch_ended = _sync(pl_module)  # mid-epoch validation: training resumes
            self._interval["start"] = self._epoch_started

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)
        acc = trainer.callback_metrics.get("val/acc")  # this epoch's validation ran before this hook
        self.epochs.append({
            "epoch": trainer.current_epoch,
            "train_seconds": self._epoch_seconds,
            "images": self._epoch_images,
            "train_seconds_total": self.train_seconds,
            "val_acc": float(acc) if acc is not None else None,
        })  # fmt: skip

    # ---------------------------------------------------------------- per-step accounting
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._batch_ended is not None:
            wait = now - self._batch_ended
            self.data_wait_seconds += wait
            self._interval["wait"] += wait

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        images = int(batch[0].shape[0]) * trainer.world_size
        self.images += images
        self._epoch_images += images
        self._interval["images"] += images
        self._interval["steps"] += 1
        if self._interval["steps"] >= trainer.log_every_n_steps:
            self._log_interval(trainer, pl_module)
        self._batch_ended = time.perf_counter()

    def _log_interval(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = _sync(pl_module)
        seconds = max(now - self._interval["start"], 1e-9)
        metrics = {
            "perf/images_per_sec": self._interval["images"] / seconds,
            "perf/images_per_sec_per_device": self._interval["images"] / seconds / trainer.world_size,
            "perf/step_ms": 1000 * seconds / self._interval["steps"],
            "perf/data_wait_frac": self._interval["wait"] / seconds,
        }
        if pl_module.device.type == "cuda":
            metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        # Lightning's convention: the k-th optimizer step's rows carry step k - 1 (train/loss, the LR
        # monitor), so a resume from global_step k drops exactly the rows at step >= k (run/attempt.py)
        for logger in trainer.loggers:  # rank-zero-only inside each logger
            logger.log_metrics(metrics, step=trainer.global_step - 1)
        self._interval = {"start": now, "images": 0, "wait": 0.0, "steps": 0}

    # ---------------------------------------------------------------- run summary
    def summary(self, device: torch.device) -> dict:
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        steady = self.epochs[1:]  # the first epoch pays for warm-up (allocator, cudnn autotune, compile)
        steady_seconds = sum(e["train_seconds"] for e in steady)
        return {
            "train_seconds": self.train_seconds,
            "images_per_second": self.images / self.train_seconds if self.train_seconds > 0 else None,
            "steady_images_per_second": sum(e["images"] for e in steady) / steady_seconds if steady_seconds else None,
            "epoch_log": self.epochs,
            "data_wait_fraction": self.data_wait_seconds / self.train_seconds if self.train_seconds > 0 else None,
            "peak_gpu_memory_gb": peak,
        }
