"""Run folders under a logs root, each read into one row; a damaged folder becomes a status, never an error.

A run folder is one that holds state.json or summary.json, or `.hydra/` with train.log (a training
job killed before its first record). The status comes from state.json (rank 0 writes it atomically);
`running` is checked against the folder's lock, which the kernel frees when the owner dies
(run/state.py), so a run that was killed shows `interrupted`, not `running`. summary.json (written
when a run ends) gives the metrics, device, world size and wall time; config.yaml fills the device
of a run that has not ended yet.
"""

import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from cnnfleet.run.layout import CONFIG_FILE, HYDRA_DIR, SUMMARY_FILE
from cnnfleet.run.smoke import smoke_run
from cnnfleet.run.state import COMPLETED, FAILED, PRUNED, RUNNING, STATE_FILE, STOPPED, is_locked

INTERRUPTED = "interrupted"  # state.json says running, but no process holds the lock: killed, or its node lost
INCOMPLETE = "incomplete"  # no state.json: Hydra started the job, which ended before its first record
UNREADABLE = "unreadable"  # state.json is not valid JSON (damaged, or written by hand)
# folders inside a run (or a sweep) that never hold run folders: not walked
NOT_RUNS = {"wandb", "checkpoints", "tensorboard", "mlruns", ".hydra", "submissions", "__pycache__"}


@dataclass
class RunRecord:
    path: Path
    name: str  # the folder relative to the logs root
    task: str  # task_name: the first folder under the logs root
    status: str
    started: datetime | None = None  # the first attempt's start (UTC)
    wall_seconds: float | None = None  # summary.json's, or the time so far of a running run
    device: str | None = None  # "cpu x1", "cuda x8"
    world_size: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # final val/* and test/*
    note: str = ""  # why it failed or stopped, or what is wrong with the folder


def is_run_folder(files: set[str], dirs: set[str]) -> bool:
    return bool({STATE_FILE, SUMMARY_FILE} & files) or (".hydra" in dirs and "train.log" in files)


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (runs/, multiruns/<time>/<n>/, sweeps/<study>/<n>/), in name order."""
    found = []
    for current, dirs, files in os.walk(root, onerror=None):
        if is_run_folder(set(files), set(dirs)):
            found.append(Path(current))
            dirs[:] = []  # a run folder holds no other run
        else:
            dirs[:] = sorted(d for d in dirs if d not in NOT_RUNS)
    return sorted(found)


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None); (None, None) when the file is absent; (None, 'why') when it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name} unreadable (not a JSON object)"
    return data, None


def read_config(run_dir: Path) -> dict | None:
    """The run's resolved config (config.yaml; Hydra's .hydra/config.yaml before it exists), None if unreadable."""
    for path in (run_dir / CONFIG_FILE, run_dir / HYDRA_DIR / CONFIG_FILE):
        with contextlib.suppress(OSError, yaml.YAMLError):
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict):
                return data
    return None


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _owner_alive(run_dir: Path, state: dict) -> bool:
    """The folder's lock is held, or (a lock file deleted by hand) the last attempt's pid lives on this host."""
    with contextlib.suppress(OSError):
        if is_locked(run_dir):
            return True
    last = (state.get("attempts") or [{}])[-1]
    if not isinstance(last, dict) or last.get("host") != socket.gethostname() or not last.get("pid"):
        return False
    try:
        os.kill(int(last["pid"]), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _status(run_dir: Path, state: dict | None, summary: dict | None, problems: list[str]) -> str:
    if state is None or not isinstance(state.get("status"), str):
        if summary is not None and isinstance(summary.get("status"), str):
            return summary["status"]  # a run that wrote its summary but no state (an early failure)
        return UNREADABLE if (run_dir / STATE_FILE).exists() else INCOMPLETE
    status = state["status"]
    if status == RUNNING and not _owner_alive(run_dir, state):
        problems.append("no process holds the lock: killed or its node lost")
        return INTERRUPTED
    return status


def _why(status: str, state: dict | None, summary: dict | None) -> str | None:
    """A failed, stopped or pruned run's one-line reason."""
    if status not in (FAILED, STOPPED, PRUNED, INTERRUPTED):
        return None
    if summary and summary.get("reason"):
        return str(summary["reason"])
    attempts = (state or {}).get("attempts") or [{}]
    last = attempts[-1] if isinstance(attempts[-1], dict) else {}
    return str(last.get("exit") or "") or None


def _metrics(summary: dict) -> dict[str, float]:
    fit, test = summary.get("fit") or {}, summary.get("test") or {}
    merged = {
        **(fit.get("final_val") or {} if isinstance(fit, dict) else {}),
        **(test if isinstance(test, dict) else {}),
    }
    return {key: float(value) for key, value in merged.items() if isinstance(value, int | float)}


def _device_from_config(run_dir: Path) -> tuple[str | None, int | None]:
    device = (read_config(run_dir) or {}).get("device")
    if not isinstance(device, dict):
        return None, None
    devices, nodes = device.get("devices"), device.get("num_nodes", 1)
    world = devices * nodes if isinstance(devices, int) and isinstance(nodes, int) else None
    accelerator = str(device.get("accelerator", "?"))
    return (f"{accelerator} x{devices}" if isinstance(devices, int) else accelerator), world


def read_run(run_dir: Path, root: Path) -> RunRecord:
    """The row of one run folder; whatever is missing or damaged is left empty and named in `note`."""
    relative = run_dir.relative_to(root)
    problems: list[str] = []
    state, state_problem = read_json(run_dir / STATE_FILE)
    summary, summary_problem = read_json(run_dir / SUMMARY_FILE)
    problems += [p for p in (state_problem, summary_problem) if p]
    record = RunRecord(
        path=run_dir,
        name=str(relative),
        task=relative.parts[0] if len(relative.parts) > 1 else "-",
        status=_status(run_dir, state, summary, problems),
    )
    attempts = [a for a in (state or {}).get("attempts") or [] if isinstance(a, dict)]
    record.started = _time(attempts[0].get("started")) if attempts else None
    if record.started is None:
        with contextlib.suppress(OSError):
            record.started = datetime.fromtimestamp(run_dir.stat().st_mtime, timezone.utc)
    if summary is not None:
        device = summary.get("device") if isinstance(summary.get("device"), dict) else {}
        record.device = str(device["description"]).split(",")[0] if device.get("description") else None
        record.world_size = device.get("world_size")
        record.wall_seconds = summary.get("wall_seconds")
        record.metrics = _metrics(summary)
    if record.device is None:
        record.device, world = _device_from_config(run_dir)
        record.world_size = record.world_size or world
    if record.status == RUNNING and attempts and (since := _time(attempts[-1].get("started"))):
        record.wall_seconds = (datetime.now(timezone.utc) - since).total_seconds()
        problems.append("time so far")
    why = _why(record.status, state, summary)
    if smoke := _smoke(run_dir, summary):  # a smoke run's numbers are no result: never listed as one
        record.status = "smoke" if record.status == COMPLETED else record.status
        why = f"smoke run ({smoke}): not a result" + (f"; {why}" if why else "")
    record.note = "; ".join([*([why] if why else []), *problems])
    return record


def _smoke(run_dir: Path, summary: dict | None) -> str | None:
    """What made the run a smoke run (summary.json says; a stopped one's config.yaml does), or None."""
    if summary is not None and summary.get("smoke"):
        return str(summary["smoke"])
    trainer = (read_config(run_dir) or {}).get("trainer")
    return smoke_run(trainer) if isinstance(trainer, dict) else None


def read_runs(root: Path) -> list[RunRecord]:
    return [read_run(folder, root) for folder in find_runs(root)]
