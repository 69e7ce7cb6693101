"""The results table of a sweep, built from its trial folders (the same for grid and Optuna).

Each trial folder `<sweep>/<n>/` holds `.hydra/overrides.yaml` (what the trial changed) and, once
it ends, summary.json (status, the optimized metric, wall time, the failure reason). Writes
sweep_summary.csv, sweep_summary.md and sweep_summary.png into the sweep folder.
"""

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnfleet.sweeps.callback import SWEEP_FILE

STATUS_ORDER = {"completed": 0, "failed": 1, "incomplete": 2}


@dataclass
class TrialRow:
    trial: int
    status: str
    value: float | None
    overrides: dict[str, str]
    wall_seconds: float | None
    reason: str | None
    run_dir: str
    summary: dict = field(default_factory=dict, repr=False)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _parse_overrides(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, _, value = str(item).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def collect_trials(sweep_dir: Path) -> list[TrialRow]:
    rows = []
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name)):
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        summary = _read_json(folder / "summary.json")
        status = summary.get("status", "incomplete")
        value = (summary.get("optimized") or {}).get("value")
        rows.append(
            TrialRow(
                trial=int(folder.name),
                status=status,
                value=float(value) if value is not None else None,
                overrides=_parse_overrides(overrides or []),
                wall_seconds=summary.get("wall_seconds"),
                reason=summary.get("reason") or ("no summary.json: still running or interrupted"
                                                 if status == "incomplete" else None),
                run_dir=str(folder),
                summary=summary,
            )
        )  # fmt: skip
    return rows


def sweep_settings(sweep_dir: Path, rows: list[TrialRow]) -> tuple[str, str]:
    """(metric, direction): from sweep.json, else from a trial's summary, else val/acc maximize."""
    recorded = _read_json(sweep_dir / SWEEP_FILE)
    optimized = next((r.summary["optimized"] for r in rows if r.summary.get("optimized")), {})
    metric = recorded.get("metric") or optimized.get("metric") or "val/acc"
    direction = recorded.get("direction") or optimized.get("direction") or "maximize"
    return metric, direction


def rank_rows(rows: list[TrialRow], direction: str) -> list[TrialRow]:
    """Completed trials best first, then failed, then incomplete; trial number breaks ties."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(row: TrialRow) -> tuple:
        has_value = row.status == "completed" and row.value is not None and math.isfinite(row.value)
        return (STATUS_ORDER.get(row.status, 3), 0 if has_value else 1, sign * row.value if has_value else 0.0,
                row.trial)  # fmt: skip

    return sorted(rows, key=key)


def swept_keys(rows: list[TrialRow], recorded: list[str] | None = None) -> list[str]:
    """The keys the sweep varied (recorded in sweep.json), else those whose value differs between trials."""
    if recorded:
        return list(recorded)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.overrides if k not in keys)
    return [k for k in keys if len({row.overrides.get(k) for row in rows}) > 1]


def write_sweep_summary(sweep_dir: str | Path, echo: bool = True) -> list[TrialRow]:
    """Write CSV, Markdown and PNG of the sweep's trials (best first); print the table."""
    sweep_dir = Path(sweep_dir)
    rows = collect_trials(sweep_dir)
    if not rows:
        return rows
    metric, direction = sweep_settings(sweep_dir, rows)
    ranked = rank_rows(rows, direction)
    params = swept_keys(rows, _read_json(sweep_dir / SWEEP_FILE).get("swept"))
    _write_csv(sweep_dir / "sweep_summary.csv", ranked, metric, params)
    (sweep_dir / "sweep_summary.md").write_text(_markdown(ranked, metric, direction, params))
    _plot(sweep_dir / "sweep_summary.png", rows, metric, direction, params)
    if echo:
        _print(ranked, metric, direction, params, sweep_dir)
    return ranked


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _write_csv(path: Path, rows: list[TrialRow], metric: str, params: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "status", metric, "wall_seconds", *params, "overrides", "reason", "run_dir"])
        for rank, row in enumerate(rows, start=1):
            writer.writerow([
                rank, row.trial, row.status, "" if row.value is None else repr(row.value),
                _fmt(row.wall_seconds), *(row.overrides.get(k, "") for k in params),
                " ".join(f"{k}={v}" for k, v in row.overrides.items()), row.reason or "", row.run_dir,
            ])  # fmt: skip


def _markdown(rows: list[TrialRow], metric: str, direction: str, params: list[str]) -> str:
    header = ["rank", "trial", "status", f"{metric} ({direction})", "wall s", *params, "reason"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, start=1):
        cells = [str(rank), str(row.trial), row.status, _fmt(row.value), _fmt(row.wall_seconds),
                 *(row.overrides.get(k, "") for k in params), (row.reason or "").replace("|", "\\|")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(value: str) -> str:
    """A swept value for the console: numbers to 4 significant digits (the CSV keeps them whole)."""
    number = _as_number(value)
    return value if number is None or value.lstrip("-").isdigit() else f"{number:.4g}"


def _print(rows: list[TrialRow], metric: str, direction: str, params: list[str], sweep_dir: Path) -> None:
    from rich.table import Table

    from cnnfleet.run.summary import wide_console

    done = sum(r.status == "completed" for r in rows)
    table = Table(title=f"sweep {sweep_dir}: {done} of {len(rows)} trials completed, best first", title_justify="left")
    for column in ["#", "trial", "status", f"{metric} ({direction[:3]})", "wall s", *params, "reason"]:
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(rows, start=1):
        table.add_row(str(rank), str(row.trial), row.status, _fmt(row.value), f"{row.wall_seconds or 0:.1f}",
                      *(_short(row.overrides.get(k, "")) for k in params), row.reason or "")  # fmt: skip
    wide_console().print(table)


def _as_number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plot(path: Path, rows: list[TrialRow], metric: str, direction: str, params: list[str]) -> None:
    """Metric per trial with the best so far, and the metric against each swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.status == "completed" and r.value is not None and math.isfinite(r.value)]
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(4.5 * (1 + len(params)), 3.6), squeeze=False)
    ax = axes[0][0]
    if done:
        trials, values = [r.trial for r in done], [r.value for r in done]
        best = min if direction == "minimize" else max
        ax.scatter(trials, values, color="tab:blue", label="completed")
        ax.step(trials, [best(values[: i + 1]) for i in range(len(values))], where="post", color="tab:orange",
                label="best so far")  # fmt: skip
    failed = [r.trial for r in rows if r.status == "failed"]
    for trial in failed:
        ax.axvline(trial, color="tab:red", alpha=0.4, linestyle=":")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(done)} completed, {len(failed)} failed (red)")
    if done:
        ax.legend(fontsize=8)
    for ax, key in zip(axes[0][1:], params, strict=True):
        raw = [r.overrides.get(key, "") for r in done]
        numbers = [_as_number(v) for v in raw]
        if done and all(n is not None for n in numbers):
            ax.scatter(numbers, [r.value for r in done])
            if min(numbers) > 0 and max(numbers) / min(numbers) > 100:
                ax.set_xscale("log")
        elif done:
            labels = sorted(set(raw))
            ax.scatter([labels.index(v) for v in raw], [r.value for r in done])
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
