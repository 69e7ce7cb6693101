"""train(cfg): build every part from config, fit, test, and write the run summary."""

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from cnnfleet import STARTED
from cnnfleet.data.in_memory import InMemoryDataModule, per_device_batch
from cnnfleet.errors import CheckpointError, LaunchError
from cnnfleet.run.logs import route_lightning_logs
from cnnfleet.run.plots import plot_curves
from cnnfleet.run.ranks import global_rank
from cnnfleet.run.record import environment_record, plain_config, write_run_record
from cnnfleet.run.resume import checkpoint_to_resume
from cnnfleet.run.summary import print_table, summary_rows, write_summary
from cnnfleet.tracking.wandb_logger import finish_wandb_runs
from cnnfleet.training.builders import (
    build_callbacks,
    build_classifier,
    build_datamodule,
    build_loggers,
    build_trainer,
)
from cnnfleet.training.checkpoint_io import read_checkpoint
from cnnfleet.training.confusion import ConfusionMatrixCallback
from cnnfleet.training.device import DevicePlan, plan_devices
from cnnfleet.training.preemption import Preempted, slurm_preemption
from cnnfleet.training.run_config import LogRunConfig
from cnnfleet.training.throughput import ThroughputMonitor

log = logging.getLogger(__name__)


def resume_position(ckpt_path: str, model_cfg: dict) -> dict:
    """Where a checkpoint stands; CheckpointError when it belongs to another model."""
    checkpoint = read_checkpoint(ckpt_path)
    saved_model = checkpoint.get("hyper_parameters", {}).get("model")
    if saved_model is not None and saved_model != model_cfg:
        diff = sorted(k for k in set(saved_model) | set(model_cfg) if saved_model.get(k) != model_cfg.get(k))
        saved = ", ".join(f"{k}={saved_model.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"ckpt_path {ckpt_path} holds a different model ({saved}); "
            "resume with the same model settings or start a new run"
        )
    return {"path": ckpt_path, "global_step": checkpoint["global_step"], "epoch": checkpoint["epoch"]}


@contextmanager
def explain_rendezvous_failure(plan: DevicePlan) -> Iterator[None]:
    """A rank that cannot reach the others fails after device.timeout_s with what to check."""
    try:
        yield
    except torch.distributed.DistError as exc:
        master = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise LaunchError(
            f"rank {global_rank(devices_per_node=plan.devices)} of {plan.world_size} could not reach the other "
            f"ranks at {master} within device.timeout_s={plan.timeout_s} s ({type(exc).__name__}); check "
            "MASTER_ADDR/MASTER_PORT (the rank-0 node and a free port), that every node was started, and firewalls"
        ) from exc


def train(cfg: DictConfig) -> float | None:
    """Train, validate and test one run; returns cfg.optimized_metric for sweepers."""
    loggers: list = []
    failed = True
    try:
        result = _train(cfg, loggers)
        failed = False
        return result
    except SystemExit as exit_:
        failed = exit_.code not in (0, None)  # a preempted job exits 0 and resumes this W&B run
        raise
    finally:
        finish_wandb_runs(loggers, failed=failed)


def _train(cfg: DictConfig, loggers: list) -> float | None:
    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    plan = plan_devices(cfg.device)
    batch = per_device_batch(cfg.data.batch_size, plan.world_size)  # fails before any process is launched
    environment = environment_record()  # git, versions, hardware: env.json and the loggers' config
    if global_rank(devices_per_node=plan.devices) == 0:
        write_run_record(cfg, output_dir, environment)
        log.info("device plan: %s; batch %d global = %d per device", plan.describe(), cfg.data.batch_size, batch)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    module.run_config = plain_config(cfg)
    loggers.extend(build_loggers(cfg.logger))
    throughput = ThroughputMonitor()
    preemption = slurm_preemption()
    callbacks = [
        *build_callbacks(cfg.callbacks, has_logger=bool(loggers)),
        throughput,
        ConfusionMatrixCallback(cfg.data.num_classes, str(output_dir)),
        LogRunConfig({**module.run_config, "run_env": environment}),
        *([preemption] if preemption else []),
    ]
    trainer = build_trainer(cfg.trainer, plan, callbacks, loggers, str(output_dir))
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, output_dir)
    resumed = resume_position(ckpt_path, module.hparams.model) if ckpt_path else None

    final_val: dict[str, float] = {}
    if cfg.train:
        try:
            with explain_rendezvous_failure(plan):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except Preempted as saved:
            print(f"preempted: saved {saved}; the requeued job resumes from it in {output_dir}")
            raise SystemExit(0) from None
        # Ctrl-C: Lightning tears down and exits 1 itself; last.ckpt of the last epoch stays intact
        final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    test_metrics = _test(trainer, module, datamodule, cfg) if cfg.test else {}

    summary = _summary(trainer, throughput, plan, datamodule, cfg, test_metrics, final_val, resumed)
    if trainer.is_global_zero:
        write_summary(output_dir, summary)
        plot_curves(output_dir / "metrics.csv", output_dir / "curves.png")
        print_table("cnnfleet run summary", summary_rows(summary))
    metric = {**final_val, **test_metrics}.get(cfg.optimized_metric)
    return float(metric) if metric is not None else None


def _summary(
    trainer: L.Trainer,
    throughput: ThroughputMonitor,
    plan: DevicePlan,
    datamodule: InMemoryDataModule,
    cfg: DictConfig,
    test: dict,
    final_val: dict,
    resumed: dict | None,
) -> dict:
    """Everything summary.json records: results, timing, device, batch, split sizes."""
    checkpoint_cb = trainer.checkpoint_callback
    best = checkpoint_cb.best_model_score if checkpoint_cb is not None else None
    datamodule.setup()
    return {
        "status": "completed",
        "run_dir": str(cfg.paths.output_dir),
        "test": test,
        "fit": {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "final_val": final_val,
            "best_score": float(best) if best is not None else None,
            "best_monitor": checkpoint_cb.monitor if checkpoint_cb is not None else None,
            "best_checkpoint": checkpoint_cb.best_model_path if checkpoint_cb is not None else None,
            **throughput.summary(trainer.strategy.root_device),
        },
        "resumed_from": resumed,
        "device": {
            "description": plan.describe(),
            "world_size": plan.world_size,
            "precision": plan.precision,
        },
        "batch": {"global": cfg.data.batch_size, "per_device": per_device_batch(cfg.data.batch_size, plan.world_size)},
        "split_sizes": datamodule.split_sizes(),
        "wall_seconds": time.perf_counter() - STARTED,
    }


def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig) -> dict:
    """Test the best checkpoint when one was written, else the weights in memory."""
    checkpoint_cb = trainer.checkpoint_callback
    ckpt = "best" if checkpoint_cb is not None and checkpoint_cb.best_model_path else None
    if not cfg.train and cfg.ckpt_path:
        ckpt = cfg.ckpt_path
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    return {key: float(value) for key, value in results[0].items()} if results else {}
