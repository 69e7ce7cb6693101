"""Sweeps through the real CLI: Optuna (resumable, failures recorded), grid, DDP trials, results table."""

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnfleet.sweeps.optuna_search import search_space
from cnnfleet.sweeps.results import TrialRow, rank_rows, swept_keys
from conftest import run_cli
from sweep_helpers import attempts, enqueue, load_study, start_cli, study_states, wait_for
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


def test_optuna_sweep_interrupted_and_resumed_twice_never_repeats_parameters(tmp_path: Path) -> None:
    """Ctrl-C while a trial trains, twice: the stopped trial continues in its folder from its checkpoint,
    and the sampler, seeded with seed + trials held, never draws earlier parameters again (a fixed seed
    made the first new trial of every invocation repeat trial 0's)."""
    optuna = [
        "-m",
        "hparams_search=digits_optuna",
        "trainer.max_epochs=3",
        "logger=csv",
        "hydra.sweeper.sampler.n_startup_trials=2",
    ]
    sweep = tmp_path / "logs" / "train" / "sweeps" / "digits_optuna"
    for interrupted in ("1", "2"):  # the driver and the trial get SIGINT as from a terminal
        driver = start_cli([*optuna, "hydra.sweeper.n_trials=5"], tmp_path, tmp_path / "driver.log")
        checkpoint = sweep / interrupted / "checkpoints" / "last.ckpt"
        wait_for(checkpoint.is_file, f"trial {interrupted}'s first checkpoint", driver)
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, (tmp_path / "driver.log").read_text()[-3000:]
        assert summary(sweep / interrupted)["status"] == "stopped"
    log = (tmp_path / "driver.log").read_text()
    assert "trial 1 continues in its folder" in log and "sweep stopped by SIGINT" in log

    final = run_cli("cnnfleet-train", [*optuna, "hydra.sweeper.n_trials=5"], tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "2 finished trials, 3 to run" in final.stdout and "trial 2 continues in its folder" in final.stdout
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1", "2", "3", "4"]
    assert study_states(sweep) == ["COMPLETE"] * 5
    params = [tuple(sorted(t.params.items())) for t in load_study(sweep).trials]
    assert len(set(params)) == 5, params  # every trial a new point of the space
    for n in ("1", "2"):  # resumed where it stopped, its metrics written once
        runs = attempts(sweep / n)
        assert len(runs) == 2 and runs[1]["resumed_from_step"] == runs[0]["step"] > 0, runs
        steps = [row["step"] for row in csv.DictReader((sweep / n / "metrics.csv").open()) if row.get("train/loss")]
        assert len(steps) == len(set(steps))

    rows = table(sweep)
    assert len(rows) == 5
    metric = "val/loss"  # digits_optuna minimizes val/loss
    for row in rows:  # the table holds exactly what each run wrote
        assert row["status"] == "completed"
        assert float(row[metric]) == summary(row["run_dir"])["optimized"]["value"]
    values = [float(row[metric]) for row in rows]
    assert values == sorted(values)  # best (lowest loss) first
    names = ("optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model.widths", "label_smoothing")
    assert all(row[p] for row in rows for p in names)
    assert (sweep / "sweep_summary.md").read_text().count("| completed |") == 5
    assert (sweep / "sweep_summary.png").stat().st_size > 0
    assert f"best_trial: {rows[0]['trial']}" in (sweep / "optimization_results.yaml").read_text()
    again = run_cli("cnnfleet-train", [*optuna, "hydra.sweeper.n_trials=5"], tmp_path)
    assert again.returncode == 0 and "5 finished trials, 0 to run" in again.stdout


def test_pruning_stops_hopeless_trials_and_failures_are_retried_by_class(tmp_path: Path) -> None:
    """lr 1e-7 against 1e-2: the median pruner stops the hopeless trials at epoch 1; a trial killed by
    SIGKILL (infrastructure) runs again in its folder; a refused value (bad input, exit 2) fails at once."""
    sweep = tmp_path / "sweep"
    good, bad = {"optimizer.lr": 0.01, "label_smoothing": 0.0}, {"optimizer.lr": 1e-7, "label_smoothing": 0.0}
    refused = {"optimizer.lr": 0.01, "label_smoothing": 1.5}
    enqueue(sweep, "prune", "minimize", [good, good, bad, bad, refused])
    args = [
        "-m",
        "hydra/sweeper=cnnfleet_optuna",
        "optimized_metric=val/loss",
        "optimized_direction=minimize",
        "logger=csv",
        "trainer.max_epochs=3",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.study_name=prune",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.max_retries=1",
        "hydra.sweeper.pruner_settings={n_startup_trials:2,n_warmup_steps:1}",
        "optimizer.lr=choice(1e-7,1e-2)",
        "label_smoothing=interval(0.0,2.0)",
    ]
    driver = start_cli(args, tmp_path, tmp_path / "driver.log")
    wait_for(lambda: (sweep / "0" / "checkpoints" / "last.ckpt").is_file(), "trial 0's first checkpoint", driver)
    os.kill(attempts(sweep / "0")[-1]["pid"], signal.SIGKILL)  # its process dies without a word
    assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    log = (tmp_path / "driver.log").read_text()

    study = load_study(sweep, "prune")
    assert study_states(sweep, "prune") == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "FAIL"]
    assert study.trials[0].user_attrs["retries"] == 1 and "retry 1 of 1 in its folder" in log
    runs = attempts(sweep / "0")
    assert len(runs) == 2 and runs[0]["exit"] == "ended without a record (killed or lost)", runs
    assert summary(sweep / "0")["status"] == "completed" and summary(sweep / "0")["fit"]["epochs"] == 3
    for n in ("2", "3"):
        pruned = summary(sweep / n)
        assert pruned["status"] == "pruned" and pruned["fit"]["epochs"] <= 2, pruned
        assert pruned["reason"].startswith("pruned at epoch 1 by MedianPruner (val/loss ")
        assert json.loads((sweep / n / "state.json").read_text())["status"] == "pruned"
        assert study.trials[int(n)].intermediate_values.keys() == {0, 1}
    assert "label_smoothing" in study.trials[4].user_attrs["fail_reason"]  # the one line, not retried
    assert study.trials[4].user_attrs["retries"] == 0
    rows = {r["trial"]: r for r in table(sweep)}
    assert [rows[n]["status"] for n in "01234"] == ["completed", "completed", "pruned", "pruned", "failed"]


def test_local_slots_start_trials_as_slots_free_and_a_killed_driver_reattaches(tmp_path: Path) -> None:
    """Uneven trials on 2 slots: short trials follow each other while the long one runs (no batches);
    the driver killed with SIGKILL is started again: it waits for the trials that still run, never
    runs them twice, and finishes the study."""
    sweep = tmp_path / "sweep"
    enqueue(sweep, "slots", "maximize", [{"trainer.max_epochs": e} for e in (40, 1, 1, 1)])
    args = [
        "-m",
        "hydra/sweeper=cnnfleet_optuna",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.study_name=slots",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner=none",
        "trainer.max_epochs=choice(40,1)",
    ]
    driver = start_cli(args, tmp_path, tmp_path / "driver.log")
    wait_for(lambda: (sweep / "2" / "state.json").is_file(), "trial 2 (the slot trial 1 freed)", driver)
    assert not (sweep / "0" / "summary.json").exists()  # trial 0 still trains: trial 2 did not wait for it
    driver.kill()
    driver.wait()
    second = start_cli(args, tmp_path, tmp_path / "second.log")  # it waits for trial 0; Ctrl-C stops trial 0 too
    wait_for(lambda: "trial 0 still runs (pid" in (tmp_path / "second.log").read_text(), "re-attaching", second)
    second.send_signal(signal.SIGINT)  # the driver alone: trial 0 belongs to the first driver's process group
    assert second.wait(timeout=120) == 130
    assert summary(sweep / "0")["status"] == "stopped"  # saved and stopped, not left running alone
    again = run_cli("cnnfleet-train", args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 0 continues in its folder" in again.stdout
    assert study_states(sweep, "slots") == ["COMPLETE"] * 4
    runs = attempts(sweep / "0")
    assert len(runs) == 2 and runs[1]["resumed_from_step"] == runs[0]["step"] > 0, runs
    log = again.stdout + (tmp_path / "driver.log").read_text() + (tmp_path / "second.log").read_text()
    assert log.count("trial 0 started") == 1 and "trial 3 started" in log  # trial 0 was never run twice


BAD_SWEEPER_VALUES = {
    "hydra.sweeper.n_jobs=abc": "hydra.sweeper.n_jobs='abc': use a whole number >= 1",
    "hydra.sweeper.n_jobs=1.5": "hydra.sweeper.n_jobs=1.5: use a whole number >= 1",
    "hydra.sweeper.max_retries=-1": "hydra.sweeper.max_retries=-1: use a whole number >= 0",
    "hydra.sweeper.pruner_settings=5": "hydra.sweeper.pruner_settings=5: use a mapping",
    "hydra.sweeper.pruner_settings={warmup:2}": "pruner_settings.warmup: MedianPruner takes n_startup_trials",
    "hydra.sweeper.pruner=mean": "hydra.sweeper.pruner=mean: use one of median, hyperband",
    "hydra.sweeper.poll_seconds=0": "hydra.sweeper.poll_seconds=0: use a number of seconds > 0",
    "hydra.sweeper.max_failure_rate=2": "hydra.sweeper.max_failure_rate=2: use a fraction between 0 and 1",
    "hydra.sweeper.storage=/nonexistent/dir/x.journal": "its folder /nonexistent/dir does not exist",
    "hydra.sweeper.storage=sqlite:///other.db": "holds trial folders (0) that study 'digits_optuna' in sqlite",
}


def test_bad_sweeper_values_and_a_study_that_does_not_own_the_folder_are_one_line_before_any_trial(
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(item: tuple[int, str]) -> tuple[str, object]:
        n, override = item
        root = tmp_path / str(n)
        (root / "logs" / "train" / "sweeps" / "digits_optuna" / "0").mkdir(parents=True)  # a trial of another study
        return override, run_cli("cnnfleet-train", ["-m", "hparams_search=digits_optuna", override], root)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(attempt, enumerate(BAD_SWEEPER_VALUES)))
    for override, expected in BAD_SWEEPER_VALUES.items():
        result = results[override]
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], (override, result.stderr[-2000:])
        assert "trial 0 started" not in result.stdout
    assert not Path("/nonexistent").exists()


def test_optuna_records_a_diverging_trial_as_failed_and_goes_on(tmp_path: Path) -> None:
    # the seeded sampler (seed 42) draws 3e-3 for trial 0 and 1e6 for trial 1
    args = ["-m", "hparams_search=digits_optuna", *QUICK, "hydra.sweeper.n_trials=2", "optimizer.lr=choice(1e6,3e-3)"]
    result = run_cli("cnnfleet-train", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_folder(tmp_path, "sweeps")
    assert study_states(sweep) == ["COMPLETE", "FAIL"]
    rows = table(sweep)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[1]["optimizer.lr"] == "1000000.0"
    assert "training loss became nan at optimizer step" in rows[1]["reason"]
    failed = load_study(sweep).trials[1]
    assert "became nan" in failed.user_attrs["fail_reason"] and failed.user_attrs["retries"] == 0
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
    result = run_cli(
        "cnnfleet-train",
        ["-m", *QUICK, "optimizer.lr=0.01,0.03", "model=simple_cnn,resnet_cifar", "model.depth=18", "model.width=8"],
        tmp_path,
    )
    # model.depth is not a simple_cnn key: the composition error is one line, before any trial
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "model.depth" in lines[0], result.stderr[-3000:]

    result = run_cli(
        "cnnfleet-train", ["-m", *QUICK, "optimizer.lr=0.01,0.03", "model=simple_cnn,resnet_cifar"], tmp_path
    )
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
    args = [
        "-m",
        "hparams_search=digits_optuna",
        "trainer.max_epochs=1",
        "logger=wandb",
        "hydra.sweeper.n_trials=2",
        "device=ddp",
        "device.devices=2",
    ]
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
        ]
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

    rows = [
        row(0, "failed", None, lr="1"),
        row(1, "completed", 0.5, lr="2"),
        row(2, "incomplete", None, lr="3"),
        row(3, "completed", 0.9, lr="4"),
        row(4, "completed", 0.9, lr="4"),
    ]
    assert [r.trial for r in rank_rows(rows, "maximize")] == [3, 4, 1, 0, 2]
    assert [r.trial for r in rank_rows(rows, "minimize")] == [1, 3, 4, 0, 2]
    assert swept_keys(rows) == ["lr"]
