"""Two sweeps of the same metric side by side: `cnnfleet-sweep-summary A B`.

Answers "did B find as good a result, and how much sooner?": per sweep the trials completed,
pruned and failed, the best value with its trial and parameters, the sweep's wall time (earliest
attempt start to latest attempt end over its trials' state.json, so a resumed sweep counts its
attempts, not the pauses after the last one), the total trial-seconds (sum of the trials'
wall_seconds) and the ratio of wall times B/A. Printed as a table and written to `<B>/compare.md`,
with `<B>/compare.png`: the best value so far against wall-clock seconds since each sweep started.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cnnfleet.errors import ConfigError
from cnnfleet.run.layout import STATE_FILE
from cnnfleet.sweeps.results import (
    TrialRow,
    agg_pyplot,
    best_row,
    collect_trials,
    read_json_object,
    status_counts,
    sweep_record,
    sweep_settings,
    swept_keys,
)


@dataclass
class SweepStats:
    """What the comparison shows of one sweep."""

    sweep_dir: Path
    metric: str
    direction: str
    counts: dict[str, int]
    best: TrialRow | None
    params: list[str]
    started: datetime | None
    ended: datetime | None
    trial_seconds: float
    progress: list[tuple[float, float]]  # (seconds since the sweep started, best value so far)

    @property
    def wall_seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, (self.ended - self.started).total_seconds())


def parse_time(text: object) -> datetime | None:
    """An ISO-8601 time from state.json as an aware UTC datetime (naive times are UTC); None if absent or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def attempt_times(run_dir: str | Path) -> list[tuple[datetime | None, datetime | None]]:
    """(started, ended) of each attempt in the trial's state.json; [] without one."""
    attempts = read_json_object(Path(run_dir) / STATE_FILE).get("attempts")
    if not isinstance(attempts, list):
        return []
    return [(parse_time(a.get("started")), parse_time(a.get("ended"))) for a in attempts if isinstance(a, dict)]


def sweep_span(rows: list[TrialRow]) -> tuple[datetime | None, datetime | None]:
    """The earliest attempt start and the latest attempt end over all the sweep's trials."""
    times = [pair for row in rows for pair in attempt_times(row.run_dir)]
    starts = [start for start, _ in times if start is not None]
    ends = [end for _, end in times if end is not None]
    return (min(starts) if starts else None), (max(ends) if ends else None)


def trial_end(row: TrialRow) -> datetime | None:
    """When the trial's last attempt ended (for a completed trial: when its value became known)."""
    ends = [end for _, end in attempt_times(row.run_dir) if end is not None]
    return max(ends) if ends else None


def best_so_far(rows: list[TrialRow], direction: str, started: datetime | None) -> list[tuple[float, float]]:
    """(seconds since `started`, best completed value so far) at each completed trial's end, in time order."""
    if started is None:
        return []
    better = min if direction == "minimize" else max
    ended = [(trial_end(r), r.ranked_value) for r in rows if r.status == "completed" and r.ranked_value is not None]
    points, best = [], None
    for moment, value in sorted((m, v) for m, v in ended if m is not None):
        best = value if best is None else better(best, value)
        points.append(((moment - started).total_seconds(), best))
    return points


def sweep_stats(sweep_dir: str | Path) -> SweepStats:
    """Read one sweep's trial folders into the numbers the comparison shows."""
    sweep_dir = Path(sweep_dir)
    rows = collect_trials(sweep_dir)
    metric, direction = sweep_settings(sweep_dir, rows)
    started, ended = sweep_span(rows)
    seconds = sum(r.wall_seconds for r in rows if r.wall_seconds is not None)
    params = swept_keys(rows, sweep_record(sweep_dir).get("swept"))
    return SweepStats(
        sweep_dir,
        metric,
        direction,
        status_counts(rows),
        best_row(rows, direction),
        params,
        started,
        ended,
        seconds,
        best_so_far(rows, direction, started),
    )


def wall_ratio(a: SweepStats, b: SweepStats) -> float | None:
    """B's wall time over A's; None when either is unknown or A's is zero."""
    if a.wall_seconds is None or b.wall_seconds is None or a.wall_seconds <= 0:
        return None
    return b.wall_seconds / a.wall_seconds


def duration(seconds: float | None) -> str:
    """'3720 s (1:02:00)': exact seconds for scripts, h:mm:ss for people."""
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    return f"{whole} s ({whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d})"


def _best_params(stats: SweepStats) -> str:
    if stats.best is None:
        return ""
    keys = stats.params or list(stats.best.overrides)
    return ", ".join(f"{k}={stats.best.overrides[k]}" for k in keys if k in stats.best.overrides)


def comparison_rows(a: SweepStats, b: SweepStats) -> list[tuple[str, str, str]]:
    """(quantity, A, B) lines of the comparison, shared by the console and Markdown tables."""

    def counts(s: SweepStats) -> str:
        others = sum(n for status, n in s.counts.items() if status not in ("completed", "pruned", "failed"))
        text = f"{s.counts['completed']} / {s.counts['pruned']} / {s.counts['failed']}"
        return text + (f" (+{others} stopped or incomplete)" if others else "")

    def best(s: SweepStats) -> str:
        return "none completed" if s.best is None else f"{s.best.value:.6g}"

    ratio = wall_ratio(a, b)
    return [
        ("trials completed / pruned / failed", counts(a), counts(b)),
        (f"best {a.metric} ({a.direction})", best(a), best(b)),
        ("best trial", *(str(s.best.trial) if s.best else "" for s in (a, b))),
        ("best parameters", _best_params(a), _best_params(b)),
        ("sweep wall time", duration(a.wall_seconds), duration(b.wall_seconds)),
        ("total trial-seconds", duration(a.trial_seconds), duration(b.trial_seconds)),
        ("wall time B/A", "1.00", "unknown" if ratio is None else f"{ratio:.2f}"),
    ]


def compare_markdown(a: SweepStats, b: SweepStats) -> str:
    """compare.md: which folder is A and B, then the comparison table."""
    lines = [
        f"# Sweep comparison: {a.metric}",
        "",
        f"- A: `{a.sweep_dir}`",
        f"- B: `{b.sweep_dir}`",
        "",
        "| | A | B |",
        "|---|---|---|",
    ]
    for quantity, left, right in comparison_rows(a, b):
        lines.append(f"| {quantity} | {left.replace('|', '/')} | {right.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot_progress(path: Path, a: SweepStats, b: SweepStats) -> None:
    """compare.png: best value so far against wall-clock seconds since each sweep's start, on one axis."""
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    try:
        for name, stats, color in (("A", a, "tab:blue"), ("B", b, "tab:orange")):
            label = f"{name}: {stats.sweep_dir.name}"
            if stats.progress:
                xs, ys = [x for x, _ in stats.progress], [y for _, y in stats.progress]
                ax.scatter(xs, ys, color=color, s=14)
                if stats.wall_seconds is not None and stats.wall_seconds > xs[-1]:  # flat until the sweep ended
                    xs, ys = [*xs, stats.wall_seconds], [*ys, ys[-1]]
                ax.step(xs, ys, where="post", color=color, label=label)
            else:
                ax.plot([], [], color=color, label=f"{label} (no completed trial with times)")
        ax.set_xlim(left=0)
        ax.set_xlabel("wall-clock seconds since the sweep started")
        ax.set_ylabel(f"best {a.metric} so far ({a.direction[:3]})")
        ax.set_title(f"best so far: A {duration(a.wall_seconds)}, B {duration(b.wall_seconds)}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _print(a: SweepStats, b: SweepStats) -> None:
    from rich.table import Table

    from cnnfleet.run.summary import wide_console

    table = Table(title=f"sweep comparison ({a.metric}): A = {a.sweep_dir}, B = {b.sweep_dir}", title_justify="left")
    for column in ("", "A", "B"):
        table.add_column(column, overflow="fold")
    for row in comparison_rows(a, b):
        table.add_row(*row)
    wide_console().print(table)


def compare_sweeps(sweep_a: str | Path, sweep_b: str | Path, echo: bool = True) -> tuple[SweepStats, SweepStats]:
    """Compare two sweeps of the same metric: print the table, write <B>/compare.md and <B>/compare.png.
    ConfigError when their metrics differ (their values would not be comparable)."""
    a, b = sweep_stats(sweep_a), sweep_stats(sweep_b)
    if a.metric != b.metric:
        raise ConfigError(
            f"{a.sweep_dir} optimizes {a.metric} but {b.sweep_dir} optimizes {b.metric}; "
            "compare sweeps of the same metric"
        )
    (b.sweep_dir / "compare.md").write_text(compare_markdown(a, b))
    plot_progress(b.sweep_dir / "compare.png", a, b)
    if echo:
        _print(a, b)
    return a, b
