"""Find the checkpoint a resumed run starts from, and the run folder that owns it."""

from pathlib import Path

from cnnfleet.errors import CheckpointError

LAST = "last"


def owning_run_dir(ckpt: Path) -> Path | None:
    """The run folder of `<run>/checkpoints/x.ckpt`, or None for a checkpoint elsewhere."""
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def latest_last_checkpoint(log_dir: str, task_name: str) -> Path:
    """The newest `<log_dir>/<task>/runs/*/checkpoints/last.ckpt`; CheckpointError if none."""
    runs = Path(log_dir) / task_name / "runs"
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"ckpt_path=last: no run with checkpoints/last.ckpt under {runs}; train first, or pass ckpt_path=<file>"
        )
    return found[-1]


def resolve_resume(value: str, log_dir: str, task_name: str, run_dir: str | None) -> tuple[str, str | None]:
    """Return (absolute checkpoint path, owning run folder or None).

    `last` means the last.ckpt of `run_dir` when given (a requeued or re-launched rank),
    else the newest last.ckpt of this task. Raises CheckpointError when nothing is found.
    """
    if value == LAST:
        own = Path(run_dir) / "checkpoints" / "last.ckpt" if run_dir else None
        ckpt = own if own is not None and own.is_file() else latest_last_checkpoint(log_dir, task_name)
    else:
        ckpt = Path(value).expanduser()
        if not ckpt.is_file():
            raise CheckpointError(f"ckpt_path: no such checkpoint file '{value}' (pass an existing .ckpt or `last`)")
    ckpt = ckpt.resolve()
    owner = owning_run_dir(ckpt)
    return str(ckpt), (str(owner) if owner is not None else None)


def checkpoint_in_run_dir(run_dir: Path) -> Path | None:
    """The newest resumable checkpoint a run folder already holds, or None for a fresh folder.

    A requeued SLURM job (or a restarted torchrun job) lands in its keyed folder again: it
    continues from Lightning's hpc_ckpt_N.ckpt (saved on SIGUSR1) or from checkpoints/last.ckpt,
    whichever was written last, instead of starting over and overwriting them.
    """
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def checkpoint_to_resume(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The explicit ckpt_path (already resolved by the CLI), else what the run folder holds."""
    if ckpt_path is not None:
        return ckpt_path
    found = checkpoint_in_run_dir(run_dir)
    return str(found) if found is not None else None
