"""The end-of-run summary: summary.json in the run folder and a table on stdout."""

import json
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnfleet.run.files import write_json_atomic
from cnnfleet.run.layout import SUMMARY_FILE, TRACEBACK_FILE


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def wide_console() -> Console:
    """A console that wraps long cells; in logs and CI (no terminal) 200 columns, not 80."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = 200
    return console


def print_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")  # long paths wrap, never truncate
    for key, value in rows.items():
        if value is not None:
            table.add_row(key, _fmt(value))
    Console(soft_wrap=True).print(table)


def write_summary(output_dir: Path, summary: dict) -> Path:
    path = output_dir / SUMMARY_FILE
    write_json_atomic(path, summary)
    return path


def summary_rows(summary: dict) -> dict[str, Any]:
    """The few lines a user wants after a run, in reading order."""
    test = summary.get("test", {})
    fit = summary.get("fit", {})
    return {
        "smoke run: not a result": summary.get("smoke"),
        "test accuracy": test.get("test/acc"),
        "test loss": test.get("test/loss"),
        "final val accuracy": fit.get("final_val", {}).get("val/acc"),
        "epochs": fit.get("epochs"),
        "optimizer steps": fit.get("global_step"),
        "resumed from step": (summary.get("resumed_from") or {}).get("global_step"),
        "stopped by": fit.get("stopped_by"),
        "wall time (s)": summary.get("wall_seconds"),
        "train images/s": fit.get("images_per_second"),
        "time waiting for data": f"{fit['data_wait_fraction']:.1%}"
        if fit.get("data_wait_fraction") is not None
        else None,
        "peak GPU memory (GiB)": fit.get("peak_gpu_memory_gb"),
        "MFU": f"{fit['mfu']:.1%} of {fit['mfu_peak']}" if fit.get("mfu") is not None else None,
        "model (parameters)": f"{summary['model']['name']} ({summary['model']['parameters']:,})"
        if summary.get("model")
        else None,
        "device": summary["device"]["description"],
        "world size": summary["device"]["world_size"],
        "batch (global / per device)": f"{summary['batch']['global']} / {summary['batch']['per_device']}",
        "split sizes (train/val/test)": "/".join(
            str(summary["split_sizes"].get(k, "-")) for k in ("train", "val", "test")
        ),
        "run folder": summary["run_dir"],
    }


def write_failure(
    output_dir: str | Path, reason: str, wall_seconds: float | None = None, error: str | None = None
) -> None:
    """summary.json of a failed run: the results table and the sweeper read the reason here.
    A run folder whose summary says completed keeps it: a failed later attempt (a resume with
    wrong settings) goes to last_failure.json instead of erasing the finished run's record."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    record = {
        "status": "failed",
        "reason": reason,
        "error": error,
        "run_dir": str(output_dir),
        "wall_seconds": wall_seconds,
    }
    summary = output_dir / SUMMARY_FILE
    try:
        completed = json.loads(summary.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        completed = False
    write_json_atomic(output_dir / ("last_failure.json" if completed else "summary.json"), record)


def write_traceback(folder: Path, exc: BaseException) -> Path | None:
    """traceback.txt in `folder` (created if needed); None when it cannot be written."""
    path = Path(folder) / TRACEBACK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path
