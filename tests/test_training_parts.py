"""Schedulers, atomic checkpoints, the appending CSV logger and device planning."""

import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cnnfleet.errors import CheckpointError, ConfigError
from cnnfleet.run.resume import (
    FIXED_LENGTH_SCHEDULES,
    checkpoint_in_run_dir,
    config_changes,
    newest_unfinished_run,
    owning_run_dir,
)
from cnnfleet.run.state import RunLock, RunState
from cnnfleet.training.checkpoint_io import AtomicCheckpointIO, atomic_torch_save, read_checkpoint
from cnnfleet.training.csv_logger import ResumableCSVLogger
from cnnfleet.training.device import auto_precision, plan_devices
from cnnfleet.training.schedulers import WarmupCosine, one_cycle, warmup_cosine


def sgd(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_cosine_hand_computed_values() -> None:
    f = WarmupCosine(total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1)  # (0 + 1) / 10
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)  # cosine starts at the peak
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)


def test_warmup_cosine_scheduler_state_survives_a_round_trip() -> None:
    opt = sgd()
    sched = warmup_cosine(opt, total_steps=100, warmup_fraction=0.1)
    for _ in range(30):
        opt.step()
        sched.step()
    opt2 = sgd()
    sched2 = warmup_cosine(opt2, total_steps=100, warmup_fraction=0.1)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_one_cycle_peaks_at_the_optimizer_lr() -> None:
    opt = sgd(lr=0.2)
    sched = one_cycle(opt, total_steps=100, pct_start=0.25)
    lrs = []
    for _ in range(99):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert max(lrs) == pytest.approx(0.2, rel=1e-3)
    assert lrs.index(max(lrs)) in (23, 24)


# what read_checkpoint requires of a cnnfleet checkpoint besides the weights
LIGHTNING_STATE = {"epoch": 0, "hyper_parameters": {"model": {"_target_": "m"}, "optimizer": {"_target_": "o"}}}


def test_atomic_save_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({**LIGHTNING_STATE, "state_dict": {"w": torch.ones(2)}, "global_step": 1}, target)
    atomic_torch_save({**LIGHTNING_STATE, "state_dict": {"w": torch.zeros(2)}, "global_step": 2}, target)
    assert read_checkpoint(target)["global_step"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({**LIGHTNING_STATE, "state_dict": {}, "global_step": 7}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "bad": Unpicklable()}, target)
    assert read_checkpoint(target)["global_step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(1000)}}, target)
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(target)


def test_csv_logger_appends_to_an_existing_metrics_file(tmp_path: Path) -> None:
    first = ResumableCSVLogger(save_dir=str(tmp_path))
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.save()
    second = ResumableCSVLogger(save_dir=str(tmp_path))  # a resumed run, same folder
    second.log_metrics({"train/loss": 0.5, "val/acc": 0.9}, step=10)
    second.save()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["step", "train/loss", "val/acc"]
    assert len(lines) == 3 and lines[1].startswith("0,1.0") and lines[2].startswith("10,0.5,0.9")


def test_csv_logger_new_column_never_leaves_a_truncated_file(tmp_path: Path, monkeypatch) -> None:
    """A new key rewrites metrics.csv; dying mid-rewrite (here: the row writer fails) keeps every row."""
    logger = ResumableCSVLogger(save_dir=str(tmp_path))
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        logger.save()
    before = (tmp_path / "metrics.csv").read_text()

    def die(*args, **kwargs) -> None:
        raise KeyboardInterrupt  # what a signal handler raises in the middle of the write

    monkeypatch.setattr("csv.DictWriter.writerows", die)
    logger.log_metrics({"train/loss": 0.1, "val/acc": 0.9}, step=3)
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    assert (tmp_path / "metrics.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left behind


def make_run(runs: Path, name: str, status: str, mtime: float) -> Path:
    run = runs / name
    atomic_torch_save({"state_dict": {}}, run / "checkpoints" / "last.ckpt")
    RunState(identity={"kind": "local"}, status=status).write(run)
    os.utime(run / "state.json", (mtime, mtime))
    return run


def test_resume_last_takes_the_newest_unfinished_run_never_a_completed_one(tmp_path: Path) -> None:
    runs = tmp_path / "train" / "runs"
    stopped = make_run(runs, "a", "stopped", 1)
    make_run(runs, "b", "completed", 2)
    assert newest_unfinished_run(runs) == stopped
    assert owning_run_dir(stopped / "checkpoints" / "last.ckpt") == stopped
    killed = make_run(runs, "c", "running", 3)  # SIGKILLed: its lock is free
    assert newest_unfinished_run(runs) == killed


def test_resume_last_skips_a_run_whose_lock_is_held(tmp_path: Path) -> None:
    runs = tmp_path / "train" / "runs"
    older = make_run(runs, "a", "failed", 1)
    live = make_run(runs, "b", "running", 2)
    lock = RunLock(live)
    lock.acquire()
    try:
        assert newest_unfinished_run(runs) == older
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            RunLock(live).acquire()
    finally:
        lock.release()


def test_resume_last_without_an_unfinished_run_says_why(tmp_path: Path) -> None:
    runs = tmp_path / "train" / "runs"
    with pytest.raises(CheckpointError, match="train first"):
        newest_unfinished_run(runs)
    done = make_run(runs, "a", "completed", 1)
    with pytest.raises(CheckpointError, match=f"never resumed implicitly.*ckpt_path={done}/checkpoints/last.ckpt"):
        newest_unfinished_run(runs)


def test_changed_defining_settings_are_named_and_a_one_cycle_schedule_keeps_its_length() -> None:
    saved = {
        "seed": 1,
        "model": {"w": 1},
        "scheduler": {"_target_": FIXED_LENGTH_SCHEDULES[0]},
        "trainer": {"max_epochs": 20, "limit_train_batches": None},
        "data": {"batch_size": 64},
    }
    assert config_changes(saved, saved) == {}
    longer = {**saved, "trainer": {"max_epochs": 30, "limit_train_batches": None}}
    assert config_changes(saved, longer) == {"trainer.max_epochs": [20, 30]}
    cosine = {**saved, "scheduler": {"_target_": "cosine"}}
    assert config_changes(cosine, {**longer, "scheduler": {"_target_": "cosine"}}) == {}  # cosine holds its end
    assert "data.batch_size" in config_changes(saved, {**saved, "data": {"batch_size": 32}})


def device_cfg(accelerator: str) -> OmegaConf:
    return OmegaConf.create(
        dict(accelerator=accelerator, devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=9)
    )


def test_cpu_plan_uses_full_precision() -> None:
    cfg = OmegaConf.create(
        dict(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=9)
    )
    plan = plan_devices(cfg)
    assert plan.precision == "32-true" and plan.world_size == 1
    assert auto_precision("cpu") == "32-true"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_request_without_a_gpu_is_a_config_error() -> None:
    cfg = OmegaConf.create(
        dict(accelerator="gpu", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=9)
    )
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        plan_devices(cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_plan_picks_mixed_precision() -> None:
    cfg = OmegaConf.create(
        dict(accelerator="auto", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=9)
    )
    plan = plan_devices(cfg)
    assert plan.accelerator == "gpu" and plan.precision in ("bf16-mixed", "16-mixed")


def test_a_run_folder_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    assert checkpoint_in_run_dir(tmp_path) is None  # a fresh folder starts from scratch
    last = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({"state_dict": {}}, last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    atomic_torch_save({"state_dict": {}}, hpc)
    os.utime(last, (1, 1))  # the hpc checkpoint (SIGUSR1) is newer than the epoch's last.ckpt
    assert checkpoint_in_run_dir(tmp_path) == hpc


def test_a_wait_after_a_reported_checkpoint_write_is_reported_anew_with_its_place(tmp_path: Path) -> None:
    """Seen in CI: a slow checkpoint write at an epoch's end was reported, and the data loader that then
    hung at the next epoch's first batch was never reported (the watch still thought it was writing)."""
    from types import SimpleNamespace

    from cnnfleet.training.progress import ProgressWatch

    watch = ProgressWatch(rank=0, stall_after_s=3, run_dir=tmp_path)
    trainer = SimpleNamespace(global_step=19, current_epoch=1)
    watch.on_train_epoch_start(trainer, None)  # before the first step: the workers are starting
    assert watch.where == "start-up"
    watch.step_s = 0.02  # steps were taken
    watch.on_save_checkpoint(trainer, None, {})
    watch.reported = True  # the watch thread reported the slow write
    watch.on_train_epoch_start(trainer, None)
    assert not watch.reported and watch.where == "training: waiting for batch 0 of epoch 1 from the data loader"
