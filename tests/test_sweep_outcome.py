"""How a trial's end is classified (sweeps/outcome.py): what the sweep retries, what it tells Optuna."""

import json
from pathlib import Path

import pytest

from cnnfleet.sweeps.outcome import COMPLETE, FAIL, PRUNED, RETRY, judge


def folder(tmp_path: Path, summary: dict | None) -> Path:
    if summary is not None:
        (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


@pytest.mark.parametrize(
    ("summary", "exit_code", "kind"),
    [
        ({"status": "completed", "optimized": {"value": 0.5}}, 0, COMPLETE),
        ({"status": "completed", "optimized": {"value": None}}, 0, FAIL),  # nothing to tell Optuna
        ({"status": "pruned", "optimized": {"value": 2.3}, "reason": "pruned at epoch 1"}, 0, PRUNED),
        ({"status": "failed", "error": "RankLost", "reason": "rank 1 died"}, 1, RETRY),
        ({"status": "failed", "error": "TasksLost", "reason": "tasks ended without a record"}, 137, RETRY),
        ({"status": "failed", "error": "NonFiniteLoss", "reason": "loss became nan"}, 1, FAIL),
        ({"status": "failed", "error": "ConfigError", "reason": "bad value"}, 2, FAIL),
        ({"status": "failed", "error": "ZeroDivisionError", "reason": "a bug"}, 1, FAIL),
        ({"status": "stopped", "reason": "stopped by SIGTERM during training"}, 143, RETRY),
        (None, 2, FAIL),  # refused before its run folder: bad input
        (None, -9, RETRY),  # killed without a word
        (None, None, RETRY),  # a re-attached process: its code is unknown
        (None, 0, FAIL),
    ],
)
def test_judge_classifies_each_end(tmp_path: Path, summary: dict | None, exit_code: int | None, kind: str) -> None:
    assert judge(folder(tmp_path, summary), exit_code, "label_smoothing=1.5: input should be less than 1").kind == kind


def test_a_refused_trial_keeps_the_refusal_line_as_its_reason(tmp_path: Path) -> None:
    outcome = judge(tmp_path, 2, "label_smoothing=1.5: input should be less than 1")
    assert outcome.reason == "label_smoothing=1.5: input should be less than 1"
    assert judge(tmp_path, 1, "internal error (KeyError: x); this is a cnnfleet bug").kind == FAIL
