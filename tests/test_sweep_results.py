"""The sweep results table and the sweep comparison, from hand-written sweep folders (no training).

Each test writes the files a sweep leaves (sweep.json, <n>/.hydra/overrides.yaml, summary.json,
state.json) and checks what cnnfleet.sweeps.results / .compare and cnnfleet-sweep-summary make of them.
"""

import contextlib
import csv
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnfleet.cli.sweep_summary import main
from cnnfleet.sweeps.compare import best_so_far, compare_sweeps, sweep_stats
from cnnfleet.sweeps.results import (
    TrialRow,
    category_labels,
    collect_trials,
    counts_text,
    param_scale,
    rank_rows,
    write_optuna_plots,
    write_sweep_summary,
)

METRIC = "val/loss"
DAY = "2026-01-10T"


def at(clock: str | None) -> str | None:
    """'10:20' -> an ISO-8601 UTC time on a fixed day (state.json's format)."""
    return None if clock is None else f"{DAY}{clock}:00+00:00"


def write_sweep(folder: Path, swept: list[str], metric: str = METRIC, direction: str = "minimize", **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"metric": metric, "direction": direction, "command": "cnnfleet-train -m", "swept": swept, **extra}
    (folder / "sweep.json").write_text(json.dumps(record))
    return folder


def write_trial(
    sweep: Path,
    n: int,
    overrides: dict[str, object],
    status: str | None = None,
    value: float | None = None,
    wall: float | None = None,
    reason: str | None = None,
    attempts: list[tuple[str | None, str | None]] = (),
) -> Path:
    """One trial folder; status None leaves summary.json out (a trial still running)."""
    folder = sweep / str(n)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {k}={v}\n" for k, v in overrides.items()))
    if status is not None:
        summary: dict = {"status": status, "wall_seconds": wall, "run_dir": str(folder)}
        if value is not None:
            summary["optimized"] = {"metric": METRIC, "direction": "minimize", "value": value}
        if reason is not None:
            summary["reason"] = reason
        (folder / "summary.json").write_text(json.dumps(summary))
    if attempts:
        records = [
            {"attempt": i + 1, "started": at(s), "ended": at(e), "exit": "done" if e else None}
            for i, (s, e) in enumerate(attempts)
        ]
        (folder / "state.json").write_text(json.dumps({"status": status or "running", "attempts": records}))
    return folder


PRUNE_REASON = "pruned at epoch 3 by MedianPruner (val/loss 2.30)"


def mixed_sweep(folder: Path) -> Path:
    """Seven trials of every status (minimize val/loss) over lr and batch_size."""
    sweep = write_sweep(folder, ["lr", "batch_size"])
    write_trial(sweep, 0, {"lr": 0.1, "batch_size": 32}, "completed", 0.50, 60.0)
    write_trial(sweep, 1, {"lr": 0.01, "batch_size": 64}, "pruned", 2.30, 20.0, PRUNE_REASON)
    write_trial(sweep, 2, {"lr": 1.0, "batch_size": 32}, "failed", None, 5.0, "RunFailed: loss is NaN")
    write_trial(sweep, 3, {"lr": 0.001, "batch_size": 64}, "completed", 0.20, 70.0)
    write_trial(sweep, 4, {"lr": 0.05, "batch_size": 32}, "stopped", None, 30.0)
    write_trial(sweep, 5, {"lr": 0.02, "batch_size": 64}, None)
    write_trial(sweep, 6, {"lr": 0.003, "batch_size": 32}, "pruned", 1.10, 25.0, PRUNE_REASON)
    return sweep


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- ranking and the table -----------------------------------------------------------------------


def test_rank_rows_orders_completed_pruned_failed_stopped_incomplete() -> None:
    def row(trial: int, status: str, value: float | None) -> TrialRow:
        return TrialRow(trial, status, value, {}, 1.0, None, str(trial))

    rows = [
        row(0, "incomplete", None),
        row(1, "pruned", 0.9),
        row(2, "failed", None),
        row(3, "completed", 0.5),
        row(4, "stopped", None),
        row(5, "pruned", 0.2),
        row(6, "completed", 0.1),
        row(7, "pruned", None),
    ]
    assert [r.trial for r in rank_rows(rows, "minimize")] == [6, 3, 5, 1, 7, 2, 4, 0]
    assert [r.trial for r in rank_rows(rows, "maximize")] == [3, 6, 1, 5, 7, 2, 4, 0]
    assert counts_text(rows) == "2 completed, 3 pruned, 1 failed, 1 stopped, 1 incomplete"
    assert counts_text(rows[3:4]) == "1 completed, 0 pruned, 0 failed"


def test_csv_and_markdown_rank_pruned_after_completed_and_show_their_values(tmp_path: Path) -> None:
    sweep = mixed_sweep(tmp_path / "sweep")
    ranked = write_sweep_summary(sweep, echo=False)
    assert [r.trial for r in ranked] == [3, 0, 6, 1, 2, 4, 5]

    rows = read_csv(sweep / "sweep_summary.csv")
    assert list(rows[0]) == [
        "rank",
        "trial",
        "status",
        METRIC,
        "wall_seconds",
        "lr",
        "batch_size",
        "overrides",
        "reason",
        "run_dir",
    ]
    assert [(r["trial"], r["status"]) for r in rows] == [
        ("3", "completed"),
        ("0", "completed"),
        ("6", "pruned"),
        ("1", "pruned"),
        ("2", "failed"),
        ("4", "stopped"),
        ("5", "incomplete"),
    ]
    assert [float(r[METRIC]) for r in rows[:4]] == [0.2, 0.5, 1.1, 2.3]  # pruned rows keep their last value
    assert rows[2]["reason"] == PRUNE_REASON and rows[2]["lr"] == "0.003"
    assert rows[4]["reason"] == "RunFailed: loss is NaN" and rows[4][METRIC] == ""
    assert "summary.json" in rows[6]["reason"] and rows[6]["run_dir"] == str(sweep / "5")
    assert rows[0]["overrides"] == "lr=0.001 batch_size=64"

    markdown = (sweep / "sweep_summary.md").read_text()
    assert "2 completed, 2 pruned, 1 failed, 1 stopped, 1 incomplete" in markdown.splitlines()[0]
    assert markdown.count("| pruned |") == 2 and "| 2.3000 |" in markdown


def test_collect_trials_survives_broken_files(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", ["lr"])
    write_trial(sweep, 0, {"lr": 1}, "completed", 0.5)
    (sweep / "1" / ".hydra").mkdir(parents=True)
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    (sweep / "1" / "summary.json").write_text('["not", "an", "object"]')
    (sweep / "notes").mkdir()  # not a trial folder
    rows = collect_trials(sweep)
    assert [(r.trial, r.status, r.overrides) for r in rows] == [(0, "completed", {"lr": "1"}), (1, "incomplete", {})]


# --- the PNG -------------------------------------------------------------------------------------


def test_png_is_a_grid_that_fits_a_screen(tmp_path: Path) -> None:
    from PIL import Image

    params = ["lr", "batch_size", "momentum", "optimizer", "width"]
    space = {"lr": {"distribution": "float", "log": True, "low": 1e-6, "high": 1.0}}
    sweep = write_sweep(tmp_path / "sweep", params, space=space)
    for n in range(6):
        values = {
            "lr": 10.0**-n,
            "batch_size": 32 * (n % 2 + 1),
            "momentum": n / 10,
            "optimizer": ["sgd", "adam"][n % 2],
            "width": n,
        }
        write_trial(sweep, n, values, "pruned" if n == 4 else "failed" if n == 5 else "completed", 1.0 / (n + 1))
    write_sweep_summary(sweep, echo=False)
    with Image.open(sweep / "sweep_summary.png") as image:
        width, height = image.size
    assert 900 <= width <= 1600, image.size  # 3 panels wide, not 6 in a row (2700 px)
    assert 500 <= height <= 1000, image.size  # two rows of panels


def test_param_scale_follows_the_recorded_space_else_the_value_ratio() -> None:
    space = {
        "lr": {"distribution": "float", "log": True, "low": 1e-4, "high": 1e-1},
        "wd": {"distribution": "float", "log": False, "low": 0.0, "high": 1000.0},
        "bs": {"distribution": "categorical", "choices": [128, 32, 64]},
    }
    assert param_scale(space, "lr", ["0.01", "0.02"]) == "log"  # the record says log, whatever the spread
    assert param_scale(space, "wd", ["0.001", "900"]) == "linear"  # the record says linear
    assert param_scale(space, "bs", ["32", "64"]) == "categorical"
    assert param_scale(None, "lr", ["0.0001", "0.1"]) == "log"  # no record: spread over 100x
    assert param_scale(None, "lr", ["0.01", "0.1"]) == "linear"
    assert param_scale(None, "opt", ["sgd", "adam"]) == "categorical"
    assert param_scale({"x": {"distribution": "float", "log": True}}, "x", ["0", "1"]) == "linear"  # no log of 0
    assert category_labels(space, "bs", ["64", "256", "32"]) == ["128", "32", "64", "256"]
    assert category_labels(None, "bs", ["64", "8", "adam"]) == ["8", "64", "adam"]


def test_a_failed_trial_outside_the_values_widens_its_panel(tmp_path: Path) -> None:
    """A failed trial's cross sits on the panel's bottom edge; its x must be inside the panel (a cross
    past the limits would be drawn over the next panel)."""
    from cnnfleet.sweeps.results import _plot_param, agg_pyplot

    sweep = mixed_sweep(tmp_path / "sweep")  # the failed trial has lr=1.0, the valued ones at most 0.1
    plt = agg_pyplot()
    fig, ax = plt.subplots()
    try:
        _plot_param(ax, collect_trials(sweep), "lr", None, METRIC)
        low, high = ax.get_xlim()
        assert ax.get_xscale() == "log" and low <= 0.001 and high >= 1.0, (low, high)
    finally:
        plt.close(fig)


# --- Optuna's plots ------------------------------------------------------------------------------


def optuna_sweep(folder: Path) -> Path:
    """A real Optuna study in a journal file: 6 complete trials of a toy function and one pruned."""
    import optuna
    from optuna.trial import TrialState

    from cnnfleet.sweeps.storage import optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)  # a journal's folder must exist (the sweep folder)
    journal = folder / "optuna.journal"
    study = optuna.create_study(
        study_name="toy",
        storage=optuna_storage(str(journal)),
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(
        lambda t: (t.suggest_float("lr", 1e-4, 1.0, log=True) - 0.01) ** 2 + t.suggest_int("depth", 1, 8), n_trials=6
    )
    pruned = study.ask(
        {
            "lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
            "depth": optuna.distributions.IntDistribution(1, 8),
        }
    )
    pruned.report(9.0, step=1)
    study.tell(pruned, state=TrialState.PRUNED)
    space = {
        "lr": {"distribution": "float", "log": True, "low": 1e-4, "high": 1.0},
        "depth": {"distribution": "int", "log": False, "low": 1, "high": 8},
    }
    sweep = write_sweep(folder, ["lr", "depth"], space=space, optuna={"storage": str(journal), "study_name": "toy"})
    for trial in study.trials:
        status = "pruned" if trial.state == TrialState.PRUNED else "completed"
        value = trial.value if trial.value is not None else 9.0
        write_trial(sweep, trial.number, trial.params, status, value, 1.0, PRUNE_REASON if status == "pruned" else None)
    return sweep


@contextlib.contextmanager
def no_experimental_warning() -> Iterator[None]:
    """Fails the block when Optuna's ExperimentalWarning escapes it."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    assert not [w for w in seen if issubclass(w.category, ExperimentalWarning)]


def test_optuna_study_gets_its_importance_and_parallel_coordinate_plots(tmp_path: Path) -> None:
    sweep = optuna_sweep(tmp_path)
    with no_experimental_warning():
        ranked = write_sweep_summary(sweep, echo=False)
    assert ranked[-1].status == "pruned"
    for name in ("optuna_importance.png", "optuna_parallel_coordinate.png"):
        assert (sweep / name).stat().st_size > 1000, name


def test_a_moved_sweep_still_finds_the_journal_beside_it(tmp_path: Path) -> None:
    moved = optuna_sweep(tmp_path / "before").rename(tmp_path / "after")  # sweep.json names the old journal path
    assert write_optuna_plots(moved, json.loads((moved / "sweep.json").read_text()), METRIC) == [
        moved / "optuna_importance.png",
        moved / "optuna_parallel_coordinate.png",
    ]


def test_optuna_plots_are_skipped_with_one_line_when_the_study_cannot_help(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = {"optuna": {"storage": str(tmp_path / "gone.journal"), "study_name": "toy"}}
    with caplog.at_level(logging.WARNING, logger="cnnfleet.sweeps.results"):
        assert write_optuna_plots(tmp_path, missing) == []
    assert len(caplog.records) == 1 and "gone.journal" in caplog.records[0].getMessage()
    assert not (tmp_path / "gone.journal").exists()  # looking did not create an empty journal

    caplog.clear()
    wrong_name = {"optuna": {"storage": "sqlite:///" + str(tmp_path / "none.db"), "study_name": "toy"}}
    with caplog.at_level(logging.WARNING, logger="cnnfleet.sweeps.results"):
        assert write_optuna_plots(tmp_path, wrong_name) == []
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert write_optuna_plots(tmp_path, {"metric": METRIC}) == []  # a grid sweep: nothing to do, nothing said


# --- comparing two sweeps ------------------------------------------------------------------------


def timed_sweeps(root: Path) -> tuple[Path, Path]:
    """A: 10:00-11:00 (3600 s), best 0.3 at trial 2. B: 10:00-10:30 (1800 s) with a resumed trial,
    a running one (no end) and a failed one; best 0.25 at trial 0."""
    a = write_sweep(root / "a", ["lr"])
    write_trial(a, 0, {"lr": 0.1}, "completed", 0.5, 1200.0, attempts=[("10:00", "10:20")])
    write_trial(a, 1, {"lr": 0.2}, "pruned", 2.0, 1200.0, PRUNE_REASON, attempts=[("10:20", "10:40")])
    write_trial(a, 2, {"lr": 0.3}, "completed", 0.3, 1200.0, attempts=[("10:40", "11:00")])
    b = write_sweep(root / "b", ["lr"])
    write_trial(b, 0, {"lr": 0.4}, "completed", 0.25, 900.0, attempts=[("10:00", "10:10"), ("10:15", "10:30")])
    write_trial(b, 1, {"lr": 0.5}, None, attempts=[("10:00", None)])
    write_trial(b, 2, {"lr": 0.6}, "failed", None, 900.0, "RunFailed: loss is NaN", attempts=[("10:05", "10:20")])
    return a, b


def test_compare_writes_both_wall_times_and_their_ratio(tmp_path: Path) -> None:
    a, b = timed_sweeps(tmp_path)
    stats_a, stats_b = compare_sweeps(a, b, echo=False)
    assert (stats_a.wall_seconds, stats_b.wall_seconds) == (3600.0, 1800.0)
    assert (stats_a.trial_seconds, stats_b.trial_seconds) == (3600.0, 1800.0)
    markdown = (b / "compare.md").read_text()
    assert "| sweep wall time | 3600 s (1:00:00) | 1800 s (0:30:00) |" in markdown
    assert "| wall time B/A | 1.00 | 0.50 |" in markdown
    assert "| trials completed / pruned / failed | 2 / 1 / 0 | 1 / 0 / 1 (+1 stopped or incomplete) |" in markdown
    assert "| best trial | 2 | 0 |" in markdown and "| best parameters | lr=0.3 | lr=0.4 |" in markdown
    assert str(a) in markdown and str(b) in markdown
    assert (b / "compare.png").stat().st_size > 0
    assert not (a / "compare.md").exists()


def test_best_so_far_follows_wall_clock_not_trial_numbers(tmp_path: Path) -> None:
    a, _ = timed_sweeps(tmp_path)
    stats = sweep_stats(a)
    assert stats.progress == [(1200.0, 0.5), (3600.0, 0.3)]  # the pruned trial's 2.0 is no result
    rows = collect_trials(a)
    assert best_so_far(rows, "maximize", stats.started) == [(1200.0, 0.5), (3600.0, 0.5)]


# --- the command line ----------------------------------------------------------------------------


def test_cli_one_folder_writes_the_table_two_folders_compare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = timed_sweeps(tmp_path)
    main([str(a)])
    assert "3 trials: 2 completed, 1 pruned, 0 failed" in capsys.readouterr().out
    assert (a / "sweep_summary.csv").is_file()
    main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "0.50" in out and (b / "compare.md").is_file()


def bad_inputs(root: Path) -> dict[str, list[str]]:
    a, b = timed_sweeps(root)
    other = write_sweep(root / "other", ["lr"], metric="val/acc", direction="maximize")
    write_trial(other, 0, {"lr": 0.1}, "completed", 0.9)
    (root / "empty").mkdir()
    return {
        "missing": [str(root / "nope")],
        "no trials": [str(root / "empty")],
        "three": [str(a), str(b), str(a)],
        "none": [],
        "metrics differ": [str(a), str(other)],
        "unknown flag": [str(a), "--bogus"],
    }


@pytest.mark.parametrize("case", ["missing", "no trials", "three", "none", "metrics differ", "unknown flag"])
def test_cli_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = bad_inputs(tmp_path)[case]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("cnnfleet-sweep-summary: error: "), err
