"""The RunPlan: the launch facts of this process, computed once before anything is written.

Rank, launcher identity, run folder, the checkpoint to resume from (and why), then (inside the
task, where torch is imported) the device plan, world size and per-device batch. The folder
decision follows the run-folder rules (README "The run folder"):

- a new run gets a new folder; rank 0 creates it, takes its lock and writes state.json;
- an existing folder is continued only by the same run: an unfinished run (stopped, failed,
  killed) whose lock is free, with the same defining settings (run/resume.py); a completed run,
  a folder in use, a reused SLURM job id or torchrun --rdzv-id are refused with one line;
- `ckpt_path=last` continues the newest unfinished run of the task; `ckpt_path=<file>` continues
  the unfinished run that owns it, or starts a NEW run from it (a completed run, a file elsewhere).

Ranks > 0 never decide: Lightning's re-launch hands them rank 0's folder and checkpoint in argv,
SLURM/torchrun ranks compute the same keyed folder from the same read-only facts.
"""

import dataclasses
import os
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from cnnfleet.config.overrides import override_value, quote_value
from cnnfleet.errors import CheckpointError, ConfigError
from cnnfleet.launch import signals
from cnnfleet.launch.env import (
    Launcher,
    continued_run_dir,
    global_rank,
    launcher,
    lightning_launched_child,
    pin_slurm_rendezvous,
)
from cnnfleet.run.handoff import record_run_dir
from cnnfleet.run.layout import HYDRA_CONFIG, HYDRA_DIR, OVERRIDES, STATE_FILE
from cnnfleet.run.resume import (
    LAST,
    check_same_run,
    checkpoint_file,
    checkpoint_in_run_dir,
    newest_unfinished_run,
    owning_run_dir,
    runs_of_task,
)
from cnnfleet.run.smoke import smoke_run
from cnnfleet.run.state import FINISHED, RUNNING, RunLock, RunState, holder, is_locked

# what a folder may hold before its run's state.json: cnnfleet-submit's copy of the script, a lock,
# and what Hydra writes when a job starts (a run killed before its first state write, a sweep trial)
NOT_A_RUN_OK = {"job.sbatch", ".lock", ".hydra"}


@dataclass(frozen=True)
class RunPlan:
    rank: int
    launcher: Launcher
    run_dir: Path
    fresh: bool  # a new run (False: another attempt of the folder's run)
    resume_from: str | None  # the checkpoint the fit starts from
    reason: str  # why this folder and checkpoint, for the log
    extends: str | None = None  # a completed run this new run starts from
    devices: Any = None  # training.device.DevicePlan, set by with_devices() inside the task
    global_batch: int = 0
    ignored_env: dict | None = None  # inherited MASTER_ADDR/PORT a SLURM task replaced with its allocation's

    def with_devices(self, devices: Any, global_batch: int) -> "RunPlan":
        return dataclasses.replace(self, devices=devices, global_batch=global_batch)

    @property
    def world_size(self) -> int:
        return self.devices.world_size if self.devices is not None else 1

    @property
    def per_device_batch(self) -> int:
        """Global batch / world size; ConfigError when it does not divide."""
        from cnnfleet.launch.world import per_device_batch

        return per_device_batch(self.global_batch, self.world_size)

    def next_command(self) -> str:
        """How this run continues, from where it was started: a SLURM job is resubmitted into its folder
        (never `cnnfleet-train` on the login node), torchrun is started again with the same --rdzv-id."""
        if self.launcher.kind == "slurm":
            return f"cnnfleet-submit hydra.run.dir={self.run_dir} (with the job's other overrides)"
        if self.launcher.kind == "torchrun":
            return f"the same torchrun command (same --rdzv-id={self.launcher.job_id})"
        command = " ".join(["cnnfleet-train", *original_overrides(self.run_dir), "ckpt_path=last"])
        return f"{command} (or hydra.run.dir={self.run_dir} in place of ckpt_path=last)"

    def identity(self) -> dict[str, Any]:
        who = self.launcher
        return {"kind": who.kind, "job_id": who.job_id, "token": who.token, "restarts": who.restarts}


_lock: RunLock | None = None  # held by rank 0 for the life of the process


def original_overrides(run_dir: Path) -> list[str]:
    """The run's first command-line overrides (.hydra/overrides.yaml), shell-quoted, without the ones
    that choose the folder and checkpoint: what continuing it must repeat (its values define it)."""
    path = Path(run_dir) / HYDRA_DIR / OVERRIDES
    if not path.is_file():
        return []
    try:
        saved = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    chosen = ("ckpt_path", "hydra.run.dir")
    primary, folders = command_line_config_dirs(run_dir)
    flags = [f"--config-path {shlex.quote(primary)}"] if primary else []
    flags += [f"--config-dir {shlex.quote(folder)}" for folder in folders]
    return [*flags, *[shlex.quote(str(o)) for o in saved if str(o).partition("=")[0].lstrip("+~") not in chosen]]


def command_line_config_dirs(run_dir: Path) -> tuple[str | None, list[str]]:
    """The config folders the run's command line gave (Hydra records them in .hydra/hydra.yaml): the
    primary one when --config-path replaced cnnfleet's conf/, and every --config-dir or
    hydra.searchpath folder. A continuation needs the team's options again."""
    from cnnfleet.config.search_path import conf_dir

    try:
        hydra = yaml.safe_load((Path(run_dir) / HYDRA_DIR / HYDRA_CONFIG).read_text()) or {}
        sources = [s for s in hydra["hydra"]["runtime"]["config_sources"] if isinstance(s, dict)]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None, []
    files = [s for s in sources if s.get("schema") == "file"]
    primary = next((str(s["path"]) for s in files if s.get("provider") == "main"), None)
    given = ("command-line", "hydra.searchpath in command-line")  # --config-dir (Hydra's app; ours)
    folders = [str(s["path"]) for s in files if s.get("provider") in given]
    return (primary if primary not in (None, conf_dir()) else None), folders


def _devices_per_node(cfg: DictConfig) -> int:
    devices = cfg.device.devices if "device" in cfg else 1
    return devices if isinstance(devices, int) and devices > 0 else 1


def keyed_folder(runs: Path, who: Launcher) -> Path | None:
    """`slurm-<job id>` / `torchrun-<rdzv id>`; a submission whose token differs from the folder's
    (SLURM reused the job id) gets `<name>-<token>`, which every rank computes alike."""
    if who.folder_name is None:
        return None
    folder = runs / who.folder_name
    state = RunState.read(folder)
    if state is not None and who.token and state.identity.get("token") != who.token:
        folder = runs / f"{who.folder_name}-{who.token}"
    return folder


def _refuse_other_run(folder: Path, state: RunState, who: Launcher) -> None:
    """A fresh SLURM job (no token, first attempt) never takes over a folder a run already used."""
    if who.kind == "slurm" and who.token is None and who.restarts == 0 and state.attempts:
        raise ConfigError(
            f"{folder} already holds a run ({state.describe()}), so SLURM job id {who.job_id} was reused (or the job "
            "was started twice); a new job never takes over a run folder: submit with cnnfleet-submit (each "
            "submission gets its own identity) or pass hydra.run.dir=<new folder>"
        )


def _live_attempt(state: RunState) -> str | None:
    """'pid P on host H' when the last attempt's process still runs on this host (a lock file deleted by hand)."""
    last = state.attempts[-1] if state.attempts else {}
    if state.status != RUNNING or last.get("host") != socket.gethostname() or not last.get("pid"):
        return None
    try:
        os.kill(int(last["pid"]), 0)
    except (OSError, ValueError):
        return None
    return f"pid {last['pid']} on host {last['host']} since {last.get('started')}"


def _check_continuable(folder: Path, state: RunState, who: Launcher) -> None:
    user = holder(folder) if is_locked(folder) else _live_attempt(state)
    if user is not None:
        raise ConfigError(f"run folder {folder} is in use by {user}; wait for that run or use another folder")
    if state.status in FINISHED:
        fix = {
            "torchrun": "start with a new --rdzv-id for a new run",
            "slurm": "a new job of yours gets its own folder when submitted with cnnfleet-submit",
        }.get(who.kind, "leave hydra.run.dir out for a new folder")
        raise ConfigError(
            f"{folder} holds a {state.status} run ({state.describe()}); it is never resumed or overwritten: {fix}, or "
            f"start a new run from its weights with ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"
        )


def _check_empty_or_run(folder: Path) -> None:
    if folder.is_file():
        raise ConfigError(f"hydra.run.dir={folder} is a file; pass a folder")
    for parent in folder.parents:
        if (parent / STATE_FILE).is_file():
            raise ConfigError(f"hydra.run.dir={folder} is inside the run folder {parent}; choose a folder outside it")
    if folder.is_dir() and {p.name for p in folder.iterdir() if p.suffix != ".log"} - NOT_A_RUN_OK:
        raise ConfigError(
            f"{folder} is not empty and is not a cnnfleet run folder (no state.json); choose a new or empty folder"
        )


def _continue_folder(folder: Path, who: Launcher, ckpt: Path | None, new_config: dict, why: str) -> tuple:
    """(fresh, checkpoint, reason) for a folder that exists or is about to be created."""
    state = RunState.read(folder)
    if state is None:
        _check_empty_or_run(folder)
        return True, ckpt, why or "new run"
    _refuse_other_run(folder, state, who)
    _check_continuable(folder, state, who)
    check_same_run(folder, new_config)
    ckpt = ckpt or checkpoint_in_run_dir(folder)
    where = str(ckpt) if ckpt else "the start (no checkpoint was written)"
    return False, ckpt, f"{why or 'continues its unfinished run'} ({state.status}); resumes from {where}"


def given_folder(overrides: list[str], env: Mapping[str, str]) -> str | None:
    """hydra.run.dir from the command line, else the run a follow-up SLURM job continues (CNNFLEET_RUN_DIR)."""
    given = override_value(overrides, "hydra.run.dir")
    return given if given is not None else continued_run_dir(env)


def decide(cfg: DictConfig, overrides: list[str], env: Mapping[str, str], new_config: dict) -> RunPlan:
    """Rank 0's decision (read-only): folder, fresh or continued, checkpoint. ConfigError/CheckpointError."""
    who = launcher(env)
    runs = runs_of_task(cfg.paths.log_dir, cfg.task_name)
    given = given_folder(overrides, env)
    value = cfg.ckpt_path
    ckpt = checkpoint_file(value) if value not in (None, LAST) else None
    if not cfg.train:
        return _test_only(cfg, who, given, value, ckpt)
    folder = Path(given).absolute() if given is not None else keyed_folder(runs, who)
    extends, why = None, ""
    if folder is None and value == LAST:
        folder, why = newest_unfinished_run(runs), "ckpt_path=last: the newest unfinished run"
    elif folder is None and ckpt is not None:
        owner = owning_run_dir(ckpt)
        state = RunState.read(owner) if owner is not None else None
        if state is not None and state.status not in FINISHED:
            folder, why = owner, f"ckpt_path={ckpt.name} belongs to this unfinished run"
        elif state is not None:
            if cfg.train:
                check_same_run(owner, new_config, extending=True)  # it continues the run's training state
            extends = str(owner)
    if folder is None:
        start = f"starts from the weights of {ckpt}" if ckpt else "new run"
        return RunPlan(
            0, who, Path(str(cfg.hydra.run.dir)).absolute(), True, str(ckpt) if ckpt else None, start, extends
        )
    fresh, resume, reason = _continue_folder(folder, who, ckpt, new_config, why)
    if fresh and value == LAST and not (given or who.folder_name):
        raise CheckpointError(f"ckpt_path=last: {folder} holds no run")
    return RunPlan(0, who, folder, fresh, str(resume) if resume else None, reason, extends)


def _test_only(cfg: DictConfig, who: Launcher, given: str | None, value: str | None, ckpt: Path | None) -> RunPlan:
    """train=false tests a checkpoint in a NEW folder: it never continues, completes or rewrites a run."""
    if value == LAST:
        raise CheckpointError("train=false tests a checkpoint: pass ckpt_path=<file> (ckpt_path=last resumes training)")
    folder = Path(given).absolute() if given is not None else Path(str(cfg.hydra.run.dir)).absolute()
    if RunState.read(folder) is not None:
        raise ConfigError(f"{folder} holds a run; a test-only run (train=false) writes its own new folder")
    _check_empty_or_run(folder)
    owner = owning_run_dir(ckpt) if ckpt is not None else None
    reason = f"tests {ckpt}" if ckpt else "tests an untrained model"
    return RunPlan(0, who, folder, True, str(ckpt) if ckpt else None, reason, str(owner) if owner else None)


def follow(cfg: DictConfig, overrides: list[str], env: Mapping[str, str], rank: int) -> RunPlan:
    """A rank > 0: rank 0's folder (given in argv by Lightning, or the launcher's keyed folder)."""
    who = launcher(env)
    given = given_folder(overrides, env)
    folder = (
        Path(given).absolute()
        if given is not None
        else keyed_folder(runs_of_task(cfg.paths.log_dir, cfg.task_name), who)
    )
    if folder is None:
        raise ConfigError(
            f"this process is rank {rank} (NODE_RANK/LOCAL_RANK set) but no hydra.run.dir was given; "
            "pass rank 0's run folder as hydra.run.dir=<folder>, or start the nodes with torchrun --rdzv-id"
        )
    value = cfg.ckpt_path
    if value not in (None, LAST):
        resume = checkpoint_file(value)
    elif lightning_launched_child(env):
        resume = None  # rank 0 wrote its decision into our argv: ckpt_path=null means none
    else:  # SLURM/torchrun ranks look where rank 0 looks, before anything new is written
        resume = checkpoint_in_run_dir(folder) if RunState.read(folder) is not None else None
    return RunPlan(rank, who, folder, False, str(resume) if resume else None, "follows rank 0")


def plan_launch(cfg: DictConfig, overrides: list[str], env: Mapping[str, str], new_config: dict) -> RunPlan:
    """Compute this process's plan; rank 0 then owns its folder (lock, and state.json when new)."""
    ignored = pin_slurm_rendezvous()  # before Lightning reads them
    rank = global_rank(env, devices_per_node=_devices_per_node(cfg))
    who = launcher(env)
    unnamed = who.kind == "torchrun" and who.job_id == "none" and int(env.get("WORLD_SIZE", "1")) > 1
    if unnamed and override_value(overrides, "hydra.run.dir") is None:
        raise ConfigError(
            "torchrun without --rdzv-id: pass the same --rdzv-id=<run name> on every node "
            "(or hydra.run.dir=<shared folder>) so all ranks write to one run folder"
        )
    check_schedule(cfg)
    plan = follow(cfg, overrides, env, rank) if rank > 0 else decide(cfg, overrides, env, new_config)
    # rank 0 decides (ranks > 0 always follow its folder, which Lightning's re-launch passes them)
    if rank == 0 and smoke_run(cfg.trainer) and not plan.fresh:
        raise ConfigError(
            f"a smoke run (debug=fast_dev_run / debug=overfit) starts a run folder of its own, but this command would "
            f"continue {plan.run_dir}; leave out ckpt_path and hydra.run.dir"
        )
    if rank == 0:
        _own(plan)  # the decision was read-only; from here on the folder is ours
        record_run_dir(who.job_id if who.kind == "slurm" else None, plan.run_dir)  # for the batch shell
    return dataclasses.replace(plan, ignored_env=ignored)


def _own(plan: RunPlan) -> None:
    """Rank 0: lock the folder for the life of the process; a new run gets its state.json."""
    global _lock
    if _lock is not None:
        _lock.release()  # the previous trial of this process (a local multirun)
    _lock = RunLock(plan.run_dir)
    _lock.acquire()
    if plan.fresh:
        RunState(identity=plan.identity(), extends=plan.extends).write(plan.run_dir)


def argv_overrides(plan: RunPlan, cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The command line every process of this run parses (Lightning re-launches it for ranks > 0):
    the decided folder and checkpoint, and no second config dump over a continued run's."""
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in ("ckpt_path", "hydra.run.dir")]
    extra = [f"hydra.run.dir={quote_value(str(plan.run_dir))}"]
    extra.append(f"ckpt_path={quote_value(plan.resume_from)}" if plan.resume_from else "ckpt_path=null")
    if (not plan.fresh or plan.rank > 0) and override_value(overrides, "hydra.output_subdir") is None:
        extra.append("hydra.output_subdir=null")  # .hydra/ keeps the first attempt's record
    if plan.rank > 0 and override_value(overrides, "hydra.job.name") is None:
        extra.append(f"hydra.job.name={cfg.task_name}_rank{plan.rank}")  # its own log file
    return kept + extra


def check_schedule(cfg: DictConfig) -> None:
    """A training schedule that does nothing is refused (it would 'complete' an untrained model)."""
    if not cfg.train and not cfg.test:
        raise ConfigError("train=false and test=false: nothing to do; set train=true, or test=true to test a ckpt_path")
    if not cfg.train:
        return
    trainer = cfg.trainer
    if trainer.max_epochs is not None and trainer.max_epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={trainer.max_epochs} trains nothing; use >= 1 (or train=false to only test)"
        )
    if trainer.max_steps == 0:
        raise ConfigError("trainer.max_steps=0 trains nothing; use >= 1, or -1 for no step limit")
    if trainer.max_time is not None and not any(int(part) for part in str(trainer.max_time).split(":")):
        raise ConfigError(f"trainer.max_time={trainer.max_time} trains nothing; give a duration, e.g. 00:02:00:00")
    if trainer.limit_train_batches is not None and trainer.limit_train_batches <= 0:
        raise ConfigError(
            f"trainer.limit_train_batches={trainer.limit_train_batches} trains nothing; use a fraction in (0, 1], "
            "a batch count >= 1, or null for all batches"
        )


def requeued_trial(run_dir: Path, who: Launcher) -> RunState | None:
    """The trial folder's state when this SLURM job already ran in it (it was requeued), else None."""
    state = RunState.read(run_dir)
    if state is None or who.kind != "slurm" or state.identity.get("job_id") != who.job_id:
        return None
    return state


def plan_trial(cfg: DictConfig, env: Mapping[str, str] | None = None) -> RunPlan:
    """A multirun trial (no command line of its own): its folder, which Hydra made; rank 0 owns it.
    A launcher=slurm trial whose job was requeued (SIGUSR1 before its time limit) finds its own
    earlier attempt there and continues it from its newest checkpoint."""
    env = os.environ if env is None else env
    who = launcher(env)
    if who.kind == "slurm":
        signals.install(requeue=True)  # ours replace submitit's (it requeues by re-running the whole trial)
    ignored = pin_slurm_rendezvous()  # a launcher=slurm trial is a SLURM task too
    check_schedule(cfg)
    rank = global_rank(env, devices_per_node=_devices_per_node(cfg))
    run_dir = Path(str(cfg.paths.output_dir)).absolute()
    ckpt = checkpoint_file(cfg.ckpt_path) if cfg.ckpt_path not in (None, LAST) else None
    earlier = requeued_trial(run_dir, who)
    if earlier is not None:
        resume = checkpoint_in_run_dir(run_dir) or ckpt
        plan = RunPlan(
            rank,
            who,
            run_dir,
            False,
            str(resume) if resume else None,
            f"requeued trial ({earlier.status}); resumes from {resume or 'the start'}",
            ignored_env=ignored,
        )
    else:
        plan = RunPlan(rank, who, run_dir, True, str(ckpt) if ckpt else None, "multirun trial", ignored_env=ignored)
    if rank == 0:
        _own(plan)
    return plan
