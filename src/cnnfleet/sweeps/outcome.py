"""How a trial ended, read from its run folder (and its exit code when known), in four classes.

* complete / pruned: told to Optuna with the trial's value;
* fail: the trial itself is wrong (bad input: exit 2 or a CnnfleetError; a diverging loss; a bug)
  and would fail again: told as FAIL, never retried;
* retry: the infrastructure failed it (a rank lost, tasks killed without a record, a node lost,
  stopped by a signal without a requeue): run again in its own folder, resuming from its
  checkpoint, up to hydra.sweeper.max_retries times.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from cnnfleet.run.layout import SUMMARY_FILE

COMPLETE, PRUNED, FAIL, RETRY = "complete", "pruned", "fail", "retry"
INFRASTRUCTURE_ERRORS = {"RankLost", "TasksLost"}  # summary.json "error" classes worth another attempt
BAD_INPUT_EXIT = 2


@dataclass(frozen=True)
class Outcome:
    kind: str
    reason: str
    value: float | None = None


def read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def judge(run_dir: Path, exit_code: int | None, last_line: str | None = None) -> Outcome:
    """The class of a trial whose processes have ended."""
    summary = read_summary(run_dir)
    status = summary.get("status")
    value = (summary.get("optimized") or {}).get("value")
    if status == "completed":
        if value is None or not math.isfinite(float(value)):
            return Outcome(FAIL, f"the trial reported no finite value ({value})")
        return Outcome(COMPLETE, "completed", float(value))
    if status == "pruned":
        return Outcome(PRUNED, summary.get("reason") or "pruned", float(value) if value is not None else None)
    if status == "failed":
        reason = summary.get("reason") or "failed"
        return Outcome(RETRY if summary.get("error") in INFRASTRUCTURE_ERRORS else FAIL, reason)
    if status == "stopped":  # a signal without a requeue: preempted, scancel'ed, the node drained
        return Outcome(RETRY, summary.get("reason") or "stopped by a signal")
    # no summary: the processes ended before writing one
    if exit_code == BAD_INPUT_EXIT:
        return Outcome(FAIL, last_line or "the trial's command was refused (exit 2: bad input)")
    if exit_code == 0:
        return Outcome(FAIL, "the trial exited 0 without writing summary.json")
    if exit_code == 1 and last_line and "internal error" in last_line:
        return Outcome(FAIL, last_line)
    code = "unknown" if exit_code is None else exit_code
    return Outcome(RETRY, f"the trial's processes ended without a record (exit {code}): killed, or their node lost")
