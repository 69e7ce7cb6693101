"""The trainer group is lightning.Trainer's arguments one to one (held to Trainer's signature), and the
options beyond the defaults work through the real CLI: step and time limits, validation inside an
epoch, a profiler's report in the run folder, early stopping and the model summary callbacks."""

import dataclasses
import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest

from cnnfleet.config.schema import TrainerConfig
from cnnfleet.tasks.train import _stop_reason
from cnnfleet.training.builders import MODULE_KEYS, TRAINER_ARGS_ELSEWHERE
from conftest import run_cli

CNNFLEET_KEYS = {*MODULE_KEYS, "check_finite_every_n_steps"}  # trainer keys that are cnnfleet's own


def test_trainer_group_is_lightning_trainer_one_to_one() -> None:
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    keys = {field.name for field in dataclasses.fields(TrainerConfig)}
    missing = arguments - keys - set(TRAINER_ARGS_ELSEWHERE)
    assert not missing, f"lightning.Trainer arguments neither in the trainer group nor placed elsewhere: {missing}"
    assert not (keys - arguments - CNNFLEET_KEYS), "trainer keys that Trainer does not take"
    assert not (keys & set(TRAINER_ARGS_ELSEWHERE)), "a key both passed through and set elsewhere"


CASES = {
    "steps": [
        "trainer.max_steps=12",
        "trainer.val_check_interval=5",
        "trainer.profiler=simple",
        "callbacks=[default,model_summary]",
        "test=false",
    ],
    "early": [
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=10",
        "trainer.max_epochs=6",
        "test=false",
    ],
    "pytorch-profiler": [
        "trainer.profiler=pytorch",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "test=false",
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The three runs, two at a time, each in its own root."""

    def one(name: str) -> tuple[Path, object]:
        root = tmp_path_factory.mktemp(name)
        return root, run_cli("cnnfleet-train", ["logger=csv", *CASES[name]], root)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


def _run(runs: dict, name: str) -> tuple[Path, dict, object]:
    root, result = runs[name]
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (root / "logs" / "train" / "runs").iterdir()
    return run, json.loads((run / "summary.json").read_text()), result


def test_max_steps_val_check_interval_simple_profiler_and_model_summary(runs: dict) -> None:
    run, summary, result = _run(runs, "steps")
    assert summary["fit"]["global_step"] == 12 and summary["fit"]["stopped_by"] == "trainer.max_steps=12"
    report = run / "profiler" / "fit-simple.txt"
    assert report.is_file() and "run_training_epoch" in report.read_text()
    assert "Total params" in result.stdout  # ModelSummary's table
    # validation every 5 training batches: at steps 4 and 9 (Lightning's step - 1 convention), and at the
    # step where max_steps ends the fit mid-epoch (11): val/ metrics and a best.ckpt of the final weights
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    val_steps = {int(r[header.index("step")]) for r in rows[1:] if r[header.index("val/loss")]}
    assert val_steps == {4, 9, 11}, val_steps
    assert (run / "checkpoints" / "best.ckpt").is_file() and summary["fit"]["final_val"]["val/acc"] > 0
    assert "could not find the monitored key" not in result.stderr


def test_early_stopping_ends_a_completed_run_and_says_why(runs: dict) -> None:
    run, summary, result = _run(runs, "early")
    # min_delta=10 is never met: epoch 0 sets the best, epoch 1 is the one patience allows
    assert summary["status"] == "completed" and summary["fit"]["epochs"] == 2
    assert summary["fit"]["stopped_early_at_epoch"] == 1
    assert "early stopping on val/loss at epoch 1" in result.stdout
    assert json.loads((run / "state.json").read_text())["status"] == "completed"


def test_pytorch_profiler_writes_its_report_and_a_chrome_trace(runs: dict) -> None:
    run, summary, _ = _run(runs, "pytorch-profiler")
    files = {path.name for path in (run / "profiler").iterdir()}
    assert "fit-pytorch.txt" in files, files
    assert any(name.endswith(".pt.trace.json") for name in files), files
    assert summary["fit"]["global_step"] == 3


def test_the_step_budget_is_named_before_early_stopping_and_fast_dev_run_as_itself() -> None:
    early = SimpleNamespace(stopped_epoch=1, monitor="val/loss")

    def trainer(**kw: object) -> SimpleNamespace:
        base = {
            "fast_dev_run": False,
            "max_steps": 25,
            "global_step": 25,
            "early_stopping_callback": early,
            "callbacks": [],
        }
        return SimpleNamespace(**{**base, **kw})

    # early stopping fired at the validation of the last step: the budget ended the run
    assert _stop_reason(trainer()) == {"stopped_by": "trainer.max_steps=25"}
    assert _stop_reason(trainer(global_step=19))["stopped_by"] == "early stopping on val/loss at epoch 1"
    assert _stop_reason(trainer(fast_dev_run=1, max_steps=1, global_step=1)) == {"stopped_by": "trainer.fast_dev_run=1"}
