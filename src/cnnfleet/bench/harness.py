"""The two sides of a measurement: cnnfleet's training path in this process, and real
`cnnfleet-train` runs in subprocesses (several devices, DDP), each read from its summary.json."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnfleet.bench.raw_loop import raw_train
from cnnfleet.data.on_device import storage_dtype  # stored as the on-device path stores them
from cnnfleet.errors import CnnfleetError
from cnnfleet.training.builders import build_classifier, build_datamodule, build_trainer, compile_network
from cnnfleet.training.device import plan_devices
from cnnfleet.training.optim import build_optimizer
from cnnfleet.training.throughput import ThroughputMonitor

# what the in-process cnnfleet side leaves out: the measurement is the training loop itself
IN_PROCESS = [
    "logger=none",
    "callbacks=none",
    "test=false",
    "trainer.limit_val_batches=0",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
]


def compose_train(overrides: list[str], output_dir: str) -> DictConfig:
    """The train config for a workload, composed (and validated) as cnnfleet-train would, resolved,
    without Hydra's node; the bench's own HydraConfig is left as it was."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from cnnfleet.config.compose import compose_config
    from cnnfleet.config.errors import COMPOSE_ERRORS, explain
    from cnnfleet.config.search_path import conf_dir
    from cnnfleet.errors import ConfigError

    saved = HydraConfig.instance().cfg
    try:
        cfg = compose_config("train", [*overrides, f"paths.output_dir={output_dir}"])
        return OmegaConf.create(
            {
                k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg
                if k != "hydra"
            }
        )
    except COMPOSE_ERRORS as exc:
        raise ConfigError(f"workload: {explain(exc, conf_dir())}") from None
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = saved


def steady(epochs: list[tuple[int, float]]) -> float:
    """Images/s over the epochs after the first (warm-up)."""
    rest = epochs[1:] or epochs
    return sum(n for n, _ in rest) / sum(s for _, s in rest)


def cnnfleet_in_process(cfg: DictConfig, workdir: str) -> list[tuple[int, float]]:
    """cnnfleet's own builders and Lightning loop; (images, seconds) per training epoch."""
    plan = plan_devices(cfg.device)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    compile_network(module, cfg.trainer)
    throughput = ThroughputMonitor()
    trainer = build_trainer(cfg.trainer, plan, [throughput], [], workdir)
    trainer.fit(module, datamodule=datamodule)
    return [(e["images"], e["train_seconds"]) for e in throughput.epochs]


class BareModule(L.LightningModule):
    """What Lightning itself costs: the same network, loss, optimizer and schedule in the smallest
    LightningModule, with none of cnnfleet's metrics, callbacks or logging."""

    def __init__(self, net: torch.nn.Module, optimizer: dict, scheduler: dict | None, channels_last: bool) -> None:
        super().__init__()
        self.net, self.optimizer_cfg, self.scheduler_cfg = net, optimizer, scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x.contiguous(memory_format=self.memory_format)), y)

    def configure_optimizers(self) -> dict:
        optimizer = build_optimizer(self, self.net, self.optimizer_cfg)  # as cnnfleet's (layer_decay, freeze)
        if self.scheduler_cfg is None:
            return {"optimizer": optimizer}
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.scheduler_cfg)(optimizer=optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lightning_in_process(cfg: DictConfig, workdir: str) -> list[tuple[int, float]]:
    """A bare Lightning loop (BareModule, Lightning's defaults minus logging and checkpoints) on the
    same data path; timed by the same ThroughputMonitor."""
    plan = plan_devices(cfg.device)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    classifier = build_classifier(cfg.model, cfg.data, cfg)  # the resolved optimizer and schedule
    module = BareModule(
        classifier.net, classifier.hparams.optimizer, classifier.hparams.scheduler, cfg.trainer.channels_last
    )
    compile_network(module, cfg.trainer)
    throughput = ThroughputMonitor()
    trainer = L.Trainer(
        accelerator=plan.accelerator,
        devices=1,
        precision=plan.precision,
        max_epochs=cfg.trainer.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[throughput],
        default_root_dir=workdir,
        benchmark=plan.accelerator == "gpu",
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return [(e["images"], e["train_seconds"]) for e in throughput.epochs]


def raw_in_process(cfg: DictConfig) -> list[tuple[int, float]]:
    """The hand-written loop on the same network, data tensors, optimizer, schedule and device."""
    plan = plan_devices(cfg.device)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    datamodule.setup()
    module = build_classifier(cfg.model, cfg.data, cfg)  # the same hparams cnnfleet resolves
    net = module.net
    if cfg.trainer.compile:
        net.compile(mode=cfg.trainer.compile_mode)
    device = torch.device("cuda", 0) if plan.accelerator == "gpu" else torch.device("cpu")
    images, labels = datamodule.splits["train"].tensors
    return raw_train(
        net,
        images.to(device, storage_dtype(device)),
        labels.to(device),
        module.hparams.optimizer,
        module.hparams.scheduler,
        cfg.data.batch_size,
        cfg.trainer.max_epochs,
        plan.precision,
        channels_last=cfg.trainer.channels_last,
        seed=cfg.seed,
    )


def run_train(overrides: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """One real `cnnfleet-train` run in a subprocess; its summary.json."""
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "CNNFLEET_ROOT": root, **(env or {})}
        command = [sys.executable, "-m", "cnnfleet.cli.train", *overrides]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CnnfleetError(f"benchmark run failed ({' '.join(overrides)}): {last}")
        (summary,) = Path(root).glob("logs/train/runs/*/summary.json")
        return json.loads(summary.read_text())
