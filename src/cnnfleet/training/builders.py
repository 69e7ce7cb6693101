"""One builder per concern: data, model, callbacks, loggers, trainer — each from its sub-config."""

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from cnnfleet.config.guard import building
from cnnfleet.data.in_memory import InMemoryDataModule
from cnnfleet.errors import ConfigError
from cnnfleet.models.freeze import freeze
from cnnfleet.models.init_from import init_from
from cnnfleet.run.smoke import smoke_run
from cnnfleet.training.checkpoint_io import AtomicCheckpointIO
from cnnfleet.training.device import DevicePlan
from cnnfleet.training.final_validation import ValidateAtMaxSteps
from cnnfleet.training.finite_loss import StopOnNonFiniteLoss
from cnnfleet.training.last_checkpoint import LastCheckpoint
from cnnfleet.training.module import Classifier
from cnnfleet.training.optim import resolve_optimizer
from cnnfleet.training.preemption import keep_our_signal_handlers
from cnnfleet.training.step_loss import TrainLossLogger

log = logging.getLogger(__name__)
MODEL_RUN_KEYS = ("init_from", "freeze")  # model keys cnnfleet applies to the built network (schema.ModelConfig)


def _instantiate(node: DictConfig, key: str) -> Any:
    with building(key, node.get("_target_")):
        return instantiate(node)


def build_datamodule(data_cfg: DictConfig, seed: int) -> InMemoryDataModule:
    """The data set; `seed` (the run's seed) drives the per-epoch shuffling."""
    with building("data", data_cfg.get("_target_")):
        return instantiate(data_cfg, shuffle_seed=seed)


def build_classifier(
    model_cfg: DictConfig, data_cfg: DictConfig, cfg: DictConfig, resuming: bool | None = None
) -> Classifier:
    """The network's stem and head follow the data set's channels and classes; then model.init_from's
    weights (not when the run resumes: the checkpoint's replace them) and model.freeze. `resuming`: the
    run plan's answer (a SLURM requeue resumes without a ckpt_path); None: whether ckpt_path is set."""
    if data_cfg.num_classes is None:  # cnnfleet's commands count an image folder's classes at launch
        raise ConfigError(
            "data.num_classes is not set: set data.num_classes=N (the commands read it from the "
            "data when it is unset: data.root/train's class folders, shards' index.json)"
        )
    model = OmegaConf.to_container(model_cfg, resolve=True)
    model.update(in_channels=data_cfg.channels, num_classes=data_cfg.num_classes)
    run_keys = {key: model.pop(key) for key in MODEL_RUN_KEYS if key in model}  # not constructor arguments
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler is not None else None
    with building("model", model_cfg.get("_target_")):
        module = Classifier(
            model=model,
            optimizer=resolve_optimizer(OmegaConf.to_container(cfg.optimizer, resolve=True), data_cfg.batch_size),
            scheduler=scheduler,
            num_classes=data_cfg.num_classes,
            label_smoothing=cfg.label_smoothing,
            channels_last=cfg.trainer.channels_last,
            ema_decay=cfg.trainer.ema_decay,
        )
    check_input_shape(module.net, data_cfg.channels, data_cfg.image_size, model_cfg)
    fine_tune(module, run_keys, model, resuming=cfg.ckpt_path is not None if resuming is None else resuming)
    return module


def fine_tune(module: Classifier, run_keys: dict, model: dict, resuming: bool) -> None:
    """model.init_from (into the network and its EMA copy), then model.freeze."""
    if run_keys.get("init_from") and resuming:
        log.info("model.init_from=%s not applied: the run resumes from a checkpoint", run_keys["init_from"])
    elif run_keys.get("init_from"):
        with building("model.init_from", run_keys["init_from"]):
            # a loaded head is matched to the data's classes by name in the module's setup
            module.loaded_head = init_from(module.net, run_keys["init_from"], model, model["in_channels"])
        if module.ema_net is not None:
            module.ema_net.load_state_dict(module.net.state_dict())
    if run_keys.get("freeze"):
        # frozen BatchNorm is in eval mode on purpose (models/freeze.py): Lightning's warning about it is noise
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        frozen = freeze(module.net, list(run_keys["freeze"]))
        log.info("model.freeze: %s parameters frozen under %s", f"{frozen:,}", ", ".join(run_keys["freeze"]))


def check_input_shape(net: torch.nn.Module, channels: int, size: int, model_cfg: DictConfig) -> None:
    """One forward pass of a blank image now, so a model that cannot take the data set's images
    (too small for its down-sampling, e.g. convnext on 8x8) fails with one line, not mid-training."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, size, size))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        name = model_cfg.get("name") or model_cfg.get("_target_")
        raise ConfigError(
            f"model {name} cannot take {channels}x{size}x{size} images ({first}); "
            "use a larger data.image_size or a model made for small images (simple_cnn, resnet_cifar, airbench)"
        ) from None
    finally:
        net.train(was_training)


def build_loggers(logger_cfg: DictConfig | None) -> list[L.pytorch.loggers.Logger]:
    if logger_cfg is None:
        return []
    return [_instantiate(node, f"logger.{name}") for name, node in logger_cfg.items() if node is not None]


def build_callbacks(callbacks_cfg: DictConfig | None) -> list[L.Callback]:
    if callbacks_cfg is None:
        return []
    return [_instantiate(node, f"callbacks.{name}") for name, node in callbacks_cfg.items() if node is not None]


MODULE_KEYS = ("channels_last", "compile", "compile_mode", "ema_decay")  # trainer keys that are not Lightning's
# lightning.Trainer's arguments that the trainer group does not pass through, and where each is set
# (tests/test_trainer_passthrough.py holds the trainer group to Trainer's signature with this table)
TRAINER_ARGS_ELSEWHERE = {
    "accelerator": "device.accelerator",
    "strategy": "device.strategy",
    "devices": "device.devices",
    "num_nodes": "device.num_nodes",
    "precision": "device.precision",
    "logger": "the logger group (logger=csv|tensorboard|wandb|none)",
    "callbacks": "the callbacks group (callbacks=[default,early_stopping,model_summary])",
    "plugins": "set by cnnfleet: atomic checkpoint writes and SLURM's environment",
    "default_root_dir": "paths.output_dir (the run folder)",
    "enable_checkpointing": "callbacks.model_checkpoint / callbacks.last_checkpoint (null to drop one)",
    "use_distributed_sampler": "set by cnnfleet: the data module shards per rank (data/sharding.py)",
    "barebones": "not offered: it refuses the loggers, callbacks and checkpoints every run writes",
    "model_registry": "not offered: a Lightning cloud model registry",
}
PROFILERS = {
    "simple": "lightning.pytorch.profilers.SimpleProfiler",
    "advanced": "lightning.pytorch.profilers.AdvancedProfiler",
    "pytorch": "lightning.pytorch.profilers.PyTorchProfiler",
}


def build_profiler(name: str | None, output_dir: str) -> Any:
    """trainer.profiler=simple|advanced|pytorch with its report written to <run>/profiler/ (Lightning
    would put a named profiler's file in the logger's folder, or print it only)."""
    if name is None:
        return None
    cls = get_class(PROFILERS[name])
    extra = {"export_to_chrome": True} if name == "pytorch" else {}
    return cls(dirpath=str(Path(output_dir) / "profiler"), filename=name, **extra)


def compile_network(module: Classifier, trainer_cfg: DictConfig) -> None:
    """torch.compile the network in place (state-dict keys unchanged, so checkpoints stay portable)."""
    if trainer_cfg.compile:
        module.net.compile(mode=trainer_cfg.compile_mode)


def cluster_plugins() -> list:
    """Under SLURM: Lightning's SLURM environment without its racy SIGUSR1 handler (see preemption.py)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


class LossProgressBar(RichProgressBar):
    """Rich's bar with the last train/loss read by TrainLossLogger (a host float: no device read)."""

    def __init__(self, loss_logger: TrainLossLogger) -> None:
        super().__init__()
        self.loss_logger = loss_logger

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if self.loss_logger.latest is not None:
            metrics["train/loss"] = f"{self.loss_logger.latest:.3f}"
        return metrics


def build_trainer(
    trainer_cfg: DictConfig, plan: DevicePlan, callbacks: list[L.Callback], loggers: list, output_dir: str
) -> L.Trainer:
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    for key in MODULE_KEYS:  # applied to the module (build_classifier, compile_network)
        kwargs.pop(key)
    loss_logger = TrainLossLogger()
    callbacks = [
        *callbacks,
        StopOnNonFiniteLoss(kwargs.pop("check_finite_every_n_steps")),
        loss_logger,
        ValidateAtMaxSteps(),
    ]
    if kwargs["benchmark"] is None and plan.accelerator == "gpu" and not kwargs["deterministic"]:
        kwargs["benchmark"] = True  # cudnn picks the fastest kernels for our fixed input shapes
    if kwargs["sync_batchnorm"] and plan.accelerator == "cpu" and plan.world_size > 1:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU kernel); set it false"
        )
    kwargs["profiler"] = build_profiler(kwargs["profiler"], output_dir)
    if smoke_run(trainer_cfg):  # its weights are no result: no checkpoint a later ckpt_path=last could pick
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint | LastCheckpoint)]
        kwargs["enable_checkpointing"] = False
    if kwargs["enable_progress_bar"] is None:
        kwargs["enable_progress_bar"] = sys.stdout.isatty()  # keep batch logs (SLURM, CI) clean
    if kwargs["enable_progress_bar"]:
        callbacks = [*callbacks, LossProgressBar(loss_logger)]
    with building(
        "trainer", "lightning.Trainer", label="cannot build the Lightning Trainer from trainer.* and device.*"
    ):
        trainer = L.Trainer(
            accelerator=plan.accelerator,
            devices=plan.devices,
            num_nodes=plan.num_nodes,
            strategy=plan.strategy_arg(),
            precision=plan.precision,
            callbacks=callbacks,
            logger=loggers or False,
            plugins=[AtomicCheckpointIO(), *cluster_plugins()],
            use_distributed_sampler=False,  # the DataModule shards per rank (see data/in_memory.py)
            default_root_dir=output_dir,
            **kwargs,
        )
    keep_our_signal_handlers(trainer)  # stop requests are flags acted on at safe points (preemption.py)
    return trainer
