"""No host read of a tensor inside a steady-state training step (issue: GPU speed).

On a GPU every `.item()`, `bool(t)`, `int(t)` or `.tolist()` of a device tensor makes the host wait
for the device, and the next step is queued only after it. On CPU the same calls are the cheap
witness: this test counts them, with the production callbacks, loggers and logging cadence, in the
window from one training batch's start to the next's, for the batches inside each epoch (epoch
boundaries, validation and checkpoints may read the host). Reads through training/lagged.py are the
sanctioned way (a value started a step earlier) and are not counted. tests/test_gpu.py asserts the
same on a GPU with torch.cuda.set_sync_debug_mode("error").
"""

import traceback
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch

from cnnfleet.bench.harness import compose_train
from cnnfleet.run.record import plain_config
from cnnfleet.schema import register_configs
from cnnfleet.tasks.train import training_callbacks
from cnnfleet.training import lagged
from cnnfleet.training.builders import build_classifier, build_datamodule, build_loggers, build_trainer
from cnnfleet.training.device import plan_devices

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__")


class HostReadSpy(L.Callback):
    """Watches the steps of each epoch but its first and last two batches; records every host read."""

    def __init__(self) -> None:
        self.watching = False
        self.exempt = 0
        self.steps_watched = 0
        self.reads: list[str] = []
        self.optimizers: list = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.watching = 1 <= batch_idx <= trainer.num_training_batches - 3
        self.steps_watched += self.watching

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watching = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watching = False

    def record(self, name: str, tensor: torch.Tensor) -> None:
        if self.watching and not self.exempt and not self._optimizer_step_counter(tensor):
            frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename][-4:]
            self.reads.append(f"Tensor.{name} at " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.optimizers = trainer.optimizers

    def _optimizer_step_counter(self, tensor: torch.Tensor) -> bool:
        """torch's optimizers keep state['step'] on the host (unless capturable or fused): reading it
        is no device read on a GPU either."""
        return any(tensor is state.get("step") for opt in self.optimizers for state in opt.state.values())

    @contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch):
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def spy(tensor, *args, _name=name, _original=original, **kwargs):
                self.record(_name, tensor)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, spy)
        take = lagged.LaggedRead.take

        def exempt_take(reader):
            self.exempt += 1
            try:
                return take(reader)
            finally:
                self.exempt -= 1

        monkeypatch.setattr(lagged.LaggedRead, "take", exempt_take)
        yield self


def fit_watched(tmp_path: Path, overrides: list[str], spy: L.Callback) -> dict:
    """A two-epoch digits run with every production callback and a CSV logger; the spy runs first."""
    register_configs()
    cfg = compose_train(["logger=csv", "trainer.max_epochs=2", "test=false", "trainer.log_every_n_steps=4",
                         "callbacks.last_checkpoint.every_n_steps=50", *overrides], str(tmp_path))  # fmt: skip
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    module.run_config = plain_config(cfg)
    loggers = build_loggers(cfg.logger)
    _, callbacks = training_callbacks(cfg, module, {}, tmp_path, bool(loggers))
    trainer = build_trainer(cfg.trainer, plan_devices(cfg.device), [spy, *callbacks], loggers, str(tmp_path))
    trainer.fit(module, datamodule=datamodule)
    return cfg


@pytest.mark.parametrize("overrides", [[], ["trainer.accumulate_grad_batches=2", "trainer.ema_decay=0.99"]],
                         ids=["default", "accumulate+ema"])  # fmt: skip
def test_no_host_reads_inside_steady_state_training_steps(tmp_path: Path, monkeypatch, overrides) -> None:
    spy = HostReadSpy()
    with spy.patched(monkeypatch):
        fit_watched(tmp_path, ["device=cpu", *overrides], spy)
    assert spy.steps_watched >= 25, spy.steps_watched  # 2 epochs of 19 batches, 16 watched each
    assert not spy.reads, f"{len(spy.reads)} host reads inside training steps:\n" + "\n".join(spy.reads[:20])
    # the loss still reaches the logger, at Lightning's step convention (k-th step logs at k - 1)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [r.split(",") for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    assert [int(r[header.index("step")]) for r in logged][:3] == [3, 7, 11]  # log_every_n_steps=4


class SyncDebugWindow(HostReadSpy):
    """On a GPU: torch.cuda.set_sync_debug_mode("error") in the same windows: any stream or device
    synchronisation (.item(), blocking copies, torch.cuda.synchronize) raises inside the step."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        torch.cuda.set_sync_debug_mode("error" if self.watching else "default")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        torch.cuda.set_sync_debug_mode("default")

    on_validation_start = on_train_epoch_end

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        torch.cuda.set_sync_debug_mode("default")  # Lightning's teardown copies to the host


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("overrides", [[], ["trainer.accumulate_grad_batches=2", "trainer.ema_decay=0.99"]],
                         ids=["default", "accumulate+ema"])  # fmt: skip
def test_no_device_synchronisation_inside_steady_state_gpu_steps(tmp_path: Path, overrides) -> None:
    spy = SyncDebugWindow()
    try:
        fit_watched(tmp_path, ["device=gpu", *overrides], spy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert spy.steps_watched >= 25, spy.steps_watched
