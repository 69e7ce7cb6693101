"""Throughput: images/s (global and per device), step time, the share of time spent waiting for
data, and peak GPU memory; logged every `log_every_n_steps` and summarised for the run.

Epochs are timed on the host clock, synchronised with the device at their ends. Logging
intervals are timed with CUDA events on GPUs (wall clock on CPU): an interval closed at step t is
read and logged at step t+1, when its end event has passed, so no step waits for the device
(training/lagged.py says why that matters). The wait for data is the host's gap between one
batch's end and the next batch's start (Lightning fetches the batch there).
"""

import time
from typing import Any

import lightning as L
import torch

from cnnfleet.training.flops import peak_flops
from cnnfleet.training.log_rows import log_rows


def _sync(pl_module: L.LightningModule) -> float:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)  # at epoch boundaries: count finished work only
    return time.perf_counter()


def _mark(device: torch.device) -> "float | torch.cuda.Event":
    """A point on the device's timeline: a recorded CUDA event, or the host clock on CPU."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _seconds(start: "float | torch.cuda.Event", end: "float | torch.cuda.Event") -> float:
    if isinstance(end, float):
        return end - start
    end.synchronize()  # recorded a step ago: passed, or nearly (not a stream synchronisation)
    return start.elapsed_time(end) / 1000


class ThroughputMonitor(L.Callback):
    def __init__(self, flops_per_image: float | None = None) -> None:
        # MFU: FLOPs of one training image (training/flops.py) against the devices' peak
        self.flops_per_image = flops_per_image
        self._peak: tuple[float, str] | None = None
        self._world = 1
        self.train_seconds = 0.0  # training epochs only, validation excluded
        self.data_wait_seconds = 0.0
        self.images = 0  # all ranks together
        self._epoch_started: float | None = None
        self._batch_ended: float | None = None
        self._interval = {"start": 0.0, "images": 0, "wait": 0.0, "steps": 0}
        self._closed: dict | None = None  # the interval closed at the last step, logged at the next
        # per epoch: training seconds and images of that epoch, val/acc after it (time-to-accuracy)
        self.epochs: list[dict] = []
        self._epoch_images = 0
        self._epoch_seconds = 0.0

    # ---------------------------------------------------------------- epoch-level timing
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch (measured: the first
        # interval then began at perf_counter's origin and reported ~78 minutes per step)
        self._peak, self._world = peak_flops(pl_module.device, str(trainer.precision)), trainer.world_size
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_images, self._epoch_seconds = 0, 0.0
        self._epoch_started = self._batch_ended = _sync(pl_module)
        self._interval = {"start": _mark(pl_module.device), "images": 0, "wait": 0.0, "steps": 0}

    def _stop(self, pl_module: L.LightningModule) -> None:
        self._log_closed(pl_module.trainer)
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
            self._interval["start"] = _mark(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)
        acc = trainer.callback_metrics.get("val/acc")  # this epoch's validation ran before this hook
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "train_seconds": self._epoch_seconds,
                "images": self._epoch_images,
                "train_seconds_total": self.train_seconds,
                "val_acc": float(acc) if acc is not None else None,
            }
        )

    # ---------------------------------------------------------------- per-step accounting
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._batch_ended is not None:
            wait = now - self._batch_ended
            self.data_wait_seconds += wait
            self._interval["wait"] += wait

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        images = int(batch[0].shape[0]) * trainer.world_size
        self.images += images
        self._epoch_images += images
        self._interval["images"] += images
        self._interval["steps"] += 1
        self._log_closed(trainer)  # the interval closed at the previous step: its end has passed
        if self._interval["steps"] >= trainer.log_every_n_steps:
            end = _mark(pl_module.device)
            self._closed = {**self._interval, "end": end, "step": trainer.global_step}
            if pl_module.device.type == "cuda":
                self._closed["peak_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
            self._interval = {"start": end, "images": 0, "wait": 0.0, "steps": 0}
        self._batch_ended = time.perf_counter()

    def _log_closed(self, trainer: L.Trainer) -> None:
        closed, self._closed = self._closed, None
        if closed is None:
            return
        seconds = max(_seconds(closed["start"], closed["end"]), 1e-9)
        metrics = {
            "perf/images_per_sec": closed["images"] / seconds,
            "perf/images_per_sec_per_device": closed["images"] / seconds / trainer.world_size,
            "perf/step_ms": 1000 * seconds / closed["steps"],
            "perf/data_wait_frac": min(closed["wait"] / seconds, 1.0),
        }
        if "peak_mem_gb" in closed:
            metrics["perf/peak_mem_gb"] = closed["peak_mem_gb"]
        if self.flops_per_image:
            per_device = closed["images"] / seconds / trainer.world_size * self.flops_per_image
            metrics["perf/tflops_per_device"] = per_device / 1e12
            if self._peak:
                metrics["perf/mfu"] = per_device / self._peak[0]
        # Lightning's convention: the k-th optimizer step's rows carry step k - 1 (train/loss, the LR
        # monitor), so a resume from global_step k drops exactly the rows at step >= k (run/attempt.py)
        log_rows(trainer, metrics, step=closed["step"] - 1)

    # ---------------------------------------------------------------- run summary
    def summary(self, device: torch.device) -> dict:
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        steady = self.epochs[1:]  # the first epoch pays for warm-up (allocator, cudnn autotune, compile)
        steady_seconds = sum(e["train_seconds"] for e in steady)
        steady_rate = sum(e["images"] for e in steady) / steady_seconds if steady_seconds else None
        rate = steady_rate or (self.images / self.train_seconds if self.train_seconds > 0 else None)
        achieved = rate * self.flops_per_image / self._world if rate and self.flops_per_image else None
        return {
            "flops_per_image": self.flops_per_image,
            "tflops_per_device": achieved / 1e12 if achieved else None,
            "mfu": achieved / self._peak[0] if achieved and self._peak else None,
            "mfu_peak": self._peak[1] if self._peak else None,
            "train_seconds": self.train_seconds,
            "images_per_second": self.images / self.train_seconds if self.train_seconds > 0 else None,
            "steady_images_per_second": sum(e["images"] for e in steady) / steady_seconds if steady_seconds else None,
            "epoch_log": self.epochs,
            "data_wait_fraction": self.data_wait_seconds / self.train_seconds if self.train_seconds > 0 else None,
            "peak_gpu_memory_gb": peak,
        }
