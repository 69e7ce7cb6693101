"""Offline W&B runs in run folders that were never uploaded, and uploading them with `wandb sync`.

An offline run is `<run>/wandb/offline-run-<time>-<id>/run-<id>.wandb`; `wandb sync` marks a
finished upload with `run-<id>.wandb.synced` beside it (wandb/cli/beta_sync.py `_is_synced`, and
`wandb sync`'s own --skip-synced default), so a run without that marker is not synced. A run
folder still running is left alone: its file is still being written.
"""

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cnnfleet.catalogue.records import INTERRUPTED, RunRecord
from cnnfleet.run.state import RUNNING

SYNC_TIMEOUT_S = 600  # one offline run; a dead network fails each run alone


@dataclass
class OfflineRun:
    record: RunRecord
    folder: Path  # <run>/wandb/offline-run-*
    synced: bool

    @property
    def command(self) -> str:
        return f"wandb sync {self.folder}"


def offline_runs(records: list[RunRecord]) -> list[OfflineRun]:
    found = []
    for record in records:
        for data in sorted(record.path.glob("wandb/offline-run-*/run-*.wandb")):
            synced = data.with_name(data.name + ".synced").exists()
            found.append(OfflineRun(record, data.parent, synced))
    return found


def wandb_executable() -> str:
    """`wandb` on PATH, else the one installed beside this Python (a venv that is not activated)."""
    beside = Path(sys.executable).parent / "wandb"
    return shutil.which("wandb") or str(beside)


def sync(run: OfflineRun) -> tuple[bool, str]:
    """Upload one offline run; (ok, the last line wandb printed, or why it could not run)."""
    try:
        proc = subprocess.run(
            [wandb_executable(), "sync", str(run.folder)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SYNC_TIMEOUT_S,
        )
    except FileNotFoundError:
        return False, "the wandb command was not found (pip install wandb)"
    except subprocess.TimeoutExpired:
        return False, f"no answer within {SYNC_TIMEOUT_S} s"
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit code {proc.returncode}"
    # success is wandb's own marker, not only its exit code
    ok = proc.returncode == 0 and any(run.folder.glob("run-*.wandb.synced"))
    return ok, last


def report(runs: list[OfflineRun], do_sync: bool) -> tuple[str, int]:
    """The text to print and the exit code (1 when an upload failed)."""
    pending = [run for run in runs if not run.synced]
    busy = [run for run in pending if run.record.status == RUNNING]
    ready = [run for run in pending if run.record.status != RUNNING]
    lines = [f"{len(runs)} offline W&B runs, {len(runs) - len(pending)} synced, {len(pending)} not synced"]
    lines += [f"still running, sync when it ends: {run.command}" for run in busy]
    if not do_sync:
        if ready:
            lines += ["upload them with (or: cnnfleet-runs wandb --sync):", *[run.command for run in ready]]
        return "\n".join(lines), 0
    failed = 0
    for run in ready:
        ok, last = sync(run)
        failed += not ok
        note = " (interrupted run: uploads what it logged)" if run.record.status == INTERRUPTED else ""
        lines.append(f"{'synced' if ok else 'FAILED'} {run.folder}{note}: {last}")
    if ready:
        lines.append(f"{len(ready) - failed} of {len(ready)} uploaded")
    return "\n".join(lines), 1 if failed else 0
