"""One attempt of a run, as rank 0 records it: opened after every check passed, closed with its exit.

A fresh run writes its record (config.yaml, env.json) once; a continued run keeps them and adds
an attempt to state.json with what changed, appends its command line, and cuts metrics.csv back
to the step it resumed from, so the metrics never hold rows the resumed run will write again.
"""

import csv
import io
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnnfleet.run.files import write_text_atomic
from cnnfleet.run.layout import CONFIG_FILE, METRICS_FILE
from cnnfleet.run.record import append_command, command_line, plain_config, write_run_record
from cnnfleet.run.resume import flatten, saved_config
from cnnfleet.run.state import RunState


def changed_settings(saved: dict | None, new: dict) -> dict[str, list]:
    """{key: [first attempt's value, this attempt's]} for every leaf that differs."""
    if saved is None:
        return {}
    old, now = flatten(saved), flatten(new)
    return {
        key: [old.get(key), now.get(key)] for key in sorted(old.keys() | now.keys()) if old.get(key) != now.get(key)
    }


def truncate_metrics(run_dir: Path, resumed_step: int) -> int:
    """Drop the metrics.csv rows of optimizer steps after `resumed_step` (a step-k row carries k - 1,
    Lightning's convention); the number of rows dropped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if row.get("step") in (None, "") or int(float(row["step"])) < resumed_step]
    if len(kept) == len(rows):
        return 0
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    write_text_atomic(path, out.getvalue())
    return len(rows) - len(kept)


def open_attempt(
    cfg: DictConfig,
    run_dir: Path,
    environment: dict,
    fresh: bool,
    resumed_step: int | None,
    restarts: int,
    job_id: str | None = None,
) -> RunState:
    """Rank 0, once every check has passed: the record, the metrics cut, state.json 'running'.
    `restarts`: the launcher's restart count (SLURM requeues, torchrun restarts) for this attempt."""
    state = RunState.read(run_dir)
    assert state is not None, "the launch plan writes state.json before the task runs"
    first = fresh or not (Path(run_dir) / CONFIG_FILE).is_file()  # an earlier attempt died before its record
    changed = {} if first else changed_settings(saved_config(run_dir), plain_config(cfg))
    if first:
        write_run_record(cfg, run_dir, environment)
    else:
        append_command(run_dir)
        truncate_metrics(run_dir, resumed_step or 0)
    state.begin_attempt(run_dir, resumed_step, command_line(), changed, restarts, job_id)
    return state


class Attempt:
    """Rank 0's record of this attempt in state.json: opened once the checks pass, closed exactly once."""

    def __init__(self, run_dir: Path, rank: int, fresh: bool, restarts: int, job_id: str | None = None) -> None:
        self.run_dir, self.rank, self.fresh, self.restarts = Path(run_dir), rank, fresh, restarts
        self.job_id = job_id
        self.state: RunState | None = None
        self.status: str | None = None
        self.step, self.epoch = 0, 0

    @classmethod
    def of(cls, plan: Any) -> "Attempt":
        """From a run.plan.RunPlan."""
        return cls(plan.run_dir, plan.rank, plan.fresh, plan.launcher.restarts, plan.launcher.job_id)

    def open(self, cfg: DictConfig, environment: dict, resumed_step: int | None) -> None:
        self.step = resumed_step or 0
        if self.rank == 0:
            self.state = open_attempt(
                cfg, self.run_dir, environment, self.fresh, resumed_step, self.restarts, self.job_id
            )

    def at(self, step: int, epoch: int) -> None:
        self.step, self.epoch = step, epoch

    def enter_phase(self, phase: str, step: int) -> None:
        """Rank 0 records the phase the attempt enters (state.json); other ranks keep the step only."""
        self.step = step
        if self.state is not None:
            self.state.enter_phase(self.run_dir, phase, step)

    def close(self, status: str, reason: str) -> bool:
        """Record how the attempt ended; True where rank 0 may write the run's summary. A continued
        run whose checks failed is left exactly as it was (its attempt never began)."""
        self.status = status
        if self.state is not None:
            self.state.end_attempt(self.run_dir, status, reason, self.step, self.epoch)
            return True
        if self.rank == 0 and self.fresh:  # a new run that failed or stopped before its attempt opened
            state = RunState.read(self.run_dir)
            if state is not None:
                state.begin_attempt(self.run_dir, None, command_line(), {}, self.restarts, self.job_id)
                state.end_attempt(self.run_dir, status, reason, self.step, self.epoch)
            return True
        return False
