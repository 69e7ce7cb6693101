"""One builder per concern: data, model, callbacks, loggers, trainer — each from its sub-config."""

import sys
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from cnnfleet.data.in_memory import InMemoryDataModule
from cnnfleet.errors import ConfigError
from cnnfleet.guard import building
from cnnfleet.training.checkpoint_io import AtomicCheckpointIO
from cnnfleet.training.device import DevicePlan
from cnnfleet.training.finite_loss import StopOnNonFiniteLoss
from cnnfleet.training.module import Classifier
from cnnfleet.training.optim import resolve_optimizer
from cnnfleet.training.preemption import keep_our_signal_handlers
from cnnfleet.training.step_loss import TrainLossLogger


def _instantiate(node: DictConfig, key: str) -> Any:
    with building(key, node.get("_target_")):
        return instantiate(node)


def build_datamodule(data_cfg: DictConfig, seed: int) -> InMemoryDataModule:
    """The data set; `seed` (the run's seed) drives the per-epoch shuffling."""
    with building("data", data_cfg.get("_target_")):
        return instantiate(data_cfg, shuffle_seed=seed)


def build_classifier(model_cfg: DictConfig, data_cfg: DictConfig, cfg: DictConfig) -> Classifier:
    """The network's stem and head follow the data set's channels and classes."""
    model = OmegaConf.to_container(model_cfg, resolve=True)
    model.update(in_channels=data_cfg.channels, num_classes=data_cfg.num_classes)
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
    return module


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
    callbacks = [*callbacks, StopOnNonFiniteLoss(kwargs.pop("check_finite_every_n_steps")), loss_logger]
    if kwargs["benchmark"] is None and plan.accelerator == "gpu" and not kwargs["deterministic"]:
        kwargs["benchmark"] = True  # cudnn picks the fastest kernels for our fixed input shapes
    if kwargs["sync_batchnorm"] and plan.accelerator == "cpu" and plan.world_size > 1:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU kernel); set it false"
        )
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
            enable_model_summary=False,
            **kwargs,
        )
    keep_our_signal_handlers(trainer)  # stop requests are flags acted on at safe points (preemption.py)
    return trainer
