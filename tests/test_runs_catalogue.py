"""cnnfleet-runs (the local run catalogue) through its real CLI, and logger=mlflow's local store.

The catalogue is built from copies of the session's default run (no new training): a better
second run, a failed, a damaged, a half-written, a running, a killed and a smoke one.
"""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from cnnfleet.run.state import RunLock
from conftest import run_cli

BAD_INPUT = [
    (["list", "--sort", "bogus"], "unknown sort key 'bogus'"),
    (["--logs", "/nonexistent/logs"], "logs folder /nonexistent/logs does not exist"),
    (["list", "--filter", "val/acc>high"], "'high' is not a number"),
    (["list", "--filter", "colour=red"], "unknown filter key 'colour'"),
    (["diff", "a_default", "nothing-like-this"], "no run folder 'nothing-like-this'"),
    (["list", "--limit", "0"], "--limit 0 must be 1 or more"),
]


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _copy(source: Path, runs: Path, name: str) -> Path:
    target = runs / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "*.png", ".lock"))
    return target


@pytest.fixture(scope="module")
def catalogue(default_run, tmp_path_factory):
    """A logs root with eight run folders made from the default run; yields (root, lock held on 'live')."""
    root = tmp_path_factory.mktemp("catalogue")
    runs = root / "logs" / "train" / "runs"
    (source,) = default_run.run_dirs()
    _copy(source, runs, "a_default")
    better = _copy(source, runs, "b_better")
    summary = json.loads((better / "summary.json").read_text())
    summary["fit"]["final_val"]["val/acc"] = 0.9999
    (better / "summary.json").write_text(json.dumps(summary))
    config = yaml.safe_load((better / ".hydra" / "config.yaml").read_text())
    config["optimizer"]["lr"] = 0.01
    (better / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    failed = _copy(source, runs, "c_failed")
    _edit_json(failed / "summary.json", status="failed", reason="diverged: loss is nan at step 7", test={})
    _edit_json(failed / "state.json", status="failed")
    damaged = _copy(source, runs, "d_damaged")
    (damaged / "summary.json").write_text('{"status": "compl')  # half-written by hand or a full disk
    half = runs / "e_half" / ".hydra"
    half.mkdir(parents=True)
    (half.parent / "train.log").write_text("")
    smoke = _copy(source, runs, "h_smoke")  # a debug=fast_dev_run run: completed, but no result
    _edit_json(smoke / "summary.json", smoke="trainer.fast_dev_run=True")
    for name in ("f_live", "g_killed"):
        folder = _copy(source, runs, name)
        (folder / "summary.json").unlink()
        _edit_json(folder / "state.json", status="running")
    lock = RunLock(runs / "f_live")
    lock.acquire()  # this process plays the live owner
    yield root
    lock.release()


def runs_cli(root: Path, *args: str, env: dict | None = None):
    return run_cli("cnnfleet-runs", list(args), root, timeout=60, env=env)


def test_list_shows_every_run_with_its_status_and_never_a_traceback(catalogue) -> None:
    result = runs_cli(catalogue, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {Path(row["run"]).name: row for row in json.loads(result.stdout)}
    statuses = {name: row["status"] for name, row in rows.items()}
    assert statuses == {
        "a_default": "completed",
        "b_better": "completed",
        "c_failed": "failed",
        "d_damaged": "completed",
        "e_half": "incomplete",
        "f_live": "running",
        "g_killed": "interrupted",
        "h_smoke": "smoke",
    }
    assert rows["h_smoke"]["note"].startswith("smoke run (trainer.fast_dev_run=True): not a result")
    assert rows["c_failed"]["note"].startswith("diverged: loss is nan")
    assert "summary.json unreadable" in rows["d_damaged"]["note"]
    assert "killed or its node lost" in rows["g_killed"]["note"]
    assert rows["a_default"]["metrics"]["test/acc"] > 0.9 and rows["a_default"]["world_size"] == 1
    assert rows["a_default"]["device"] == "cpu x1" and rows["a_default"]["wall_seconds"] > 0
    table = runs_cli(catalogue)  # no command: the table
    assert table.returncode == 0 and "Traceback" not in table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["run", "status", "task", "test/acc", "val/acc", "date", "device", "world", "wall", "note"]
    assert len(lines) == 8


def test_filter_sort_and_limit_pick_the_best_completed_run(catalogue) -> None:
    result = runs_cli(catalogue, "list", "--filter", "status=completed", "--sort", "val/acc", "--limit", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["train/runs/b_better", "train/runs/a_default"]
    numeric = runs_cli(catalogue, "list", "--filter", "val/acc>=0.9999", "--json")
    assert [Path(row["run"]).name for row in json.loads(numeric.stdout)] == ["b_better"]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(catalogue, args, message) -> None:
    result = runs_cli(catalogue, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_diff_shows_the_changed_config_keys_side_by_side(catalogue) -> None:
    result = runs_cli(catalogue, "diff", "a_default", "b_better")
    assert result.returncode == 0, result.stderr
    assert "1 keys differ" in result.stdout
    (row,) = [line.split() for line in result.stdout.splitlines() if line.startswith("optimizer.lr")]
    assert row[1:] == ["0.003", "0.01"]


def test_wandb_lists_unsynced_offline_runs_and_syncs_them_on_request(catalogue, tmp_path) -> None:
    listed = runs_cli(catalogue, "wandb", "--filter", "run=*default")
    assert listed.returncode == 0, listed.stderr
    (command,) = [line for line in listed.stdout.splitlines() if line.startswith("wandb sync ")]
    folder = Path(command.removeprefix("wandb sync "))
    assert folder.name.startswith("offline-run-") and list(folder.glob("run-*.wandb"))
    # stand-ins for `wandb sync` (no network here): one that fails, one that exits 0 without wandb's marker
    # (not an upload), then one that marks the upload as wandb does
    fake = tmp_path / "bin" / "wandb"
    fake.parent.mkdir()
    path = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    for script, says in (
        ('echo "wandb: ERROR Network error (ConnectionError)" >&2\nexit 1\n', "Network error"),
        ('echo "nothing to do"\n', "nothing to do"),
    ):
        fake.write_text("#!/bin/sh\n" + script)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        failed = runs_cli(catalogue, "wandb", "--sync", "--filter", "run=*default", env=path)
        assert failed.returncode == 1 and f"FAILED {folder}: " in failed.stdout and says in failed.stdout, failed.stdout
        assert "0 of 1 uploaded" in failed.stdout and not list(folder.glob("run-*.wandb.synced"))
    fake.write_text('#!/bin/sh\nfor f in "$2"/run-*.wandb; do touch "$f.synced"; done\necho "done."\n')
    synced = runs_cli(catalogue, "wandb", "--sync", "--filter", "run=*default", env=path)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"synced {folder}: done." in synced.stdout
    again = runs_cli(catalogue, "wandb", "--filter", "run=*default")
    assert "1 synced, 0 not synced" in again.stdout and "wandb sync " not in again.stdout


def test_logger_mlflow_writes_the_metrics_to_the_local_store(cli) -> None:
    result = cli("logger=mlflow", "trainer.max_epochs=1", "tags=[smoke]")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    store = result.root / "logs" / "mlruns"
    (meta,) = store.glob("*/*/meta.yaml")
    mlflow_run = meta.parent
    assert (run / "mlflow_run_id.txt").read_text().strip() == mlflow_run.name
    assert yaml.safe_load(meta.read_text())["run_name"] == run.name
    assert (mlflow_run / "tags" / "cnnfleet.run_dir").read_text() == str(run)
    assert (mlflow_run / "tags" / "tag.smoke").is_file()
    # the metric file holds "<time ms> <value> <step>" lines; the test accuracy equals the summary's
    test_acc = float((mlflow_run / "metrics" / "test" / "acc").read_text().split()[1])
    assert test_acc == pytest.approx(result.summary(run)["test"]["test/acc"], abs=1e-7)
    assert (mlflow_run / "metrics" / "val" / "acc").is_file() and (mlflow_run / "metrics" / "train" / "loss").is_file()
    assert (mlflow_run / "params" / "optimizer" / "lr").read_text() == "0.003"
    assert (run / "metrics.csv").is_file()  # csv beside it, as with wandb
