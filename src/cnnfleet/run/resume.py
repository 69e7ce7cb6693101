"""Which run folder a command continues, and from which checkpoint: read-only queries on run folders.

The rules (README "The run folder"): `ckpt_path=last` is the newest run of the task that did not
complete (stopped, failed, or running with a dead lock holder); a completed run is never resumed
implicitly; a resumed run must keep what defines it (model, data, batch, seed, and the schedule's
length when the schedule cannot be extended).
"""

from pathlib import Path

import yaml

from cnnfleet.config.domains import expand_user
from cnnfleet.errors import CheckpointError, ConfigError
from cnnfleet.run.layout import CHECKPOINTS_DIR, CONFIG_FILE, HYDRA_DIR, LAST_CKPT, STATE_FILE
from cnnfleet.run.state import COMPLETED, STOPPED, UNFINISHED, RunState, is_locked

LAST = "last"
# what defines a run: changing one of these between attempts makes another run
DEFINING_KEYS = (
    "model",
    "seed",
    "optimizer._target_",
    "scheduler._target_",
    "data._target_",
    "data.num_classes",
    "data.channels",
    "data.image_size",
    "data.batch_size",
    "data.val_fraction",
    "data.test_fraction",
    "data.split_seed",
    "data.classes",
    "data.shuffle_window",
    "trainer.accumulate_grad_batches",
)
# schedules planned for a fixed number of steps (torch's OneCycleLR fails past its end)
FIXED_LENGTH_SCHEDULES = ("cnnfleet.training.schedulers.one_cycle",)
SCHEDULE_LENGTH_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches")


def owning_run_dir(ckpt: Path) -> Path | None:
    """The run folder of `<run>/checkpoints/x.ckpt` or `<run>/hpc_ckpt_N.ckpt`, or None elsewhere."""
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run if (run / STATE_FILE).is_file() or (run / HYDRA_DIR).is_dir() else None


def checkpoint_in_run_dir(run_dir: Path) -> Path | None:
    """The newest resumable checkpoint a run folder holds (hpc_ckpt_N.ckpt from a SLURM preemption,
    or checkpoints/last.ckpt, whichever was written last), or None."""
    candidates = [*Path(run_dir).glob("hpc_ckpt_*.ckpt"), Path(run_dir) / CHECKPOINTS_DIR / LAST_CKPT]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def runs_of_task(log_dir: str, task_name: str) -> Path:
    return Path(log_dir) / task_name / "runs"


def newest_unfinished_run(runs: Path) -> Path:
    """The run `ckpt_path=last` continues: the newest unfinished one with a checkpoint to resume from, or one a
    user stopped before its first checkpoint (it starts over in its folder); a run that failed or was killed at
    start-up has nothing to resume. CheckpointError saying why when there is none."""
    states = []
    for folder in runs.glob("*"):
        try:
            state = RunState.read(folder)
        except ConfigError:
            continue  # an unreadable state file is reported when that folder is used directly
        if state is not None:
            states.append((folder, state))
    states.sort(key=lambda pair: (pair[0] / STATE_FILE).stat().st_mtime)
    resumable = [
        folder
        for folder, state in states
        if state.status in UNFINISHED
        and not is_locked(folder)
        and (checkpoint_in_run_dir(folder) or state.status == STOPPED)
    ]
    if resumable:
        return resumable[-1]
    completed = [(folder, state) for folder, state in states if state.status == COMPLETED]
    running = [folder for folder, state in states if state.status in UNFINISHED and is_locked(folder)]
    why = f"no run of this task under {runs} is unfinished with something to resume"
    if running:
        why += f" ({len(running)} still running: {running[-1].name})"
    if completed:
        folder = completed[-1][0]
        why += f"; the newest, {folder.name}, completed and is never resumed implicitly"
        if (folder / CHECKPOINTS_DIR / LAST_CKPT).is_file():
            why += f" (a new run can start from its state: ckpt_path={folder / 'checkpoints' / 'last.ckpt'})"
    else:
        why += "; train first, or pass ckpt_path=<file>"
    raise CheckpointError(f"ckpt_path=last: {why}")


def checkpoint_file(value: str) -> Path:
    """An explicit ckpt_path as an absolute file; CheckpointError when it is not a file."""
    ckpt = expand_user(value)
    if ckpt.is_dir():
        raise CheckpointError(f"ckpt_path={value} is a folder; pass a .ckpt file in it, or ckpt_path=last")
    if not ckpt.is_file():
        raise CheckpointError(f"ckpt_path: no such checkpoint file '{value}' (pass an existing .ckpt or `last`)")
    return ckpt.resolve()


def flatten(config: dict, prefix: str = "") -> dict:
    """{'model.widths': [...], ...}: the leaves of a nested config."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


def saved_config(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CONFIG_FILE
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def config_changes(saved: dict, new: dict) -> dict[str, list]:
    """{key: [saved, new]} for every defining (or schedule-length) leaf that differs."""
    old, now = flatten(saved), flatten(new)
    defining = list(DEFINING_KEYS)
    if old.get("scheduler._target_") in FIXED_LENGTH_SCHEDULES:
        defining += [*SCHEDULE_LENGTH_KEYS, "scheduler"]

    def is_defining(key: str) -> bool:
        return any(key == d or key.startswith(d + ".") for d in defining)

    keys = sorted(k for k in old.keys() | now.keys() if is_defining(k))
    return {key: [old.get(key), now.get(key)] for key in keys if old.get(key) != now.get(key)}


def check_same_run(run_dir: Path, new_config: dict, extending: bool = False) -> None:
    """ConfigError naming every key that would make this attempt another run than the folder's.
    `extending`: a new run continues the training state of this (completed) run's checkpoint."""
    saved = saved_config(run_dir)
    if saved is None:
        return  # the first attempt stopped before writing its config: nothing to compare with
    changes = config_changes(saved, new_config)
    if not changes:
        return
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    fixed_length = flatten(saved).get("scheduler._target_") in FIXED_LENGTH_SCHEDULES
    one_cycle = fixed_length and any(key in SCHEDULE_LENGTH_KEYS or key.startswith("scheduler.") for key in changes)
    why = "the one-cycle schedule was planned for the original length" if one_cycle else "these define the run"
    if extending:
        raise ConfigError(
            f"ckpt_path is a checkpoint of the completed run {run_dir.name}, whose training state (model, optimizer, "
            f"schedule, step) a new run continues, but these settings differ: {listed}; "
            + (
                "a one-cycle schedule ends with its run, so it cannot be trained for more epochs: start a new run"
                if one_cycle
                else "use the run's values"
            )
        )
    raise ConfigError(
        f"cannot continue {run_dir.name} with other settings ({listed}): {why}; resume with the run's values, or "
        f"start a new run from its weights with model.init_from={run_dir / 'checkpoints' / 'last.ckpt'}"
    )
