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
from torch.utils._python_dispatch import TorchDispatchMode

from cnnfleet.bench.harness import compose_train
from cnnfleet.config.schema import register_configs
from cnnfleet.run.record import plain_config
from cnnfleet.tasks.train import training_callbacks
from cnnfleet.training import lagged
from cnnfleet.training.builders import build_classifier, build_datamodule, build_loggers, build_trainer
from cnnfleet.training.device import plan_devices

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__")


aten = torch.ops.aten
# ops whose CUDA kernels make the host wait: results sized by data, or values copied to the host
SYNCING_OPS = {
    aten.nonzero,
    aten.masked_select,
    aten._local_scalar_dense,
    aten.is_nonzero,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.repeat_interleave,
    aten.equal,
}
MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class SyncingOps(TorchDispatchMode):
    """Sees every aten op, the ones called from C++ too (`x[mask] = y` is aten.index_put_ with a
    boolean index: on a GPU it counts the mask on the host)."""

    def __init__(self, spy: "HostReadSpy") -> None:
        super().__init__()
        self.spy = spy

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        packet = func.overloadpacket
        if packet in SYNCING_OPS and not (packet is aten._local_scalar_dense and self.spy.is_step_counter(args[0])):
            self.spy.record(f"aten.{packet.__name__}", None)
        elif packet in MASK_INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None
        ):
            self.spy.record(f"aten.{packet.__name__} with a boolean mask", None)
        return func(*args, **(kwargs or {}))


class HostReadSpy(L.Callback):
    """Watches the steps of each epoch but its first and last two batches (and the run's first optimizer
    step); records every host read and every host value put on the device."""

    def __init__(self) -> None:
        self.watching = False
        self.exempt = 0
        self.steps_watched = 0
        self.reads: list[str] = []
        self.optimizers: list = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # steady state: after the first optimizer step (it creates the optimizer's state)
        self.watching = trainer.global_step >= 1 and 1 <= batch_idx <= trainer.num_training_batches - 3
        self.steps_watched += self.watching

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watching = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watching = False

    def record(self, name: str, tensor: torch.Tensor | None) -> None:
        if self.watching and not self.exempt and not (tensor is not None and self.is_step_counter(tensor)):
            stack = traceback.extract_stack()[:-2]
            frames = [f for f in stack if "/torch/" not in f.filename or "/optim/" in f.filename][-4:]
            self.reads.append(f"{name} at " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.optimizers = trainer.optimizers

    def is_step_counter(self, tensor: torch.Tensor) -> bool:
        """torch's optimizers keep state['step'] on the host (unless capturable or fused): reading it
        is no device read on a GPU either."""
        return any(tensor is state.get("step") for opt in self.optimizers for state in opt.state.values())

    @contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch):
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def spy(tensor, *args, _name=name, _original=original, **kwargs):
                self.record(f"Tensor.{_name}", tensor)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, spy)
        for name in ("tensor", "as_tensor"):  # a Python value put on the device: an H2D copy that syncs on GPUs
            make = getattr(torch, name)

            def spy_make(data, *args, _name=name, _make=make, **kwargs):
                if kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                    self.record(f"{_name}(<host value>, device=...)", None)
                return _make(data, *args, **kwargs)

            monkeypatch.setattr(torch, name, spy_make)
        take = lagged.LaggedRead.take

        def exempt_take(reader):
            self.exempt += 1
            try:
                return take(reader)
            finally:
                self.exempt -= 1

        monkeypatch.setattr(lagged.LaggedRead, "take", exempt_take)
        with SyncingOps(self):
            yield self


def fit_watched(tmp_path: Path, overrides: list[str], spy: L.Callback) -> dict:
    """A two-epoch digits run with every production callback and a CSV logger; the spy runs first."""
    register_configs()
    cfg = compose_train(
        [
            "logger=csv",
            "trainer.max_epochs=2",
            "test=false",
            "trainer.log_every_n_steps=4",
            "callbacks.last_checkpoint.every_n_steps=50",
            *overrides,
        ],
        str(tmp_path),
    )
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    module.run_config = plain_config(cfg)
    loggers = build_loggers(cfg.logger)
    _, _, callbacks = training_callbacks(cfg, module, {}, tmp_path, on_silent_rank=lambda *_: None)
    trainer = build_trainer(cfg.trainer, plan_devices(cfg.device), [spy, *callbacks], loggers, str(tmp_path))
    trainer.fit(module, datamodule=datamodule)
    return cfg


VARIANTS = [
    [],
    [
        "trainer.accumulate_grad_batches=2",
        "trainer.ema_decay=0.99",
        "data.crop_padding=2",
        "data.horizontal_flip=true",
        "optimizer=sgd",
    ],
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=["default", "accumulate+ema+augment+sgd"])
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
@pytest.mark.parametrize("overrides", VARIANTS, ids=["default", "accumulate+ema+augment+sgd"])
def test_no_device_synchronisation_inside_steady_state_gpu_steps(tmp_path: Path, overrides) -> None:
    spy = SyncDebugWindow()
    try:
        fit_watched(tmp_path, ["device=gpu", *overrides], spy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert spy.steps_watched >= 25, spy.steps_watched
