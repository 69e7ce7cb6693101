"""The results table of a sweep, built from its trial folders (the same for grid and Optuna).

Each trial folder `<sweep>/<n>/` holds `.hydra/overrides.yaml` (what the trial changed) and, once
it ends, summary.json (status, the optimized metric, wall time, the failure reason). Writes
sweep_summary.csv, sweep_summary.md and sweep_summary.png into the sweep folder, and, for an
Optuna sweep whose study can be opened, Optuna's own optuna_importance.png and
optuna_parallel_coordinate.png.

A trial's status is one of completed, pruned (an Optuna pruner stopped it early: its value is the
last one it reported), failed, stopped (a signal stopped it; it will be resumed) or incomplete (no
summary.json yet: running, or killed without a word).
"""

import csv
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnfleet.run.layout import HYDRA_DIR, OVERRIDES, SUMMARY_FILE
from cnnfleet.sweeps.callback import SWEEP_FILE

log = logging.getLogger(__name__)

STATUS_ORDER = {"completed": 0, "pruned": 1, "failed": 2, "stopped": 3, "incomplete": 4}
VALUED = ("completed", "pruned")  # statuses whose value ranks them (a pruned trial's is its last report)
DEFAULT_REASONS = {
    "incomplete": "no summary.json: still running or interrupted",
    "stopped": "stopped by a signal; resuming the sweep finishes it",
}
OPTUNA_PLOTS = {
    "optuna_importance.png": "plot_param_importances",
    "optuna_parallel_coordinate.png": "plot_parallel_coordinate",
}
PANEL_COLUMNS = 3  # the PNG's grid is at most this wide: it stays readable on one screen
PANEL_INCHES = (4.4, 3.3)  # one panel at 100 dpi: 440 x 330 pixels


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

    @property
    def ranked_value(self) -> float | None:
        """The value that places this trial: completed and pruned trials with a finite value, else None."""
        if self.status in VALUED and self.value is not None and math.isfinite(self.value):
            return self.value
        return None


def read_json_object(path: Path) -> dict:
    """A JSON object from `path`; {} when it is missing, unreadable or not an object (a trial being written)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _as_float(value: Any) -> float | None:
    """A number from a JSON field that should hold one; None for anything else (a hand-edited file)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _parse_overrides(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, _, value = str(item).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def _read_overrides(folder: Path) -> list[str]:
    """The trial's `key=value` overrides; [] when the file is missing or not a YAML list."""
    path = folder / HYDRA_DIR / OVERRIDES
    try:
        items = yaml.safe_load(path.read_text()) if path.is_file() else []
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in items] if isinstance(items, list) else []


def trial_folders(sweep_dir: Path) -> list[Path]:
    """The sweep's trial folders (`0/`, `1/`, ...) in trial order."""
    folders = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(folders, key=lambda p: int(p.name))


def sweep_folder_problem(sweep_dir: Path) -> str | None:
    """Why `sweep_dir` cannot be summarized (one line), or None when it is a sweep folder."""
    if not Path(sweep_dir).is_dir():
        return f"{sweep_dir} is not a folder; pass a sweep folder such as logs/train/multiruns/<time>"
    try:
        if not trial_folders(sweep_dir):
            return f"{sweep_dir} holds no trial folders (0/, 1/, ...); is it a sweep folder?"
    except OSError as exc:
        return f"cannot read {sweep_dir}: {exc.strerror or exc}"
    return None


def collect_trials(sweep_dir: Path) -> list[TrialRow]:
    rows = []
    for folder in trial_folders(sweep_dir):
        summary = read_json_object(folder / SUMMARY_FILE)
        status = str(summary.get("status") or "incomplete")
        rows.append(
            TrialRow(
                trial=int(folder.name),
                status=status,
                value=_as_float((summary.get("optimized") or {}).get("value")),
                overrides=_parse_overrides(_read_overrides(folder)),
                wall_seconds=_as_float(summary.get("wall_seconds")),
                reason=summary.get("reason") or DEFAULT_REASONS.get(status),
                run_dir=str(folder),
                summary=summary,
            )
        )
    return rows


def sweep_record(sweep_dir: Path) -> dict:
    """sweep.json: metric, direction, swept keys and, for Optuna sweeps, the search space and the study."""
    return read_json_object(Path(sweep_dir) / SWEEP_FILE)


def sweep_settings(sweep_dir: Path, rows: list[TrialRow]) -> tuple[str, str]:
    """(metric, direction): from sweep.json, else from a trial's summary, else val/acc maximize."""
    recorded = sweep_record(sweep_dir)
    optimized = next((r.summary["optimized"] for r in rows if isinstance(r.summary.get("optimized"), dict)), {})
    metric = recorded.get("metric") or optimized.get("metric") or "val/acc"
    direction = recorded.get("direction") or optimized.get("direction") or "maximize"
    return metric, direction


def rank_rows(rows: list[TrialRow], direction: str) -> list[TrialRow]:
    """Completed trials best first, then pruned (best last value first), then failed, stopped and
    incomplete; trial number breaks ties."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(row: TrialRow) -> tuple:
        value = row.ranked_value
        return (
            STATUS_ORDER.get(row.status, len(STATUS_ORDER)),
            0 if value is not None else 1,
            sign * value if value is not None else 0.0,
            row.trial,
        )

    return sorted(rows, key=key)


def status_counts(rows: list[TrialRow]) -> dict[str, int]:
    """Trials per status, in ranking order (unknown statuses last)."""
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def counts_text(rows: list[TrialRow]) -> str:
    """'12 completed, 3 pruned, 1 failed' (stopped, incomplete and others only when there are any)."""
    counts = status_counts(rows)
    always = ("completed", "pruned", "failed")
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n or status in always)


def best_row(rows: list[TrialRow], direction: str) -> TrialRow | None:
    """The best completed trial, None when none completed with a finite value."""
    first = rank_rows(rows, direction)[:1]
    return first[0] if first and first[0].status == "completed" and first[0].ranked_value is not None else None


def swept_keys(rows: list[TrialRow], recorded: list[str] | None = None) -> list[str]:
    """The keys the sweep varied (recorded in sweep.json), else those whose value differs between trials."""
    if recorded:
        return list(recorded)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.overrides if k not in keys)
    return [k for k in keys if len({row.overrides.get(k) for row in rows}) > 1]


def write_sweep_summary(sweep_dir: str | Path, echo: bool = True) -> list[TrialRow]:
    """Write CSV, Markdown and PNG of the sweep's trials (best first), and Optuna's plots for an
    Optuna sweep; print the table. Returns the ranked rows ([] when the folder holds no trials)."""
    sweep_dir = Path(sweep_dir)
    rows = collect_trials(sweep_dir)
    if not rows:
        return rows
    record = sweep_record(sweep_dir)
    metric, direction = sweep_settings(sweep_dir, rows)
    ranked = rank_rows(rows, direction)
    params = swept_keys(rows, record.get("swept"))
    _write_csv(sweep_dir / "sweep_summary.csv", ranked, metric, params)
    (sweep_dir / "sweep_summary.md").write_text(_markdown(ranked, metric, direction, params, sweep_dir))
    plot_sweep(sweep_dir / "sweep_summary.png", rows, metric, direction, params, record.get("space"))
    written = write_optuna_plots(sweep_dir, record, metric)
    if echo:
        _print(ranked, metric, direction, params, sweep_dir)
        for path in written:
            print(f"wrote {path}")
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
            writer.writerow(
                [
                    rank,
                    row.trial,
                    row.status,
                    "" if row.value is None else repr(row.value),
                    _fmt(row.wall_seconds),
                    *(row.overrides.get(k, "") for k in params),
                    " ".join(f"{k}={v}" for k, v in row.overrides.items()),
                    row.reason or "",
                    row.run_dir,
                ]
            )


def _title(rows: list[TrialRow], sweep_dir: Path) -> str:
    """'sweep <dir> (16 trials: 12 completed, 3 pruned, 1 failed), best first': the table's heading."""
    return f"sweep {sweep_dir} ({len(rows)} trials: {counts_text(rows)}), best first"


def _markdown(rows: list[TrialRow], metric: str, direction: str, params: list[str], sweep_dir: Path) -> str:
    header = ["rank", "trial", "status", f"{metric} ({direction})", "wall s", *params, "reason"]
    lines = [_title(rows, sweep_dir), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, start=1):
        wall = "" if row.wall_seconds is None else f"{row.wall_seconds:.1f}"
        cells = [
            str(rank),
            str(row.trial),
            row.status,
            _fmt(row.value),
            wall,
            *(row.overrides.get(k, "") for k in params),
            (row.reason or "").replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(value: str) -> str:
    """A swept value for the console: numbers to 4 significant digits (the CSV keeps them whole)."""
    number = _as_number(value)
    return value if number is None or value.lstrip("-").isdigit() else f"{number:.4g}"


def _print(rows: list[TrialRow], metric: str, direction: str, params: list[str], sweep_dir: Path) -> None:
    from rich.table import Table

    from cnnfleet.run.summary import wide_console

    table = Table(title=_title(rows, sweep_dir), title_justify="left")
    for column in ["#", "trial", "status", f"{metric} ({direction[:3]})", "wall s", *params, "reason"]:
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(rows, start=1):
        table.add_row(
            str(rank),
            str(row.trial),
            row.status,
            _fmt(row.value),
            f"{row.wall_seconds or 0:.1f}",
            *(_short(row.overrides.get(k, "")) for k in params),
            row.reason or "",
        )
    wide_console().print(table)


def _as_number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- sweep_summary.png ---------------------------------------------------------------------------


def param_scale(space: dict | None, key: str, values: list[str]) -> str:
    """How a swept parameter's x axis is drawn: "log", "linear" or "categorical".

    sweep.json's search space decides when it records the key (an Optuna sweep): its categorical
    choices are labelled positions, `"log": true` is a log axis. Without a record (a grid sweep)
    numbers spanning more than a factor 100 get a log axis. Values that are not all numbers are
    always categorical, and a log axis needs them all positive."""
    numbers = [_as_number(v) for v in values if v != ""]
    numeric = bool(numbers) and all(n is not None for n in numbers)
    spec = (space or {}).get(key)
    if isinstance(spec, dict) and spec.get("distribution"):
        if spec["distribution"] == "categorical" or not numeric:
            return "categorical"
        return "log" if spec.get("log") and min(numbers) > 0 else "linear"
    if not numeric:
        return "categorical"
    return "log" if min(numbers) > 0 and max(numbers) / min(numbers) > 100 else "linear"


def category_labels(space: dict | None, key: str, values: list[str]) -> list[str]:
    """The positions of a categorical axis: the recorded choices in their order, then any other
    value seen (numbers in numeric order, others alphabetically)."""
    spec = (space or {}).get(key)
    choices = [str(c) for c in spec.get("choices", [])] if isinstance(spec, dict) else []
    seen = sorted(set(values) - set(choices), key=lambda v: (_as_number(v) is None, _as_number(v) or 0.0, v))
    return [*choices, *seen]


# How each status is drawn, the same in every panel: completed dots, pruned hollow triangles at
# their last reported value, failed red crosses along the bottom edge (they have no value).
COMPLETED_MARK = {"color": "tab:blue", "marker": "o", "s": 22}
PRUNED_MARK = {"facecolors": "none", "edgecolors": "tab:purple", "marker": "v", "s": 30}
FAILED_MARK = {"color": "tab:red", "marker": "x", "s": 30, "clip_on": False}


def agg_pyplot() -> Any:
    """pyplot on the Agg backend: the PNGs are written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt: Any, panels: int) -> tuple[Any, list[Any]]:
    """A figure of `panels` panels, at most PANEL_COLUMNS wide; unused cells are hidden."""
    columns = min(PANEL_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _valued(rows: list[TrialRow], status: str) -> list[TrialRow]:
    return [r for r in rows if r.status == status and r.ranked_value is not None]


def _plot_trials(ax: Any, rows: list[TrialRow], metric: str, direction: str) -> None:
    """The first panel: metric per trial, the best completed value so far, pruned and failed trials."""
    done, pruned = _valued(rows, "completed"), _valued(rows, "pruned")
    if done:
        trials, values = [r.trial for r in done], [r.value for r in done]
        best = min if direction == "minimize" else max
        ax.scatter(trials, values, label="completed", **COMPLETED_MARK)
        ax.step(
            trials,
            [best(values[: i + 1]) for i in range(len(values))],
            where="post",
            color="tab:orange",
            label="best so far",
        )
    if pruned:
        ax.scatter([r.trial for r in pruned], [r.value for r in pruned], label="pruned (last value)", **PRUNED_MARK)
    failed = [r.trial for r in rows if r.status == "failed"]
    for trial in failed:
        ax.axvline(trial, color="tab:red", alpha=0.35, linestyle=":")
    if failed:
        _mark_failed(ax, [float(t) for t in failed], label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} ({direction[:3]})")
    ax.set_title(counts_text(rows), fontsize=10)
    if done or pruned or failed:
        ax.legend(fontsize=7)


def _mark_failed(ax: Any, xs: list[float | None], **kwargs: Any) -> None:
    """Red crosses on the bottom edge at `xs` (failed trials have no value). The x limits are widened
    to take them: a marker in axes-y coordinates does not move the limits, and one outside them
    would be drawn over the next panel."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return
    ax.update_datalim([(x, 0.0) for x in xs], updatey=False)
    ax.autoscale_view()
    ax.scatter(xs, [0.0] * len(xs), transform=ax.get_xaxis_transform(), **FAILED_MARK, **kwargs)


def _positions(scale: str, labels: list[str], values: list[str]) -> list[float | None]:
    """x positions of the values on a parameter's axis (None: not drawable there)."""
    if scale == "categorical":
        return [float(labels.index(v)) if v in labels else None for v in values]
    return [_as_number(v) for v in values]


def _scatter_at(ax: Any, xs: list[float | None], ys: list[float], style: dict) -> None:
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None]
    if points:
        ax.scatter([x for x, _ in points], [y for _, y in points], **style)


def _plot_param(ax: Any, rows: list[TrialRow], key: str, space: dict | None, metric: str) -> None:
    """One panel: the metric against one swept parameter (pruned hollow, failed crosses on the bottom edge)."""
    values = [r.overrides.get(key, "") for r in rows]
    scale = param_scale(space, key, values)
    labels = category_labels(space, key, [v for v in values if v != ""]) if scale == "categorical" else []
    done, pruned = _valued(rows, "completed"), _valued(rows, "pruned")
    failed = [r for r in rows if r.status == "failed"]
    for group, style in ((done, COMPLETED_MARK), (pruned, PRUNED_MARK)):
        xs = _positions(scale, labels, [r.overrides.get(key, "") for r in group])
        _scatter_at(ax, xs, [r.value for r in group], style)
    _mark_failed(ax, _positions(scale, labels, [r.overrides.get(key, "") for r in failed]))
    if scale == "log":
        ax.set_xscale("log")
    elif scale == "categorical":
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=7)
        if labels:  # a sweep whose trials have not started has no values yet
            ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel(key + (" (log)" if scale == "log" else ""))
    ax.set_ylabel(metric)


def plot_sweep(
    path: Path, rows: list[TrialRow], metric: str, direction: str, params: list[str], space: dict | None = None
) -> None:
    """sweep_summary.png: a grid (at most 3 wide) of the metric per trial and the metric against each
    swept parameter; `space` is sweep.json's search space (log axes, categorical choices)."""
    plt = agg_pyplot()
    fig, axes = _grid(plt, 1 + len(params))
    try:
        _plot_trials(axes[0], rows, metric, direction)
        for ax, key in zip(axes[1:], params, strict=True):
            _plot_param(ax, rows, key, space, metric)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


# --- Optuna's own plots --------------------------------------------------------------------------


def _storage_spec(spec: str, sweep_dir: Path) -> str:
    """The recorded storage spec, checked to exist: opening a missing journal or sqlite file would
    create an empty one (and plot nothing). A journal path is also tried from the sweep folder, and by
    its name inside it: the default journal lives there, and a moved or copied sweep keeps it."""
    from cnnfleet.sweeps.storage import is_url

    if is_url(spec):
        if spec.startswith("sqlite:///") and not Path(spec.removeprefix("sqlite:///")).is_file():
            raise FileNotFoundError(f"{spec} does not exist")
        return spec
    for candidate in (Path(spec), Path(sweep_dir) / spec, Path(sweep_dir) / Path(spec).name):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{spec} does not exist")


def load_recorded_study(sweep_dir: Path, record: dict) -> Any:
    """The Optuna study sweep.json names ("optuna": {"storage", "study_name"}); raises when it cannot be opened."""
    import optuna

    from cnnfleet.sweeps.storage import optuna_storage

    ref = record.get("optuna") or {}
    storage = optuna_storage(_storage_spec(str(ref["storage"]), sweep_dir))
    return optuna.load_study(study_name=str(ref["study_name"]), storage=storage)


def _save_optuna_plot(plt: Any, study: Any, function: str, path: Path, metric: str) -> None:
    """One of optuna.visualization.matplotlib's plots as a PNG. Its plots call plt.style.use("ggplot"):
    rc_context keeps that style out of our other figures; its experimental warnings are silenced."""
    import matplotlib
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as optuna_plots

    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", ExperimentalWarning)
            ax = getattr(optuna_plots, function)(study, target_name=metric)
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def write_optuna_plots(sweep_dir: Path, record: dict, metric: str = "Objective Value") -> list[Path]:
    """optuna_importance.png and optuna_parallel_coordinate.png beside the results table, when sweep.json
    names an Optuna study that opens and holds >= 2 complete trials. Returns the files written. Any
    problem is one warning line (the table is written already; these plots are extras)."""
    ref = record.get("optuna")
    if not isinstance(ref, dict) or not ref.get("storage") or not ref.get("study_name"):
        return []
    sweep_dir = Path(sweep_dir)
    try:
        from optuna.trial import TrialState

        study = load_recorded_study(sweep_dir, record)
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception as exc:  # a storage missing or unreachable, a study renamed: never the table's problem
        log.warning(
            "optuna plots not written: cannot open study %r in %s (%s)",
            ref.get("study_name"),
            ref.get("storage"),
            _one_line(exc),
        )
        return []
    if complete < 2:
        log.warning(
            "optuna plots not written: study %r holds %d complete trial(s), they need 2", study.study_name, complete
        )
        return []
    plt, written, problems = agg_pyplot(), [], []
    for name, function in OPTUNA_PLOTS.items():
        try:
            _save_optuna_plot(plt, study, function, sweep_dir / name, metric)
            written.append(sweep_dir / name)
        except Exception as exc:  # too few distinct values, a parameter with one value, ...
            problems.append(f"{name}: {_one_line(exc)}")
    if problems:
        log.warning("optuna plots not written: %s", "; ".join(problems))
    return written


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
