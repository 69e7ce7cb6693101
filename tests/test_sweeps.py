"""Sweeps through the real CLI: Optuna (resumable, failures recorded), grid, DDP trials, results table."""

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnfleet.sweeps.optuna_search import search_space
from cnnfleet.sweeps.results import TrialRow, rank_rows, swept_keys
from conftest import run_cli
from wandb_records import read_run

QUICK = ["trainer.max_epochs=1", "logger=csv"]


def sweep_folder(root: Path, kind: str = "multiruns") -> Path:
    (folder,) = (root / "logs" / "train" / kind).iterdir()
    return folder


def table(sweep: Path) -> list[dict]:
    with (sweep / "sweep_summary.csv").open() as f:
        return list(csv.DictReader(f))


def summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def study_states(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [state for (state,) in con.execute("SELECT state FROM trials ORDER BY number")]


def test_optuna_sweep_resumes_without_repeating_trials(tmp_path: Path) -> None:
    optuna = ["-m", "hparams_search=digits_optuna", *QUICK]
    first = run_cli("cnnfleet-train", [*optuna, "hydra.sweeper.n_trials=2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = sweep_folder(tmp_path, "sweeps")
    assert sweep.name == "digits_optuna"  # named after the study: the same command finds it again
    finished_first = {n: (sweep / n / "summary.json").stat().st_mtime_ns for n in ("0", "1")}

    second = run_cli("cnnfleet-train", [*optuna, "hydra.sweeper.n_trials=4"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 finished trials, 2 to run" in second.stdout
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1", "2", "3"]
    assert {n: (sweep / n / "summary.json").stat().st_mtime_ns for n in ("0", "1")} == finished_first  # not rerun
    assert study_states(sweep / "optuna.db") == ["COMPLETE"] * 4

    rows = table(sweep)
    assert len(rows) == 4
    metric = "val/loss"  # digits_optuna minimizes val/loss
    for row in rows:  # the table holds exactly what each run wrote
        assert row["status"] == "completed"
        assert float(row[metric]) == summary(row["run_dir"])["optimized"]["value"]
    values = [float(row[metric]) for row in rows]
    assert values == sorted(values)  # best (lowest loss) first
    params = ("optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model.widths", "label_smoothing")
    assert all(row[p] for row in rows for p in params)
    assert (sweep / "sweep_summary.md").read_text().count("| completed |") == 4
    assert (sweep / "sweep_summary.png").stat().st_size > 0
    results = (sweep / "optimization_results.yaml").read_text()
    assert f"best_trial: {rows[0]['trial']}" in results

    third = run_cli("cnnfleet-train", [*optuna, "hydra.sweeper.n_trials=4"], tmp_path)
    assert third.returncode == 0 and "4 finished trials, 0 to run" in third.stdout
    assert len(table(sweep)) == 4


def test_optuna_records_a_diverging_trial_as_failed_and_goes_on(tmp_path: Path) -> None:
    # the seeded sampler (seed 42) draws 3e-3 for trial 0 and 1e6 for trial 1
    args = ["-m", "hparams_search=digits_optuna", *QUICK, "hydra.sweeper.n_trials=2", "optimizer.lr=choice(1e6,3e-3)"]
    result = run_cli("cnnfleet-train", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_folder(tmp_path, "sweeps")
    assert study_states(sweep / "optuna.db") == ["COMPLETE", "FAIL"]
    rows = table(sweep)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[1]["optimizer.lr"] == "1000000.0"
    assert "training loss became nan at optimizer step" in rows[1]["reason"]
    with sqlite3.connect(sweep / "optuna.db") as con:
        (reason,) = con.execute("SELECT value_json FROM trial_user_attributes WHERE key='fail_reason'").fetchone()
    assert "became nan" in reason
    assert "Traceback" not in result.stderr


def test_grid_sweep_with_a_failing_trial_lists_it_and_finishes_the_rest(tmp_path: Path) -> None:
    result = run_cli("cnnfleet-train", ["-m", *QUICK, "optimizer.lr=1e6,3e-3"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trial 0 failed: training loss became nan" in result.stderr and "Traceback" not in result.stderr
    sweep = sweep_folder(tmp_path)
    rows = {r["trial"]: r for r in table(sweep)}
    assert rows["0"]["status"] == "failed" and rows["1"]["status"] == "completed"
    assert summary(sweep / "0")["status"] == "failed"
    assert not (sweep / "0" / "checkpoints" / "last.ckpt").exists()  # nothing saved after the NaN


def test_grid_sweep_of_2x2_makes_4_runs_and_a_4_row_table(tmp_path: Path) -> None:
    result = run_cli("cnnfleet-train", ["-m", *QUICK, "optimizer.lr=0.01,0.03", "model=simple_cnn,resnet_cifar",
                                        "model.depth=18", "model.width=8"], tmp_path)  # fmt: skip
    assert result.returncode != 0  # model.depth is not a simple_cnn key: the composition error is one line
    assert "Traceback" not in result.stderr

    result = run_cli("cnnfleet-train", ["-m", *QUICK, "optimizer.lr=0.01,0.03", "model=simple_cnn,resnet_cifar"],
                     tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = next(p for p in (tmp_path / "logs" / "train" / "multiruns").iterdir() if (p / "sweep_summary.csv").exists())
    rows = table(sweep)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {(r["optimizer.lr"], r["model"]) for r in rows} == {
        (lr, m) for lr in ("0.01", "0.03") for m in ("simple_cnn", "resnet_cifar")
    }
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)  # val/acc is maximized: best first
    for row in rows:
        assert float(row["val/acc"]) == summary(row["run_dir"])["fit"]["final_val"]["val/acc"]

    (sweep / "sweep_summary.csv").unlink()
    again = run_cli("cnnfleet-sweep-summary", [str(sweep)], tmp_path)
    assert again.returncode == 0 and len(table(sweep)) == 4
    bad = run_cli("cnnfleet-sweep-summary", [str(tmp_path / "nope")], tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "is not a folder" in bad.stderr


@pytest.mark.slow
def test_ddp_trials_train_the_same_hyperparameters_on_every_rank(tmp_path: Path) -> None:
    args = ["-m", "hparams_search=digits_optuna", "trainer.max_epochs=1", "logger=wandb", "hydra.sweeper.n_trials=2",
            "device=ddp", "device.devices=2"]  # fmt: skip
    result = run_cli("cnnfleet-train", args, tmp_path, env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "logs" / "train").iterdir()] == ["sweeps"]  # no rank made its own sweep
    sweep = sweep_folder(tmp_path, "sweeps")
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1"]
    logged = []
    for trial in trials:
        lines = {}
        for log_file in trial.glob("*.log"):
            for line in log_file.read_text().splitlines():
                if " hyperparameters: " in line:
                    rank = line.split("rank ")[1].split(" of ")[0]
                    lines[rank] = line.split(" hyperparameters: ")[1]
        assert set(lines) == {"0", "1"}, f"{trial}: every rank logs what it trains"
        assert lines["0"] == lines["1"]
        params = json.loads(lines["0"])
        overrides = dict(o.split("=", 1) for o in (trial / ".hydra" / "overrides.yaml").read_text().split("- ")[1:])
        assert params["optimizer"]["lr"] == pytest.approx(float(overrides["optimizer.lr"]))
        assert summary(trial)["device"]["world_size"] == 2 and summary(trial)["status"] == "completed"
        logged.append(lines["0"])
        (wandb_file,) = trial.glob("wandb/offline-run-*/run-*.wandb")  # one W&B run per trial, in the group
        assert read_run(wandb_file)["group"] == "sweep-digits_optuna"
    assert logged[0] != logged[1]  # the two trials did sample different hyperparameters
    assert len(table(sweep)) == 2


def test_search_space_parses_hydra_sweep_syntax() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = search_space(
        [
            "a=choice(1,2)",
            "b=tag(log, interval(1e-4, 1e-1))",
            "c=range(2, 10, 4)",
            "d=interval(0.0, 0.5)",
            "e=5",
            "f=interval(1, 8)",
            "g=choice([1,2],[3,4])",
        ]  # fmt: skip
    )
    assert space["a"] == CategoricalDistribution([1, 2])
    assert space["b"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["c"] == IntDistribution(2, 6, step=4)  # Hydra's range excludes its stop
    assert space["d"] == FloatDistribution(0.0, 0.5)
    assert space["f"] == FloatDistribution(1.0, 8.0)  # Hydra's interval is float; ints use range()
    assert space["g"] == CategoricalDistribution(["[1,2]", "[3,4]"])
    assert fixed == {"e": "5"}
    # a value given on the command line wins over the config's search space for that key
    assert "a" not in search_space(["a=choice(1,2)", "a=3"])[0]
    assert OverridesParser.create().parse_override("x=[1,2]").value() == [1, 2]


def test_rank_rows_puts_best_first_then_failed_then_incomplete() -> None:
    def row(trial: int, status: str, value: float | None, **overrides: str) -> TrialRow:
        return TrialRow(trial, status, value, overrides, 1.0, None, str(trial))

    rows = [row(0, "failed", None, lr="1"), row(1, "completed", 0.5, lr="2"), row(2, "incomplete", None, lr="3"),
            row(3, "completed", 0.9, lr="4"), row(4, "completed", 0.9, lr="4")]  # fmt: skip
    assert [r.trial for r in rank_rows(rows, "maximize")] == [3, 4, 1, 0, 2]
    assert [r.trial for r in rank_rows(rows, "minimize")] == [1, 3, 4, 0, 2]
    assert swept_keys(rows) == ["lr"]
