"""Helpers of the sweep tests (local and SLURM): a study created with queued trials, a driver in its own session."""

import json
import os
import subprocess
from pathlib import Path

from conftest import script_path, wait_until


def load_study(sweep: Path, name: str = "digits_optuna"):  # noqa: ANN201 (optuna.Study)
    import optuna

    from cnnfleet.sweeps.storage import optuna_storage

    return optuna.load_study(study_name=name, storage=optuna_storage(str(sweep / "optuna.journal")))


def study_states(sweep: Path, name: str = "digits_optuna") -> list[str]:
    return [t.state.name for t in sorted(load_study(sweep, name).trials, key=lambda t: t.number)]


def enqueue(sweep: Path, name: str, direction: str, trials: list[dict]) -> None:
    """Create the study the sweep will resume, with these parameters queued (a deterministic schedule)."""
    import optuna

    from cnnfleet.sweeps.storage import optuna_storage

    sweep.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name, storage=optuna_storage(str(sweep / "optuna.journal")), direction=direction
    )
    for params in trials:
        study.enqueue_trial(params)


def start_cli(args: list[str], root: Path, log: Path) -> subprocess.Popen:
    """cnnfleet-train in its own session (a terminal's process group), its output in `log`."""
    env = {**os.environ, "CNNFLEET_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [script_path("cnnfleet-train"), *args],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(condition, what: str, driver: subprocess.Popen, timeout: float = 240) -> None:  # noqa: ANN001
    """conftest.wait_until, failing at once when the sweep's driver has already ended."""

    def met_or_ended() -> bool:
        return bool(condition()) or driver.poll() is not None

    wait_until(met_or_ended, timeout, interval=0.2)
    assert condition(), (
        f"the sweep ended (exit {driver.returncode}) before {what}"
        if driver.poll() is not None
        else f"timed out waiting for {what}"
    )


def attempts(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "state.json").read_text())["attempts"]
