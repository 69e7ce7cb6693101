"""Failures of a valid run, each turned into one line that says what happened and what to do:
a rank that cannot reach the others, a rank lost mid-training, out of memory, a finished schedule."""

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import lightning as L
import torch
from omegaconf import DictConfig

from cnnfleet.errors import CnnfleetError, ConfigError, LaunchError, RankLost, RunFailed
from cnnfleet.launch.env import rendezvous_address
from cnnfleet.run.plan import RunPlan

if TYPE_CHECKING:
    from cnnfleet.training.rank_watch import RankWatch


@contextmanager
def explain_rendezvous_failure(plan: RunPlan) -> Iterator[None]:
    """A rank that cannot reach the others fails after device.timeout_s with what to check."""
    try:
        yield
    except torch.distributed.DistError as exc:
        raise LaunchError(
            f"rank {plan.rank} of {plan.world_size} could not reach the other ranks at {rendezvous_address()} within "
            f"device.timeout_s={plan.devices.timeout_s} s ({type(exc).__name__}); check "
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
def explain_lost_rank(trainer: L.Trainer, plan: RunPlan, watch: "RankWatch | None" = None) -> Iterator[None]:
    """A rank that dies mid-training surfaces in the others as a collective error; say which rank died
    (the launcher's exit codes, else the heartbeats: whose counter stopped) and how to continue."""
    try:
        yield
    except (RuntimeError, torch.distributed.DistError) as exc:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        started = progress.total.started > 0 or progress.current.started > 0
        if plan.world_size < 2 or isinstance(exc, CnnfleetError) or not started:
            raise  # before the first batch: a rendezvous problem (explain_rendezvous_failure says what to check)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        dead: list[str] = []
        deadline = time.monotonic() + 5.0  # a dead rank's heartbeat is stale after a few intervals
        while not dead and time.monotonic() < deadline:
            time.sleep(0.5)  # let the launcher's children report their exit, the heartbeats go stale
            dead = dead_local_ranks(trainer)
            if not dead and watch is not None:
                watch.end_for_silent(3.0, f"a collective failed: {first}")  # records, says, ends the process
        who = ", ".join(dead) if dead else "another rank (on this or another node)"
        raise RankLost(
            f"{who} stopped during training, so rank {trainer.global_rank} lost contact ({first}); check that rank's "
            f"log for why (killed, out of memory), then continue with: {plan.next_command()}"
        ) from None


def out_of_memory_message(cfg: DictConfig, plan: RunPlan) -> str:
    per_device = plan.per_device_batch
    return (
        f"out of GPU memory with {per_device} images per device (data.batch_size={cfg.data.batch_size} over "
        f"{plan.world_size} device(s), precision {plan.devices.precision}); try a smaller data.batch_size, "
        "keep the global batch with trainer.accumulate_grad_batches=N and data.batch_size/N, "
        "device.precision=bf16-mixed, or a smaller model; the checkpoints written so far are intact"
    )


@contextmanager
def explain_out_of_memory(cfg: DictConfig, plan: RunPlan) -> Iterator[None]:
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


@contextmanager
def explain_misconfiguration() -> Iterator[None]:
    """Lightning finds some impossible settings only once it sees the data (e.g. a fraction of
    trainer.limit_train_batches that is less than one batch): one line naming them, exit 2."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except MisconfigurationException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"invalid trainer settings: {first}") from None
    except ValueError as exc:  # e.g. "`val_check_interval` (1000) must be less than or equal to ... (19)"
        from cnnfleet.config.schema import TrainerConfig

        text = " ".join(str(exc).split())
        named = [f.name for f in dataclasses.fields(TrainerConfig) if f"`{f.name}`" in text]
        if not named:
            raise
        raise ConfigError(f"invalid trainer settings: trainer.{named[0]}: {text}") from None
