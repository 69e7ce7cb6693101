"""Faults survived with nothing lost: SIGTERM + exact resume, a dead DDP rank, killed checkpoint writes."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import lightning as L
import pytest
import torch

from cnnfleet.data.sharding import TrainingSampler as SkippingSampler
from cnnfleet.launch import signals
from cnnfleet.launch.env import lightning_launched_child
from cnnfleet.run.resume import checkpoint_in_run_dir
from conftest import BIN, run_cli, wait_until

# augmentation on: the resumed run must also continue the random stream; gradient accumulation on:
# a stop requested inside an accumulation window waits for its optimizer step (4 batches per optimizer step)
PARITY = [
    "data=synthetic",
    "data.num_samples=3000",
    "data.image_size=16",
    "data.crop_padding=2",
    "data.horizontal_flip=true",
    "model=simple_cnn",
    "optimizer=sgd",
    "trainer.max_epochs=4",
    "logger=csv",
    "test=false",
    "trainer.accumulate_grad_batches=4",
    "data.batch_size=25",
]
STEPS_PER_EPOCH = 2100 // 25 // 4  # 2,100 training images: 84 batches of 25, 21 optimizer steps


def start(args: list[str], root: Path) -> subprocess.Popen:
    env = {**os.environ, "CNNFLEET_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(BIN / "cnnfleet-train"), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # noqa: ANN001
    if not wait_until(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pause(seconds: float) -> None:
    """A deliberate delay (a random moment to kill at), not a wait for a condition."""
    threading.Event().wait(seconds)


def last_ckpt(root: Path) -> list[Path]:
    return sorted(root.glob("logs/train/runs/*/checkpoints/last.ckpt"))


def final_state(root: Path) -> dict:
    (path,) = last_ckpt(root)
    return torch.load(path, weights_only=True)


def processes_of(root: Path) -> list[int]:
    """PIDs whose environment holds this test's CNNFLEET_ROOT (the job's ranks)."""
    marker = f"CNNFLEET_ROOT={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    assert run_cli("cnnfleet-train", PARITY, whole).returncode == 0

    proc = start(PARITY, parts)
    wait_for(lambda: bool(last_ckpt(parts)), 120, "the first epoch's last.ckpt")  # stop inside epoch 2
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if "stopped by SIGTERM" in line]
    assert (
        len(lines) == 1
        and "continue with: cnnfleet-train " in lines[0]
        and " ckpt_path=last" in lines[0]
        and "Traceback" not in stderr
    )
    stopped_at = int(lines[0].split("at step ")[1].split(":")[0])
    assert 0 < stopped_at < 4 * STEPS_PER_EPOCH  # it stopped before the end

    resumed = run_cli("cnnfleet-train", [*PARITY, "ckpt_path=last"], parts)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.summary()["resumed_from"]["global_step"] == stopped_at
    a, b = final_state(whole), final_state(parts)
    assert a["global_step"] == b["global_step"] == 4 * STEPS_PER_EPOCH
    diff = max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item() for k in a["state_dict"])
    assert diff == 0.0, f"resumed run differs from the uninterrupted one by {diff}"  # bit for bit


def test_skipping_sampler_drops_the_consumed_batches_once() -> None:
    sampler = SkippingSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=1)
    full = list(sampler)
    sampler.skip = 8
    assert list(sampler) == full[8:]
    assert list(sampler) == full  # only the resumed epoch skips


@pytest.mark.slow
def test_a_killed_ddp_rank_ends_the_job_without_orphans_and_it_resumes(tmp_path: Path) -> None:
    args = [
        "device=ddp",
        "device.accelerator=cpu",
        "device.devices=2",
        "trainer.max_epochs=200",
        "logger=csv",
        "test=false",
        "scheduler=cosine",
    ]
    proc = start(args, tmp_path)
    wait_for(lambda: bool(last_ckpt(tmp_path)), 120, "a checkpoint")
    ranks = processes_of(tmp_path)
    child = [pid for pid in ranks if pid != proc.pid]
    assert child, f"rank 1 not found among {ranks}"
    os.kill(child[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)  # the job ends within 60 s of the kill, or this fails
    assert proc.returncode != 0
    # rank 0 notices first (its collective fails) and names the dead rank in one line; should
    # Lightning's process observer (5 s polling) win the race, its own line names the rank instead
    ours = [line for line in stderr.splitlines() if line.startswith("cnnfleet-train: error: rank 1 (pid")]
    theirs = "[rank: 1] Child process" in stdout and "terminated with code -9" in stdout
    assert (len(ours) == 1 and "killed by SIGKILL" in ours[0] and "ckpt_path=last" in ours[0]) or theirs, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: not processes_of(tmp_path), 15, "every rank to be gone")
    (saved,) = last_ckpt(tmp_path)
    saved_step = torch.load(saved, weights_only=True)["global_step"]

    resumed = run_cli(
        "cnnfleet-train",
        [*args[:-4], "trainer.max_epochs=2", "logger=csv", "test=false", "scheduler=cosine", "ckpt_path=last"],
        tmp_path,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.summary()["resumed_from"]["global_step"] == saved_step > 0  # exactly where last.ckpt stood


@pytest.mark.slow
def test_a_frozen_ddp_rank_ends_the_run_within_the_timeout_in_one_line_naming_it(tmp_path: Path) -> None:
    """SIGSTOP: no TCP reset, no exit code, no error text; before heartbeats the survivors waited in a
    collective for device.timeout_s and died without a record."""
    timeout_s = 20
    args = [
        "device=ddp",
        "device.accelerator=cpu",
        "device.devices=2",
        f"device.timeout_s={timeout_s}",
        "trainer.max_epochs=200",
        "logger=none",
        "test=false",
    ]
    proc = start(args, tmp_path)
    wait_for(lambda: bool(last_ckpt(tmp_path)), 120, "a checkpoint")
    child = [pid for pid in processes_of(tmp_path) if pid != proc.pid]
    assert child, "rank 1 not found"
    os.kill(child[0], signal.SIGSTOP)
    try:
        _, stderr = proc.communicate(timeout=timeout_s + 30)  # ends within the timeout + 30 s, or this fails
    finally:
        for pid in child:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("cnnfleet-train: error:")]
    assert len(ours) == 1, stderr[-3000:]
    assert f"rank 1 (host {socket.gethostname()}, pid {child[0]}) stopped answering: its heartbeat stopped" in ours[0]
    assert "continue with: cnnfleet-train " in ours[0] and " ckpt_path=last" in ours[0] and "Traceback" not in stderr
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "rank 1" in state["attempts"][-1]["exit"]
    assert state["step"] > 0  # how far the run got, not the attempt's start
    wait_for(lambda: not processes_of(tmp_path), 15, "the frozen rank to be killed by rank 0")


@pytest.mark.slow
def test_killing_rank_zero_takes_its_children_along(tmp_path: Path) -> None:
    proc = start(
        [
            "device=ddp",
            "device.accelerator=cpu",
            "device.devices=2",
            "trainer.max_epochs=200",
            "logger=none",
            "test=false",
        ],
        tmp_path,
    )

    def rank_one_training() -> bool:
        logs = list((tmp_path / "logs").rglob("train_ddp_process_1.log"))
        return bool(logs) and "hyperparameters" in logs[0].read_text()

    wait_for(rank_one_training, 120, "rank 1 to start training")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_for(lambda: not processes_of(tmp_path), 15, "rank 1 to die with rank 0 (PR_SET_PDEATHSIG)")


def test_only_lightning_launched_ranks_die_with_their_parent() -> None:
    assert lightning_launched_child({"LOCAL_RANK": "1"})
    assert not lightning_launched_child({"LOCAL_RANK": "0"})
    assert not lightning_launched_child({"LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"})
    assert not lightning_launched_child({"LOCAL_RANK": "1", "SLURM_PROCID": "1"})


def frozen_inside_a_write(proc: subprocess.Popen, run_dir: Path, tries: int = 50) -> bool:
    """SIGSTOP the run while a NEW temporary checkpoint file exists (a write under way); True once it holds
    still inside one. A write that finished before the stop landed is let go, and the next one is tried."""
    temps = lambda: set(run_dir.glob("checkpoints/.last.ckpt.tmp-*"))  # noqa: E731
    earlier = temps()  # left by the kills of earlier attempts
    for _ in range(tries):
        if not wait_until(lambda: temps() - earlier, 30, interval=0.001):
            return False
        os.killpg(proc.pid, signal.SIGSTOP)
        if temps() - earlier:
            return True
        os.killpg(proc.pid, signal.SIGCONT)
    return False


@pytest.mark.slow
def test_checkpoint_writes_killed_at_random_moments_never_leave_a_broken_resume_point(tmp_path: Path) -> None:
    """SIGKILL 8 times while checkpoints are written every step: 4 kills at random moments, 4 certainly inside
    a write (the run frozen while its temporary file exists); resume always finds a whole file."""
    import random

    rng = random.Random(0)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # a 45 MB checkpoint (ResNet-18) written every step: most kills land inside a write
    args = [
        "model=resnet_cifar",
        "trainer.max_epochs=1000",
        "logger=none",
        "test=false",
        f"hydra.run.dir={run_dir}",
        "callbacks.last_checkpoint.every_n_steps=1",
    ]
    steps = []
    for attempt in range(8):
        before = last.stat().st_mtime_ns if last.exists() else 0
        proc = start(args, tmp_path)
        # training has resumed and writes a checkpoint every step; even attempts kill at a random
        # moment, odd ones as soon as a temporary checkpoint file appears (inside a write)
        wait_for(lambda before=before: last.exists() and last.stat().st_mtime_ns != before, 120, "a new checkpoint")
        if attempt % 2:
            assert frozen_inside_a_write(proc, run_dir), f"attempt {attempt}: no write could be frozen midway"
        else:
            pause(rng.uniform(0.0, 0.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        ckpt = checkpoint_in_run_dir(run_dir)
        assert ckpt is not None, f"attempt {attempt}: no checkpoint to resume from"
        loaded = torch.load(ckpt, weights_only=True)  # complete and safe to load
        assert "state_dict" in loaded
        steps.append(loaded["global_step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # every attempt resumed and moved on
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.endswith(".ckpt")]
    assert all(name.startswith(".") for name in leftovers)  # only hidden temp files of killed writes
    assert len(leftovers) >= 4, leftovers  # the kills inside a write left their temporary files


def test_out_of_memory_message_names_the_batch_per_device_and_what_to_try(compose_cfg) -> None:
    from cnnfleet.training.device import DevicePlan
    from cnnfleet.training.explain import out_of_memory_message

    cfg = compose_cfg("data.batch_size=256")
    from cnnfleet.launch.env import launcher
    from cnnfleet.run.plan import RunPlan

    devices = DevicePlan(accelerator="gpu", devices=4, num_nodes=1, strategy="ddp", precision="bf16-mixed")
    plan = RunPlan(0, launcher({}), Path("/run"), True, None, "new run").with_devices(devices, 256)
    message = out_of_memory_message(cfg, plan)
    assert "64 images per device" in message and "data.batch_size=256 over 4 device(s)" in message
    assert "trainer.accumulate_grad_batches" in message and "checkpoints written so far are intact" in message


@pytest.mark.slow
def test_a_two_rank_run_resumes_on_one_rank_with_the_same_global_batch(tmp_path: Path) -> None:
    ddp = ["device=ddp", "device.accelerator=cpu", "device.devices=2"]
    common = ["scheduler=cosine", "logger=csv", "test=false"]  # cosine holds its final rate: epochs can be added
    first = run_cli("cnnfleet-train", [*ddp, "trainer.max_epochs=1", *common], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    steps = first.summary()["fit"]["global_step"]
    # the first run completed: training it further is an explicit choice, a new run from its last state
    last = first.run_dirs()[-1] / "checkpoints" / "last.ckpt"
    second = run_cli("cnnfleet-train", ["device=cpu", "trainer.max_epochs=2", *common, f"ckpt_path={last}"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = second.summary()
    assert summary["resumed_from"]["global_step"] == steps and summary["fit"]["global_step"] == 2 * steps
    assert summary["device"]["world_size"] == 1 and summary["batch"] == {"global": 64, "per_device": 64}


class _RequestStopAt(L.Callback):
    """Raise the SIGTERM flag as the batch that completes optimizer step `step` ends (before GracefulStop reads it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        if trainer.global_step == self.step:
            signals._flags |= signals.TERMINATE


class _Recorder(L.LightningModule):
    """A linear classifier on digits with a per-step one-cycle schedule; records (epoch, batch, step)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.seen: list[tuple[int, int, int]] = []

    def training_step(self, batch, batch_idx: int):  # noqa: ANN001, ANN201
        self.seen.append((self.current_epoch, batch_idx, self.global_step))
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch, batch_idx: int) -> None:  # noqa: ANN001
        pass

    def configure_optimizers(self):  # noqa: ANN201
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _fit_until_stopped(root: Path, stop_at: int | None, ckpt: str | None) -> tuple[_Recorder, str | None]:
    from cnnfleet.data.digits import DigitsDataModule
    from cnnfleet.training.preemption import GracefulStop, Stopped

    data = DigitsDataModule(
        batch_size=64,
        num_classes=10,
        channels=1,
        image_size=8,
        mean=[0.3],
        std=[0.38],
        val_fraction=0.1,
        test_fraction=0.2,
        split_seed=0,
        num_workers=0,
        crop_padding=0,
        horizontal_flip=False,
        auto_augment="none",
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        on_device="auto",
    )
    module = _Recorder()
    callbacks = [_RequestStopAt(stop_at)] if stop_at is not None else []
    trainer = L.Trainer(
        max_epochs=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=[*callbacks, GracefulStop()],
    )
    signals._flags = 0
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    except Stopped as stopped:
        return module, stopped.path
    finally:
        signals._flags = 0
    return module, None


def test_stops_at_an_epochs_last_batch_and_then_mid_epoch_resume_into_the_uninterrupted_sample_order(tmp_path) -> None:
    """Stop requests at step 57 (the last batch of epoch 2: 19 batches an epoch) and step 90, each resumed.
    Lightning resumes a checkpoint written at an epoch's last batch into the next epoch without counting it
    as started, and the next mid-epoch checkpoint then replayed its epoch from batch 0 (the one-cycle
    schedule overran). A request at the last batch is acted on at the end of that epoch's validation."""
    whole, _ = _fit_until_stopped(tmp_path / "whole", None, None)
    first, ckpt = _fit_until_stopped(tmp_path / "parts", 57, None)
    assert ckpt is not None and torch.load(ckpt, weights_only=True)["global_step"] == 57
    second, ckpt = _fit_until_stopped(tmp_path / "parts", 90, ckpt)
    assert ckpt is not None and torch.load(ckpt, weights_only=True)["global_step"] == 90
    third, ckpt = _fit_until_stopped(tmp_path / "parts", None, ckpt)
    assert ckpt is None and len(whole.seen) == 8 * 19
    assert first.seen + second.seen + third.seen == whole.seen  # every batch once, in the uninterrupted order
