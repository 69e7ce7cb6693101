"""train(cfg): build every part from config, fit, test, and write the run summary."""

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from cnnfleet import STARTED
from cnnfleet.data.in_memory import InMemoryDataModule, per_device_batch
from cnnfleet.errors import CheckpointError, CnnfleetError, LaunchError, RankLost, RunFailed
from cnnfleet.run.files import write_json_atomic, write_text_atomic
from cnnfleet.run.logs import route_lightning_logs
from cnnfleet.run.plots import plot_curves
from cnnfleet.run.ranks import global_rank
from cnnfleet.run.record import environment_record, plain_config, write_run_record
from cnnfleet.run.resume import checkpoint_to_resume
from cnnfleet.run.summary import print_table, summary_rows, write_summary
from cnnfleet.sweeps.trial import in_multirun, needs_own_process, one_line, run_in_own_process, write_failure
from cnnfleet.tracking.wandb_logger import finish_wandb_runs
from cnnfleet.training.builders import (
    build_callbacks,
    build_classifier,
    build_datamodule,
    build_loggers,
    build_trainer,
    compile_network,
)
from cnnfleet.training.checkpoint_io import read_checkpoint
from cnnfleet.training.confusion import ConfusionMatrixCallback
from cnnfleet.training.device import DevicePlan, plan_devices
from cnnfleet.training.module import count_parameters
from cnnfleet.training.preemption import Preempted, Stopped, graceful_stop
from cnnfleet.training.run_config import LogRunConfig
from cnnfleet.training.throughput import ThroughputMonitor

log = logging.getLogger(__name__)
EXIT_SIGTERM = 143  # 128 + SIGTERM: stopped on request, checkpoint saved
_started = STARTED  # wall time origin: the command's start, or the trial's start in a multirun


def resume_position(ckpt_path: str, model_cfg: dict) -> dict:
    """Where a checkpoint stands; CheckpointError when it belongs to another model."""
    checkpoint = read_checkpoint(ckpt_path)
    saved_model = checkpoint.get("hyper_parameters", {}).get("model")
    if saved_model is not None and saved_model != model_cfg:
        diff = sorted(k for k in set(saved_model) | set(model_cfg) if saved_model.get(k) != model_cfg.get(k))
        saved = ", ".join(f"{k}={saved_model.get(k)!r}" for k in diff)
        wanted = ", ".join(f"{k}={model_cfg.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"ckpt_path {ckpt_path} holds a different model (checkpoint: {saved}; this run: {wanted}); "
            "resume with the same model and data settings or start a new run"
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


def dead_local_ranks(trainer: L.Trainer) -> list[str]:
    """Ranks started by Lightning's launcher that have exited, as 'rank N (pid P, killed by SIGKILL)'."""
    import signal as signals

    found = []
    for local_rank, proc in enumerate(getattr(trainer.strategy.launcher, "procs", None) or [], start=1):
        code = proc.poll()
        if code is not None and code != 0:
            how = f"killed by {signals.Signals(-code).name}" if code < 0 else f"exit code {code}"
            found.append(f"rank {trainer.node_rank * trainer.num_devices + local_rank} (pid {proc.pid}, {how})")
    return found


@contextmanager
def explain_lost_rank(trainer: L.Trainer, plan: DevicePlan) -> Iterator[None]:
    """A rank that dies mid-training surfaces in the others as a collective error (gloo: 'Connection
    reset by peer'); say which rank died and how to continue, in one line."""
    try:
        yield
    except (RuntimeError, torch.distributed.DistError) as exc:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        started = progress.total.started > 0 or progress.current.started > 0
        if plan.world_size < 2 or isinstance(exc, CnnfleetError) or not started:
            raise  # before the first batch: a rendezvous problem (explain_rendezvous_failure says what to check)
        time.sleep(0.5)  # let the launcher's children report their exit
        dead = dead_local_ranks(trainer)
        who = ", ".join(dead) if dead else "another rank (on this or another node)"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RankLost(
            f"{who} stopped during training, so rank {trainer.global_rank} lost contact ({first}); check that rank's "
            f"log for why (killed, out of memory), then continue with: cnnfleet-train ckpt_path=last"
        ) from None


def out_of_memory_message(cfg: DictConfig, plan: DevicePlan) -> str:
    per_device = cfg.data.batch_size // max(1, plan.world_size)
    return (
        f"out of GPU memory with {per_device} images per device (data.batch_size={cfg.data.batch_size} over "
        f"{plan.world_size} device(s), precision {plan.precision}); try a smaller data.batch_size, keep the global "
        "batch with trainer.accumulate_grad_batches=N and data.batch_size/N, device.precision=bf16-mixed, or a "
        "smaller model; the checkpoints written so far are intact"
    )


@contextmanager
def explain_out_of_memory(cfg: DictConfig, plan: DevicePlan) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError:
        raise RunFailed(out_of_memory_message(cfg, plan)) from None
    except ValueError as exc:  # torch's OneCycleLR past its end: a resume asked for more steps than it has
        if "Tried to step" not in str(exc):
            raise
        raise RunFailed(
            f"the learning-rate schedule ended ({exc}): the checkpoint's one-cycle schedule was planned for fewer "
            "steps than this run's trainer.max_epochs; resume with the original trainer.max_epochs, or use "
            "scheduler=cosine (it holds its final rate) or start a new run"
        ) from None


def train(cfg: DictConfig) -> float | None:
    """Train, validate and test one run; returns cfg.optimized_metric for sweepers."""
    global _started
    _started = STARTED if not in_multirun() else time.perf_counter()  # a trial's own time in a sweep
    plan = plan_devices(cfg.device)
    if needs_own_process(plan.world_size):
        return run_in_own_process()  # a DDP trial of a local multirun (see sweeps/trial.py)
    loggers: list = []
    failed = True
    try:
        result = _train(cfg, plan, loggers)
        failed = False
        return result
    except SystemExit as exit_:
        # a preempted (0) or stopped (143) run resumes this W&B run later: not a failure
        failed = exit_.code not in (0, None, EXIT_SIGTERM)
        raise
    except Exception as exc:
        if global_rank(devices_per_node=plan.devices) == 0:
            _record_failure(Path(cfg.paths.output_dir), exc)
        raise
    finally:
        finish_wandb_runs(loggers, failed=failed)


def _record_failure(output_dir: Path, exc: Exception) -> None:
    """summary.json says failed and why; a bug (not an input error) leaves its traceback beside it."""
    write_failure(output_dir, one_line(exc), wall_seconds=time.perf_counter() - _started)
    if output_dir.is_dir() and not isinstance(exc, CnnfleetError):
        write_text_atomic(output_dir / "traceback.txt", "".join(traceback.format_exception(exc)))


def _train(cfg: DictConfig, plan: DevicePlan, loggers: list) -> float | None:
    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    batch = per_device_batch(cfg.data.batch_size, plan.world_size)  # fails before any process is launched
    environment = environment_record()  # git, versions, hardware: env.json and the loggers' config
    rank = global_rank(devices_per_node=plan.devices)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    # a checkpoint that does not fit fails before anything in its run folder is rewritten
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, output_dir)
    resumed = resume_position(ckpt_path, module.hparams.model) if ckpt_path else None
    if rank == 0:
        write_run_record(cfg, output_dir, environment)
        log.info("device plan: %s; batch %d global = %d per device", plan.describe(), cfg.data.batch_size, batch)
    # every rank says what it trains: its own log file shows that all ranks agree
    log.info("rank %d of %d hyperparameters: %s", rank, plan.world_size, hyperparameters_line(cfg))
    module.run_config = plain_config(cfg)
    compile_network(module, cfg.trainer)
    if rank == 0:
        log.info("model %s: %s parameters", _model_name(cfg.model), f"{count_parameters(module.net):,}")
    loggers.extend(build_loggers(cfg.logger))
    throughput = ThroughputMonitor()
    preemption = graceful_stop()
    callbacks = [
        *build_callbacks(cfg.callbacks, has_logger=bool(loggers)),
        throughput,
        ConfusionMatrixCallback(cfg.data.num_classes, str(output_dir)),
        LogRunConfig({**module.run_config, "run_env": environment}),
        preemption,
    ]
    trainer = build_trainer(cfg.trainer, plan, callbacks, loggers, str(output_dir))

    final_val: dict[str, float] = {}
    if cfg.train:
        try:
            with explain_rendezvous_failure(plan), explain_lost_rank(trainer, plan), explain_out_of_memory(cfg, plan):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except Preempted as saved:
            print(f"preempted: saved {saved}; the requeued job resumes from it in {output_dir}")
            raise SystemExit(0) from None
        except Stopped as stopped:
            if rank != 0:
                raise SystemExit(0) from None  # rank 0 reports (and Lightning's observer must not kill it)
            sys.stderr.write(
                f"cnnfleet-train: stopped by SIGTERM at step {stopped.step}: saved {stopped.path}; "
                f"continue with: cnnfleet-train ckpt_path=last (or ckpt_path={stopped.path})\n"
            )
            raise SystemExit(EXIT_SIGTERM) from None
        # Ctrl-C: Lightning tears down and exits 1 itself; last.ckpt of the last epoch stays intact
        final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    with explain_out_of_memory(cfg, plan):
        test_metrics = _test(trainer, module, datamodule, cfg) if cfg.test else {}

    metric = {**final_val, **test_metrics}.get(cfg.optimized_metric)
    metric = float(metric) if metric is not None else None
    summary = _summary(trainer, throughput, plan, datamodule, cfg, test_metrics, final_val, resumed)
    summary["optimized"] = {"metric": cfg.optimized_metric, "direction": cfg.optimized_direction, "value": metric}
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "classes.json", list(datamodule.class_names))
        write_summary(output_dir, summary)
        plot_curves(output_dir / "metrics.csv", output_dir / "curves.png")
        print_table("cnnfleet run summary", summary_rows(summary))
    return metric


def _model_name(model_cfg: DictConfig) -> str:
    """`torchvision:resnet50`, `timm:convnext_nano`, or the option's class (SimpleCNN, ...)."""
    target = str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    return f"{target}:{model_cfg.name}" if "name" in model_cfg else target


def hyperparameters_line(cfg: DictConfig) -> str:
    """What decides the result of a run, as one sorted JSON line (model, optimizer, schedule, data, seed)."""
    plain = plain_config(cfg)
    chosen = {key: plain.get(key) for key in ("data", "model", "optimizer", "scheduler", "label_smoothing", "seed")}
    chosen["max_epochs"] = cfg.trainer.max_epochs
    return json.dumps(chosen, sort_keys=True, default=str)


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
        "model": {"name": _model_name(cfg.model), "parameters": count_parameters(trainer.lightning_module.net)},
        "device": {
            "description": plan.describe(),
            "world_size": plan.world_size,
            "precision": plan.precision,
        },
        "batch": {"global": cfg.data.batch_size, "per_device": per_device_batch(cfg.data.batch_size, plan.world_size)},
        "split_sizes": datamodule.split_sizes(),
        "wall_seconds": time.perf_counter() - _started,
    }


def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig) -> dict:
    """Test the best checkpoint when one was written, else the weights in memory."""
    checkpoint_cb = trainer.checkpoint_callback
    ckpt = "best" if checkpoint_cb is not None and checkpoint_cb.best_model_path else None
    if not cfg.train and cfg.ckpt_path:
        ckpt = cfg.ckpt_path
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    return {key: float(value) for key, value in results[0].items()} if results else {}
