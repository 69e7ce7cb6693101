"""`python -m cnnfleet.cluster.job_end <status>`: the batch shell's last word on its run, after srun.

Rank 0 records every end it lives through (completed, stopped, requeued, failed). An end it does
not live through (a rank killed by the OOM killer or by hand, then the others by srun's
--kill-on-bad-exit; a node lost) would leave state.json saying `running`: here the batch shell,
which outlives its tasks, records it as failed with srun's exit status, and says how to continue.
"""

import os
import sys

from cnnfleet.run.files import write_text_atomic
from cnnfleet.run.handoff import handoff_dir, run_dir_of
from cnnfleet.run.state import FAILED, RUNNING, RunState, is_locked
from cnnfleet.run.summary import write_failure

TASKS_LOST = "TasksLost"  # summary.json "error": the tasks died without a word (the sweep retries such trials)


def record_end(job_id: str, status: int) -> str | None:
    """The line reporting an unrecorded end of this job's run, or None when rank 0 recorded it."""
    run_dir = run_dir_of(job_id)
    if run_dir is None:
        return None
    state = RunState.read(run_dir)
    if state is None or state.status != RUNNING or is_locked(run_dir):
        return None
    reason = (
        f"the job's tasks ended without a record (srun exit status {status}): a task was killed "
        "(out of memory, a signal) or lost its node"
    )
    state.end_attempt(run_dir, FAILED, reason, state.step, state.epoch)
    write_failure(run_dir, reason, error=TASKS_LOST)
    return f"cnnfleet: {run_dir}: {reason}; continue with: cnnfleet-submit hydra.run.dir={run_dir}"


def record_exit(job_id: str, status: int) -> None:
    """`job-<id>.exit` beside the script: the job's exit status for a sweep driver (no sacct needed), also
    when the tasks failed before they chose a run folder (a bad value: exit 2)."""
    folder = handoff_dir()
    if folder is not None and folder.is_dir():
        write_text_atomic(folder / f"job-{job_id}.exit", f"{status}\n")


def main() -> None:
    status = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else -1
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        record_exit(job_id, status)
    line = record_end(job_id, status) if job_id else None
    if line:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
