"""Shared fixtures: the real CLI in a subprocess, and configs composed from the real conf/."""

import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from cnnfleet.config.schema import register_configs
from cnnfleet.config.search_path import conf_dir

BIN = Path(sys.executable).parent


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs 2 workers on 2 cores), each worker's runs use one
    intra-op thread: two workers training at once then fill the cores instead of running 4 OpenMP
    threads on 2 (measured last on this machine: 2-thread torch runs ~5x slower while another
    process holds a core). cnnfleet reads OMP_NUM_THREADS as the user's choice (launch/env.py)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (tests/file_seconds.json, written by scripts/test_times.py --write from a
    measured run): `--dist loadfile` hands files to the workers in this order, so a long file never
    starts last while the other worker idles. Within a file the order stays as written."""
    path = Path(__file__).with_name("file_seconds.json")
    seconds = json.loads(path.read_text()) if path.is_file() else {}
    items.sort(key=lambda item: -seconds.get(item.path.name, 0.0))  # stable: a file's tests keep their order


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    root: Path

    def run_dirs(self, task: str = "train") -> list[Path]:
        return sorted((self.root / "logs" / task / "runs").glob("*"))

    def summary(self, run_dir: Path | None = None) -> dict:
        run_dir = run_dir or self.run_dirs()[-1]
        return json.loads((run_dir / "summary.json").read_text())


def script_path(command: str) -> str:
    """The console script beside this Python (a venv), else on PATH (scripts/gpu_check.py's shims)."""
    local = BIN / command
    return str(local) if local.exists() else shutil.which(command) or str(local)


def run_cli(command: str, args: list[str], root: Path, timeout: float = 300, env: dict | None = None) -> CliResult:
    """Run a console script as a user would; CNNFLEET_ROOT puts logs/ under `root`."""
    # W&B's cache and settings stay inside the test's folder
    wandb = {"WANDB_CACHE_DIR": str(root / ".wandb-cache"), "WANDB_CONFIG_DIR": str(root / ".wandb-config")}
    env = {**os.environ, "CNNFLEET_ROOT": str(root), "PYTHONUNBUFFERED": "1", **wandb, **(env or {})}
    proc = subprocess.run(
        [script_path(command), *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, root)


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP]
MODULES = {
    "cnnfleet-train": "cnnfleet.cli.train",
    "cnnfleet-eval": "cnnfleet.cli.evaluate",
    "cnnfleet-submit": "cnnfleet.cli.submit",
    "cnnfleet-predict": "cnnfleet.cli.predict",
    "cnnfleet-export": "cnnfleet.cli.export",
    "cnnfleet-bench": "cnnfleet.cli.bench",
}


def run_in_process(module: str, argv: list[str], prog: str) -> tuple[int, str, str]:
    """The command's main() as the console script calls it; (exit code, stdout, stderr)."""
    saved_handlers = {s: signal.getsignal(s) for s in SIGNALS}
    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = [prog, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(module).main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
    return code, out.getvalue(), err.getvalue()


def run_main(command: str, args: list[str], root: Path, env: dict | None = None) -> CliResult:
    """A command's main() in this process, as run_cli runs its console script: the working folder
    `root`, logs/ under it, the same environment (for refusals and short runs: no interpreter start-up)."""
    wandb = {"WANDB_CACHE_DIR": str(root / ".wandb-cache"), "WANDB_CONFIG_DIR": str(root / ".wandb-config")}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for key, value in {"CNNFLEET_ROOT": str(root), **wandb, **(env or {})}.items():
            patch.setenv(key, value)
        code, out, err = run_in_process(MODULES[command], args, command)
    return CliResult(code, out, err, root)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    def _run(*args: str, command: str = "cnnfleet-train", timeout: float = 300, env: dict | None = None) -> CliResult:
        return run_cli(command, list(args), tmp_path, timeout=timeout, env=env)

    return _run


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> CliResult:
    """`cnnfleet-train` with no overrides, once per session (several tests read its run folder)."""
    root = tmp_path_factory.mktemp("default_run")
    result = run_cli("cnnfleet-train", [], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose a config from the real conf/ (hydra node included, ${hydra:...} resolvable)."""
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):

        def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg

        yield _compose
    GlobalHydra.instance().clear()


def wait_until(condition: Callable, timeout: float, interval: float = 0.5):  # noqa: ANN201
    """The first truthy value of `condition()`, checked every `interval` s; None after `timeout` s.

    For what offers no event to wait on (a SLURM job ending, a file being written), always bounded.
    """
    deadline, pause = time.monotonic() + timeout, threading.Event()
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        pause.wait(interval)
    return None


def slurm_available() -> tuple[bool, str]:
    if shutil.which("sbatch") is None:
        return False, "sbatch not on PATH"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30)
    nodes = proc.stdout.split("\n") if proc.returncode == 0 else []
    if len([n for n in nodes if n.strip()]) < 2:
        return (
            False,
            f"no 2-node SLURM cluster ({proc.stderr.strip() or proc.stdout.strip()}); run scripts/slurm/start-slurm.sh",
        )
    return True, ""


@pytest.fixture(scope="session")
def slurm() -> None:
    """A real local SLURM cluster (make test starts it). Skips outside CI only; a failure in CI."""
    ok, why = slurm_available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM is required in CI: {why}")
        pytest.skip(why)
