"""train(cfg): build every part from config, fit, test, and write the run summary."""

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig

import cnnfleet
from cnnfleet.config.guard import building
from cnnfleet.data.in_memory import InMemoryDataModule
from cnnfleet.errors import CheckpointError, CnnfleetError, ConfigError
from cnnfleet.launch import signals
from cnnfleet.launch.env import rendezvous_address, sweep_trial
from cnnfleet.launch.shutdown import end_distributed
from cnnfleet.run.attempt import Attempt
from cnnfleet.run.files import write_json_atomic, write_text_atomic
from cnnfleet.run.layout import CLASSES_FILE, METRICS_FILE, TRACEBACK_FILE
from cnnfleet.run.logs import route_lightning_logs
from cnnfleet.run.plan import RunPlan, plan_trial
from cnnfleet.run.plots import plot_curves
from cnnfleet.run.record import environment_record, plain_config
from cnnfleet.run.smoke import smoke_run
from cnnfleet.run.state import COMPLETED, FAILED, PRUNED, STOPPED
from cnnfleet.run.summary import print_table, summary_rows, write_failure, write_summary
from cnnfleet.sweeps.pruning import Pruned, ReportToStudy
from cnnfleet.sweeps.trial import in_multirun, needs_own_process, one_line, run_in_own_process
from cnnfleet.tracking.wandb_logger import finish_wandb_runs, start_wandb_runs
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
from cnnfleet.training.device import apply_threads, plan_devices
from cnnfleet.training.explain import (
    explain_lost_rank,
    explain_misconfiguration,
    explain_out_of_memory,
    explain_rendezvous_failure,
)
from cnnfleet.training.flops import train_flops_per_image
from cnnfleet.training.module import Classifier, count_parameters
from cnnfleet.training.preemption import Stopped, graceful_stop, stop_if_requested
from cnnfleet.training.progress import ProgressWatch
from cnnfleet.training.rank_watch import RankWatch, end_on_silent_rank
from cnnfleet.training.run_config import LogRunConfig
from cnnfleet.training.throughput import ThroughputMonitor

log = logging.getLogger(__name__)
_started = cnnfleet.STARTED  # wall time origin: the command's start, or the trial's start in a multirun


def resume_position(ckpt_path: str, model_cfg: dict, module: Classifier | None = None) -> dict:
    """Where a checkpoint stands; CheckpointError when it belongs to another model, ConfigError
    when its weights do not load into `module` (edited or damaged), before the fit is started."""
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
    if module is not None:  # Lightning loads them again (strictly) in fit; here a mismatch is one line
        with building("ckpt_path", ckpt_path, label=f"cannot load the weights of {ckpt_path} into this model"):
            module.load_state_dict(checkpoint["state_dict"])
    return {"path": ckpt_path, "global_step": checkpoint["global_step"], "epoch": checkpoint["epoch"]}


def train(cfg: DictConfig, plan: RunPlan | None = None) -> float | None:
    """Train, validate and test one run; returns cfg.optimized_metric for sweepers. `plan`: the run plan
    the command line decided (run/plan.py); a sweep's trial makes its own."""
    global _started
    _started = cnnfleet.STARTED if not in_multirun() else time.perf_counter()  # a trial's own time in a sweep
    try:
        devices = plan_devices(cfg.device)
    except CnnfleetError as exc:
        if plan is not None:
            Attempt.of(plan).close(FAILED, one_line(exc))
        raise
    if needs_own_process(devices.world_size):
        return run_in_own_process()  # a DDP trial of a local multirun (see sweeps/trial.py)
    apply_threads(devices)
    plan = (plan or plan_trial(cfg)).with_devices(devices, cfg.data.batch_size)
    loggers: list = []
    attempt = Attempt.of(plan)
    progress = ProgressWatch(plan.rank, cfg.device.stall_after_s, plan.run_dir, on_phase=attempt.enter_phase)
    signals.arm_deadline(cfg.device.stop_timeout_s, stop_deadline(plan, attempt, progress, cfg.device.stop_timeout_s))
    exit_code = 1  # what this process exits with; the distributed state ends first (launch/shutdown.py)
    try:
        result = _train(cfg, plan, loggers, attempt, progress)
        exit_code = 0
        if isinstance(result, Pruned):  # an Optuna trial its pruner stopped: finished, not failed
            attempt.close(PRUNED, result.reason)
            return None
        attempt.close(COMPLETED, "completed")
        return result
    except Stopped as stopped:
        reason = (
            f"{'requeued after ' if stopped.requeued else 'stopped by '}{stopped.signal_name} during {stopped.phase}"
        )
        if attempt.close(STOPPED, reason):
            write_summary(
                plan.run_dir,
                {
                    "status": STOPPED,
                    "reason": reason,
                    "run_dir": str(plan.run_dir),
                    "global_step": stopped.step,
                    "wall_seconds": time.perf_counter() - _started,
                },
            )
        exit_code = _report_stop(stopped, plan)
        raise SystemExit(exit_code) from None
    except (KeyboardInterrupt, SystemExit) as exc:
        # a second Ctrl-C: KeyboardInterrupt, or the sys.exit(1) Lightning turns it into inside fit/test
        if isinstance(exc, SystemExit) and not signals.pending() & signals.INTERRUPT:
            exit_code = exc.code if isinstance(exc.code, int) else 1
            attempt.close(FAILED, f"exited with code {exc.code}")
            raise
        attempt.close(STOPPED, "aborted by a second SIGINT")
        if plan.rank == 0:
            sys.stderr.write(
                "cnnfleet-train: aborted by a second Ctrl-C: the checkpoints already written are kept; "
                f"continue with: {plan.next_command()}\n"
            )
        exit_code = signals.EXIT_CODES[signals.INTERRUPT]
        raise SystemExit(exit_code) from None
    except BaseException as exc:
        exit_code = getattr(exc, "exit_code", 1)
        if attempt.close(FAILED, one_line(exc)) and isinstance(exc, Exception):
            _record_failure(plan.run_dir, exc)
        raise
    finally:
        signals.disarm()  # this attempt is recorded: a later signal must not rewrite its record
        finish_wandb_runs(loggers, failed=attempt.status == FAILED)
        end_distributed(exit_code)


def stop_deadline(plan: RunPlan, attempt: Attempt, progress: ProgressWatch, seconds: int) -> Callable[[int], None]:
    """What a rank does when a stop request was not acted on within device.stop_timeout_s (launch/signals.py):
    record the attempt as stopped, say where it waited, and let the process end with the request's status."""

    def expire(request: int) -> None:
        if attempt.status is not None:  # the stop was acted on just now and recorded: keep that record
            return
        reason = f"stopped by {signals.NAMES[request]}: no safe point within {seconds} s (waiting in {progress.where})"
        if attempt.close(STOPPED, reason):
            write_summary(
                plan.run_dir,
                {
                    "status": STOPPED,
                    "reason": reason,
                    "run_dir": str(plan.run_dir),
                    "global_step": attempt.step,
                    "wall_seconds": time.perf_counter() - _started,
                },
            )
        if plan.rank == 0:
            sys.stderr.write(
                f"cnnfleet-train: {reason}: the checkpoints already written are kept; "
                f"continue with: {plan.next_command()}\n"
            )

    return expire


def _report_stop(stopped: Stopped, plan: RunPlan) -> int:
    """One line from rank 0 (what was saved, how to continue); the exit code for the request."""
    if plan.rank != 0:
        return 0  # rank 0 reports (and Lightning's process observer must not kill it)
    if stopped.requeued:
        print(
            f"preempted by SIGUSR1 during {stopped.phase}: saved {stopped.path or 'nothing new'}; the job "
            f"continues in {plan.run_dir} (requeued, or a follow-up job)"
        )
        return 0
    saved = f"saved {stopped.path}" if stopped.path else "the checkpoints already written are kept"
    sys.stderr.write(
        f"cnnfleet-train: stopped by {stopped.signal_name} during {stopped.phase} at step {stopped.step}: {saved}; "
        f"continue with: {plan.next_command()}\n"
    )
    return signals.EXIT_CODES[stopped.request]


def _record_failure(output_dir: Path, exc: Exception) -> None:
    """summary.json says failed and why; a bug (not an input error) leaves its traceback beside it."""
    write_failure(output_dir, one_line(exc), wall_seconds=time.perf_counter() - _started, error=type(exc).__name__)
    if output_dir.is_dir() and not isinstance(exc, CnnfleetError):
        write_text_atomic(output_dir / TRACEBACK_FILE, "".join(traceback.format_exception(exc)))


def training_callbacks(
    cfg: DictConfig,
    module: Classifier,
    environment: dict,
    output_dir: Path,
    on_silent_rank: Callable,
    flops_per_image: float | None = None,
    progress: ProgressWatch | None = None,
) -> tuple[ThroughputMonitor, RankWatch, list[L.Callback]]:
    """Every callback of a training run (build_trainer adds the finite-loss check and the loss logger)."""
    throughput = ThroughputMonitor(flops_per_image)
    watch = RankWatch(cfg.device.timeout_s, on_silent_rank)
    progress = progress or ProgressWatch(0, cfg.device.stall_after_s, output_dir)
    trial = sweep_trial()  # an Optuna trial reports to its study at every validation (sweeps/pruning.py)
    return (
        throughput,
        watch,
        [
            *build_callbacks(cfg.callbacks),
            *([ReportToStudy(trial, cfg.optimized_metric)] if trial else []),
            throughput,
            ConfusionMatrixCallback(cfg.data.num_classes, str(output_dir)),
            LogRunConfig({**module.run_config, "run_env": environment}),
            graceful_stop(),
            watch,
            progress,
        ],
    )


def _train(
    cfg: DictConfig, plan: RunPlan, loggers: list, attempt: Attempt, progress: ProgressWatch
) -> float | Pruned | None:
    if plan.world_size == 1:  # a stop that came during the imports (a scancel at start): act before building
        stop_if_requested("start-up", 0, plan.rank == 0)  # anything, SLURM's KillWait is short
    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = plan.run_dir
    batch = plan.per_device_batch  # fails before any process is launched
    environment = environment_record()  # git, versions, hardware: env.json and the loggers' config
    rank = plan.rank
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg, resuming=bool(plan.resume_from))
    # a checkpoint that does not fit fails before anything in its run folder is rewritten
    resumed = resume_position(plan.resume_from, module.hparams.model, module) if plan.resume_from else None
    attempt.open(cfg, environment, resumed["global_step"] if resumed else None)
    if plan.world_size == 1:  # DDP ranks have not met yet: their first collective check acts (preemption.py)
        stop_if_requested("start-up", resumed["global_step"] if resumed else 0, rank == 0)
    if rank == 0:
        log.info("run folder %s: %s", output_dir, plan.reason)
        log.info(
            "device plan: %s; batch %d global = %d per device", plan.devices.describe(), cfg.data.batch_size, batch
        )
        if plan.ignored_env:
            log.warning(
                "ignored %s inherited from the submitting shell: the job's rendezvous is %s",
                ", ".join(f"{k}={v}" for k, v in plan.ignored_env.items()),
                rendezvous_address(),
            )
    # every rank says what it trains: its own log file shows that all ranks agree
    log.info("rank %d of %d hyperparameters: %s", rank, plan.world_size, hyperparameters_line(cfg))
    module.run_config = plain_config(cfg)
    # counted before compile, on a meta-device copy: MFU in the logs and the summary (training/flops.py)
    shape = (datamodule.channels, datamodule.image_size, datamodule.image_size)
    flops = train_flops_per_image(module.net, shape) if rank == 0 else None  # rank 0 logs and summarises
    compile_network(module, cfg.trainer)
    if rank == 0:
        log.info("model %s: %s parameters", _model_name(cfg.model), f"{count_parameters(module.net):,}")
    loggers.extend(build_loggers(cfg.logger))
    throughput, watch, callbacks = training_callbacks(
        cfg, module, environment, output_dir, end_on_silent_rank(plan, attempt), flops, progress
    )
    trainer = build_trainer(cfg.trainer, plan.devices, callbacks, loggers, str(output_dir))
    start_wandb_runs(loggers)  # every check of the input has passed: W&B may write into the run folder

    final_val: dict[str, float] = {}
    stopped_by: dict = {}
    try:
        if cfg.train:
            with (
                explain_rendezvous_failure(plan),
                explain_lost_rank(trainer, plan, watch),
                explain_out_of_memory(cfg, plan),
                explain_misconfiguration(),
            ):
                trainer.fit(module, datamodule=datamodule, ckpt_path=plan.resume_from)
            final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            # read now: testing the best checkpoint restores its callbacks' states (the timer's clock, early
            # stopping's epoch) over the ones that ended this fit
            stopped_by = _stop_reason(trainer)
        if cfg.train and plan.extends and resumed and trainer.global_step == resumed["global_step"]:
            limits = [f"trainer.max_epochs={cfg.trainer.max_epochs}"]
            limits += [f"trainer.max_steps={cfg.trainer.max_steps}"] if cfg.trainer.max_steps != -1 else []
            limits += (
                [f"trainer.max_time={cfg.trainer.max_time} (its clock travels in the checkpoint)"]
                if cfg.trainer.max_time
                else []
            )
            raise ConfigError(
                f"nothing was trained: the checkpoint of {Path(plan.extends).name} (epoch {resumed.get('epoch')}, "
                f"step {resumed['global_step']}) is already at the end of its schedule: {', '.join(limits)}; "
                "raise the limit that ended it"
            )
        stop_if_requested("the pause before testing", trainer.global_step, rank == 0, trainer)
        pruned = next((c.pruned for c in callbacks if isinstance(c, ReportToStudy) and c.pruned), None)
        with explain_out_of_memory(cfg, plan), explain_misconfiguration():
            test_metrics = _test(trainer, module, datamodule, cfg) if cfg.test and not pruned else {}
    finally:
        attempt.at(trainer.global_step, trainer.current_epoch)

    metric = {**final_val, **test_metrics}.get(cfg.optimized_metric)
    metric = float(metric) if metric is not None else None
    summary = _summary(trainer, throughput, plan, datamodule, cfg, test_metrics, final_val, resumed, stopped_by)
    if pruned:  # the value the pruner judged, not a test result
        metric = pruned.value
        summary.update(status=PRUNED, reason=pruned.reason, pruned_at_epoch=pruned.epoch)
    summary["optimized"] = {"metric": cfg.optimized_metric, "direction": cfg.optimized_direction, "value": metric}
    if trainer.is_global_zero:
        write_json_atomic(output_dir / CLASSES_FILE, list(datamodule.class_names))
        write_summary(output_dir, summary)
        plot_curves(output_dir / METRICS_FILE, output_dir / "curves.png")
        print_table("cnnfleet run summary", summary_rows(summary))
    return pruned or metric


def _stop_reason(trainer: L.Trainer) -> dict:
    """Why fit ended before trainer.max_epochs, when a limit or early stopping ended it. A step budget
    first: early stopping that fires at the validation of the last step did not end the run."""
    if trainer.fast_dev_run:  # Lightning runs it as max_steps=N: name what the user set
        return {"stopped_by": f"trainer.fast_dev_run={trainer.fast_dev_run}"}
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return {"stopped_by": f"trainer.max_steps={trainer.max_steps}"}
    early = trainer.early_stopping_callback
    if early is not None and early.stopped_epoch:
        return {
            "stopped_by": f"early stopping on {early.monitor} at epoch {early.stopped_epoch}",
            "stopped_early_at_epoch": early.stopped_epoch,
        }
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0:
        return {"stopped_by": "trainer.max_time"}
    return {}


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
    plan: RunPlan,
    datamodule: InMemoryDataModule,
    cfg: DictConfig,
    test: dict,
    final_val: dict,
    resumed: dict | None,
    stopped_by: dict,
) -> dict:
    """Everything summary.json records: results, timing, device, batch, split sizes."""
    checkpoint_cb = trainer.checkpoint_callback
    best = checkpoint_cb.best_model_score if checkpoint_cb is not None else None
    datamodule.setup()
    return {
        "status": "completed",
        # a smoke run's numbers check that everything runs; they are no result (summary_rows says so)
        **({"smoke": smoke} if (smoke := smoke_run(cfg.trainer)) else {}),
        "run_dir": str(plan.run_dir),
        "test": test,
        "fit": {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "final_val": final_val,
            "best_score": float(best) if best is not None else None,
            "best_monitor": checkpoint_cb.monitor if checkpoint_cb is not None else None,
            "best_checkpoint": checkpoint_cb.best_model_path if checkpoint_cb is not None else None,
            **throughput.summary(trainer.strategy.root_device),
            **stopped_by,
        },
        "resumed_from": resumed,
        "model": {"name": _model_name(cfg.model), "parameters": count_parameters(trainer.lightning_module.net)},
        "device": {
            "description": plan.devices.describe(),
            "world_size": plan.world_size,
            "precision": plan.devices.precision,
            "threads_per_process": plan.devices.threads,
        },
        "batch": {"global": cfg.data.batch_size, "per_device": plan.per_device_batch},
        "split_sizes": datamodule.split_sizes(),
        "wall_seconds": time.perf_counter() - _started,
    }


def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig) -> dict:
    """Test the best checkpoint when one was written, else the weights in memory."""
    checkpoint_cb = trainer.checkpoint_callback
    ckpt = "best" if checkpoint_cb is not None and checkpoint_cb.best_model_path else None
    if not cfg.train and cfg.ckpt_path:
        ckpt = cfg.ckpt_path
    what = checkpoint_cb.best_model_path if ckpt == "best" else ckpt or "the final weights (no best checkpoint)"
    log.info("testing %s on the test split", what)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    return {key: float(value) for key, value in results[0].items()} if results else {}
