"""W&B with the real wandb library in offline mode, read back from its .wandb file."""

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnfleet.run.secrets import redact
from cnnfleet.tracking.wandb_logger import has_api_key, wandb_mode
from conftest import run_cli
from test_lifecycle import must, start, the_run
from wandb_records import read_run

SECRET = "dummy-secret-value"


def offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))


def csv_rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.fixture
def no_key(monkeypatch, tmp_path) -> dict:
    """No API key anywhere (not in the env, no ~/.netrc), WANDB_MODE unset."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return {"HOME": str(tmp_path / "home")}


def test_without_a_key_wandb_runs_offline(no_key) -> None:
    assert not has_api_key() and wandb_mode() == "offline"
    assert wandb_mode({"WANDB_API_KEY": "k"}) == "online" and wandb_mode({"WANDB_MODE": "disabled"}) == "disabled"


def test_redact_replaces_secret_looking_keys_at_any_depth() -> None:
    cfg = {"a": 1, "wandb": {"api_key": "s", "nested": [{"auth_token": "t"}]}, "password": None, "keyboard": 2}
    assert redact(cfg) == {
        "a": 1,
        "wandb": {"api_key": "***", "nested": [{"auth_token": "***"}]},
        "password": None,
        "keyboard": "***",
    }


def test_offline_run_records_config_and_the_metrics_of_metrics_csv(cli, no_key) -> None:
    result = cli("logger=wandb", "trainer.max_epochs=3", env=no_key)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    (wandb_file,) = offline_runs(run)  # exactly one W&B run
    logged = read_run(wandb_file)
    assert logged["config"]["data"]["batch_size"] == 64 and logged["config"]["seed"] == 42
    assert logged["config"]["run_env"]["versions"]["torch"]
    rows = csv_rows(run)
    csv_val = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    wandb_val = [h["val/acc"] for h in logged["history"] if "val/acc" in h]
    assert wandb_val == pytest.approx(csv_val, abs=1e-7) and len(wandb_val) == 3
    csv_test = next(float(r["test/acc"]) for r in rows if r.get("test/acc"))
    assert logged["summary"]["test/acc"] == pytest.approx(csv_test, abs=1e-7)
    assert any("train/loss" in h for h in logged["history"]) and any("lr-AdamW" in h for h in logged["history"])
    assert "wandb sync" in result.stdout + result.stderr


def test_resumed_run_continues_the_same_wandb_run(cli, no_key, tmp_path) -> None:
    # no_key set HOME and removed the key from this process's environment, which start() passes on
    proc = start(["logger=wandb", "trainer.max_epochs=3", "test=false"], tmp_path)
    run = must(lambda: the_run(tmp_path), 60, "the run folder")
    must(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 120, "the first epoch's last.ckpt")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    second = cli("logger=wandb", "trainer.max_epochs=3", "test=false", "ckpt_path=last", env=no_key)
    assert second.returncode == 0, second.stderr[-3000:]
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    assert {p.name for p in offline_runs(run)} == {f"run-{run_id}.wandb"}


def test_api_key_never_reaches_files_or_output(cli, no_key) -> None:
    env = {**no_key, "WANDB_API_KEY": SECRET, "WANDB_MODE": "offline"}
    result = cli("logger=wandb", "trainer.max_epochs=1", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert SECRET not in result.stdout + result.stderr
    # every file the run could write: its folder, W&B's cache and settings folders, the home folder
    (run,) = result.run_dirs()
    folders = [result.root, Path(no_key["HOME"])]
    scanned = {path for folder in folders if folder.is_dir() for path in folder.rglob("*") if path.is_file()}
    assert any(run in path.parents for path in scanned) and any(".wandb-" in str(path) for path in scanned)
    for path in scanned:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_ddp_makes_exactly_one_wandb_run(cli, no_key) -> None:
    result = cli(
        "logger=wandb", "device=ddp", "device.accelerator=cpu", "device.devices=2", "trainer.max_epochs=2", env=no_key
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    (wandb_file,) = offline_runs(run)
    logged = read_run(wandb_file)
    csv_test = next(float(r["test/acc"]) for r in csv_rows(run) if r.get("test/acc"))
    assert logged["summary"]["test/acc"] == pytest.approx(csv_test, abs=1e-7)
    assert logged["summary"]["test/acc"] == pytest.approx(result.summary(run)["test"]["test/acc"], abs=1e-7)
    # the 2-rank test metrics equal what ONE process computes on the same checkpoint and data
    single = run_cli("cnnfleet-eval", [f"ckpt_path={run}/checkpoints/best.ckpt"], result.root, env=no_key)
    assert single.returncode == 0, single.stderr[-2000:]
    (eval_dir,) = single.run_dirs("eval")
    one_process = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    for key in ("test/acc", "test/loss", "test/f1", "test/acc_top5"):
        assert one_process[key] == pytest.approx(result.summary(run)["test"][key], abs=1e-6), key


def test_run_folder_has_confusion_matrix_curves_and_throughput(default_run) -> None:
    (run,) = default_run.run_dirs()
    counts = np.loadtxt(run / "confusion_matrix.csv", delimiter=",", dtype=np.int64)
    assert counts.shape == (10, 10) and counts.sum() == 359  # every test image once
    assert np.trace(counts) / counts.sum() == pytest.approx(default_run.summary()["test"]["test/acc"], abs=1e-6)
    for name in ("confusion_matrix.png", "curves.png"):
        with Image.open(run / name) as image:
            image.verify()  # a valid PNG
    fit = default_run.summary()["fit"]
    assert fit["images_per_second"] > 0 and 0 <= fit["data_wait_fraction"] < 1
    rows = csv_rows(run)
    assert [float(r["perf/images_per_sec"]) for r in rows if r.get("perf/images_per_sec")]
    assert all(float(r["perf/images_per_sec"]) > 0 for r in rows if r.get("perf/images_per_sec"))
    test = default_run.summary()["test"]
    assert {"test/acc", "test/acc_top5", "test/f1", "test/loss"} <= set(test) and test["test/acc_top5"] >= test[
        "test/acc"
    ]


def test_loggers_combine(cli, no_key) -> None:
    result = cli("logger=[wandb,csv,tensorboard]", "trainer.max_epochs=1", env=no_key)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    assert len(offline_runs(run)) == 1 and (run / "metrics.csv").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_default_logger_is_wandb_beside_csv(default_run) -> None:
    (run,) = default_run.run_dirs()
    assert len(offline_runs(run)) == 1 and (run / "metrics.csv").is_file()


def test_runs_of_one_sweep_share_a_wandb_group(cli, no_key) -> None:
    result = cli("-m", "trainer.max_epochs=1", "test=false", "seed=1,2", env=no_key)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (result.root / "logs" / "train" / "multiruns").iterdir()
    files = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one W&B run per trial
    assert {read_run(f)["group"] for f in files} == {f"sweep-{sweep.name}"}
