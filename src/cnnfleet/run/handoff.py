"""Files a cnnfleet-submit job leaves beside its script (the submission folder) for its batch shell.

The batch shell cannot ask Python which run folder its tasks chose (slurm-<id>, slurm-<id>-<token>
or a continued run's folder), and where `scontrol requeue` is unavailable inside the job step (a
container without SLURM's tools) it is the batch shell, outside the container, that submits the
follow-up job. So rank 0 writes:

- `job-<id>.run`: the run folder this job trains (read by `cnnfleet.cluster.job_end`);
- `job-<id>.follow-up`: present when the job asks for a follow-up job (`sbatch --dependency=afterany`
  with CNNFLEET_RUN_DIR set), which the batch shell submits and then deletes.
"""

from pathlib import Path

from cnnfleet.launch.env import submission_script
from cnnfleet.run.files import write_text_atomic


def handoff_dir() -> Path | None:
    """The submission folder of this job's script, or None (a hand-written script, a sweep trial)."""
    script = submission_script()
    return Path(script).parent if script else None


def record_run_dir(job_id: str | None, run_dir: Path) -> None:
    folder = handoff_dir()
    if job_id is not None and folder is not None and folder.is_dir():
        write_text_atomic(folder / f"job-{job_id}.run", f"{run_dir}\n")


def run_dir_of(job_id: str) -> Path | None:
    folder = handoff_dir()
    path = folder / f"job-{job_id}.run" if folder is not None else None
    return Path(path.read_text().strip()) if path is not None and path.is_file() else None


def request_follow_up(job_id: str) -> bool:
    """Ask the batch shell for a follow-up job; False where there is no batch shell of ours to ask."""
    folder = handoff_dir()
    if folder is None or not (folder / f"job-{job_id}.run").is_file():
        return False
    write_text_atomic(folder / f"job-{job_id}.follow-up", "requested\n")
    return True
