"""The run folder's life through the real CLI: stops in every phase, resumes, reuse, two at once.

Each test is a sequence a user lives through, asking at every step what the user sees and what
is lost: the exit code and the one line on stderr, state.json, and the files that must not change.
"""

import contextlib
import csv
import hashlib
import json
import os
import shlex
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import BIN, run_cli, run_main, wait_until

# a short digits run with a row in metrics.csv at every step
SHORT = ["logger=csv", "test=false", "trainer.log_every_n_steps=1"]


def start(args: list[str], root: Path) -> subprocess.Popen:
    env = {**os.environ, "CNNFLEET_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(BIN / "cnnfleet-train"), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def must(condition, timeout: float, what: str):  # noqa: ANN001, ANN201
    value = wait_until(condition, timeout, interval=0.05)
    assert value, f"timed out after {timeout} s waiting for {what}"
    return value


def the_run(root: Path) -> Path | None:
    runs = sorted((root / "logs" / "train" / "runs").glob("*/state.json"))
    return runs[-1].parent if runs else None


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def phase(run: Path) -> str | None:
    """The phase state.json names for the live attempt (None before the attempt has begun)."""
    try:
        attempts = state(run)["attempts"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return attempts[-1].get("phase") if attempts else None


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (killed, its parent gone, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def fingerprint(run: Path) -> dict[str, str]:
    """Content hash of every file of a run folder (the lock file aside)."""
    files = [p for p in run.rglob("*") if p.is_file() and p.name != ".lock"]
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def metric_rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def assert_no_rows_repeated(run: Path) -> None:
    """Every (step, metric) pair logged once, and each metric's steps in order."""
    rows = metric_rows(run)
    seen = Counter((row["step"], key) for row in rows for key, value in row.items() if value and key != "step")
    repeated = [pair for pair, count in seen.items() if count > 1 and pair[1] != "epoch"]
    assert not repeated, f"rows logged twice: {repeated[:5]}"
    for key in {key for row in rows for key in row if key not in ("step", "epoch")}:
        steps = [int(row["step"]) for row in rows if row.get(key)]
        assert steps == sorted(steps), f"{key} goes back in steps: {steps}"


def test_last_checkpoint_is_the_final_state_and_best_is_kept_apart(default_run) -> None:
    run = default_run.run_dirs()[-1]
    summary = default_run.summary(run)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == summary["fit"]["global_step"] > 0  # not the best epoch's step
    assert state(run)["status"] == "completed" and state(run)["step"] == last["global_step"]
    assert len(state(run)["attempts"]) == 1 and state(run)["attempts"][0]["exit"] == "completed"


@pytest.mark.slow
def test_ctrl_c_a_second_process_a_changed_value_two_resumes_and_a_reused_folder(tmp_path: Path) -> None:
    # one-cycle: the schedule's length is part of the run. No validation in these 8 epochs, so fit is
    # training from its first step to its last: a Ctrl-C during fit is acted on "during training" by
    # construction (a signal aimed at a phase by timing landed in the epoch's validation on a slow machine)
    args = [*SHORT, "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=100"]
    proc = start(args, tmp_path)
    run = must(lambda: the_run(tmp_path), 60, "the run folder")
    must(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 120, "the first epoch's last.ckpt")
    assert state(run)["status"] == "running"
    # held still (it keeps its lock) while a second process tries the folder: it cannot finish meanwhile
    os.killpg(proc.pid, signal.SIGSTOP)

    # a second process on the same folder: refused, naming the holder; nothing of the run changes
    hydra_files = fingerprint(run / ".hydra")
    second = run_main("cnnfleet-train", [*args, f"hydra.run.dir={run}"], tmp_path)  # refusals: in-process
    assert second.returncode == 2
    assert f"is in use by pid {proc.pid}" in one_error_line(second.stderr)
    assert fingerprint(run / ".hydra") == hydra_files and len((run / "command.txt").read_text().splitlines()) == 1

    # Ctrl-C: a checkpoint at the step, status stopped, one line with the resume command, exit 130
    proc.send_signal(signal.SIGINT)  # pending until the process runs again
    os.killpg(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    line = [line for line in stderr.splitlines() if "stopped by SIGINT" in line]
    assert len(line) == 1 and "continue with: cnnfleet-train " in line[0] and "Traceback" not in stderr
    # the hint repeats the run's own overrides (they define it) before ckpt_path=last
    hint = line[0].split("continue with: ")[1].split(" (or hydra.run.dir=")[0]
    assert hint.endswith(" ckpt_path=last") and all(shlex.quote(a) in hint for a in args if "ckpt_path" not in a)
    step = int(line[0].split("at step ")[1].split(":")[0])
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step == state(run)["step"] and state(run)["status"] == "stopped"
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"

    # testing the stopped run's checkpoint is a NEW run: the stopped one stays stopped and resumable
    before = fingerprint(run)
    test_only = [*SHORT, "train=false", "test=true", f"ckpt_path={run}/checkpoints/last.ckpt"]
    tested = run_cli("cnnfleet-train", test_only, tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert tested.run_dirs()[-1] != run and fingerprint(run) == before and state(run)["status"] == "stopped"

    # a changed value that would make it another run: one line, and the folder is untouched
    changed = run_main("cnnfleet-train", [*SHORT, "trainer.max_epochs=9", "ckpt_path=last"], tmp_path)
    assert changed.returncode == 2 and "trainer.max_epochs: 8 -> 9" in one_error_line(changed.stderr)
    assert "start a new run from its weights with model.init_from=" in one_error_line(changed.stderr)
    assert fingerprint(run) == before

    # a smoke run never continues a real run's folder (its 1-step weights would become the run's)
    smoke = run_main("cnnfleet-train", [*args, "debug=fast_dev_run", f"hydra.run.dir={run}"], tmp_path)
    assert smoke.returncode == 2 and "a smoke run (debug=fast_dev_run" in one_error_line(smoke.stderr)
    assert fingerprint(run) == before

    resumed = run_cli("cnnfleet-train", [*args, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.run_dirs() == sorted([run, tested.run_dirs()[-1]])  # continued in its own folder, no new one
    assert resumed.summary(run)["resumed_from"]["global_step"] == step
    assert state(run)["status"] == "completed" and [a["exit"] for a in state(run)["attempts"]] == [
        "stopped by SIGINT during training",
        "completed",
    ]
    assert_no_rows_repeated(run)
    assert len((run / "command.txt").read_text().splitlines()) == 2  # one line per attempt

    # a completed run is never resumed implicitly, nor overwritten through its folder
    before = fingerprint(run)
    again = run_main("cnnfleet-train", [*args, "ckpt_path=last"], tmp_path)
    assert again.returncode == 2 and "never resumed implicitly" in one_error_line(again.stderr)
    reused = run_main("cnnfleet-train", [*args, f"hydra.run.dir={run}"], tmp_path)
    assert reused.returncode == 2 and "holds a completed run" in one_error_line(reused.stderr)
    # "training it further" with the same schedule would train nothing: refused, not a hollow "completed"
    extended = run_cli("cnnfleet-train", [*args, f"ckpt_path={run}/checkpoints/last.ckpt"], tmp_path)
    assert extended.returncode == 2 and "nothing was trained" in one_error_line(extended.stderr)
    assert fingerprint(run) == before


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_last_and_metrics_hold_no_row_past_it(tmp_path: Path) -> None:
    proc = start([*SHORT, "trainer.max_epochs=6", "scheduler=cosine"], tmp_path)
    run = must(lambda: the_run(tmp_path), 60, "the run folder")
    must(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 120, "the first epoch's last.ckpt")
    saved_step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    last_row = lambda: max((int(r["step"]) for r in metric_rows(run)), default=-1)  # noqa: E731
    must(lambda: last_row() > saved_step + 3, 60, "rows past the checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert state(run)["status"] == "running"  # killed outright; its lock is free now

    resumed = run_cli(
        "cnnfleet-train", [*SHORT, "trainer.max_epochs=6", "scheduler=cosine", "ckpt_path=last"], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.summary(run)["resumed_from"]["global_step"] == saved_step
    assert_no_rows_repeated(run)
    attempts = state(run)["attempts"]
    assert attempts[0]["exit"] == "ended without a record (killed or lost)"
    assert attempts[1]["resumed_from_step"] == saved_step and attempts[1]["exit"] == "completed"


@pytest.mark.slow
def test_signals_in_start_up_and_in_the_test_phase_end_with_a_status(tmp_path: Path) -> None:
    early = tmp_path / "early"
    early.mkdir()
    proc = start(SHORT, early)
    run = must(lambda: the_run(early), 60, "the run folder")  # state.json exists before torch is imported
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM during start-up" in stderr, stderr[-3000:]
    assert state(run)["status"] == "stopped" and not (run / "checkpoints").exists()

    # the test phase: a test-only run of a trained checkpoint on a slow test split
    testing = tmp_path / "testing"
    testing.mkdir()
    small = ["data=synthetic", "data.batch_size=4", "logger=none"]  # 1,000 test images in 250 batches: seconds
    first = run_cli("cnnfleet-train", [*small, "data.num_samples=300", "trainer.max_epochs=1", "test=false"], testing)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = first.run_dirs()[-1] / "checkpoints" / "last.ckpt"
    proc = start([*small, "data.num_samples=5000", "train=false", f"ckpt_path={ckpt}"], testing)

    def testing_started() -> bool:
        log = (the_run(testing) or testing) / "train.log"
        return log.is_file() and "on the test split" in log.read_text()

    must(testing_started, 120, "the test phase")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM during test" in stderr, stderr[-3000:]
    assert state(the_run(testing))["status"] == "stopped"


@pytest.mark.slow
def test_a_signal_during_validation_is_acted_on_at_its_end(tmp_path: Path) -> None:
    # one training step, then a validation of 2,250 images in batches of 4 (seconds long)
    proc = start(
        [
            "data=synthetic",
            "data.num_samples=2500",
            "data.val_fraction=0.9",
            "data.test_fraction=0.05",
            "data.batch_size=4",
            "trainer.limit_train_batches=1",
            "trainer.max_epochs=3",
            "logger=csv",
        ],
        tmp_path,
    )
    run = must(lambda: the_run(tmp_path), 60, "the run folder")
    # state.json names the phase a live attempt is in (rewritten as each phase starts)
    must(lambda: phase(run) == "validation", 120, "the first validation")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM during validation at step 1" in stderr, stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert state(run)["status"] == "stopped"


def test_schedules_that_train_nothing_are_refused_before_a_folder_is_made(tmp_path: Path) -> None:
    for value, says in (
        ("trainer.max_epochs=0", "trains nothing"),
        ("trainer.limit_train_batches=0", "trains nothing"),
        ("train=false test=false", "nothing to do"),
    ):
        result = run_main("cnnfleet-train", value.split(), tmp_path)
        assert result.returncode == 2 and says in one_error_line(result.stderr)
        assert not (result.root / "logs").exists()


@pytest.mark.slow
def test_a_rank_blocked_in_its_data_loader_says_where_it_waits_and_a_stop_ends_at_its_deadline(
    tmp_path: Path,
) -> None:
    """A data loader worker that never answers (SIGSTOP stands for the fork deadlock seen on shards): the
    rank reports the stall in one line with its stacks, and SIGTERM, which can never reach a step
    boundary, ends the process at device.stop_timeout_s with the SIGTERM status and a stopped record."""
    from cnnfleet.launch.shutdown import descendants

    proc = start(
        [
            *SHORT,
            "trainer.max_epochs=1000",
            "data.on_device=false",
            "data.num_workers=1",
            "device.stall_after_s=3",
            "device.stop_timeout_s=5",
        ],
        tmp_path,
    )
    run = must(lambda: the_run(tmp_path), 60, "the run folder")
    must(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 120, "an epoch's last.ckpt")
    must(lambda: phase(run) == "training", 60, "training after the first validation")
    # the workers of both loaders (persistent), forked from the fork server, a child of the training process
    workers = must(lambda: [pid for pid in descendants(proc.pid) if parent(pid) != proc.pid], 30, "the workers")
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        log = run / "train.log"
        # (a start-up report, when the workers took longer than 3 s to start, names another wait)
        line = must(
            lambda: next(
                (
                    x
                    for x in log.read_text().splitlines()
                    if "has made no progress" in x and "from the data loader" in x
                ),
                None,
            ),
            60,
            "the stall report",
        )
        assert "rank 0 has made no progress for" in line and "waiting for batch" in line, line
        stacks = (run / "stacks-rank0.txt").read_text()
        assert "Thread 0x" in stacks and "File " in stacks and "dataloader" in stacks, stacks[:2000]

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 143, stderr[-3000:]
        ended = [x for x in stderr.splitlines() if "no safe point within 5 s" in x]
        assert len(ended) == 1 and ended[0].startswith("cnnfleet-train: stopped by SIGTERM"), stderr[-3000:]
        assert "continue with: cnnfleet-train " in ended[0] and "data loader" in ended[0]
        assert state(run)["status"] == "stopped" and "no safe point" in state(run)["attempts"][-1]["exit"]
        assert must(lambda: not any(alive(pid) for pid in workers), 30, "the workers' end")  # they went with it
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
