"""What a run folder records before training starts: config, command, code version, environment."""

import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnfleet.launch.env import submission_script
from cnnfleet.run.files import write_json_atomic, write_text_atomic
from cnnfleet.run.layout import COMMAND_FILE, CONFIG_FILE, ENV_FILE
from cnnfleet.run.secrets import redact

PACKAGES = (
    "cnnfleet",
    "torch",
    "torchvision",
    "lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "numpy",
)
SOURCE_DIR = Path(__file__).resolve().parents[1]


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (no DictConfig), without Hydra's own node, with
    secret-looking keys (*key*, *token*, *secret*, *password*) redacted."""
    plain = {}
    for key in cfg:
        if key != "hydra":
            node = cfg[key]  # still attached to cfg, so interpolations to other keys resolve
            plain[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return redact(plain)


def git_state(path: Path = SOURCE_DIR) -> dict:
    """Commit and dirty flag of the code that runs; nulls outside a git checkout (a wheel)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def hardware() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
    }


def environment_record() -> dict:
    """Code version, packages and hardware: env.json, and the W&B config's `run_env`."""
    return {"git": git_state(), "versions": versions(), "hardware": hardware()}


def command_line() -> str:
    """This process's command as typed to re-run it (argv as rewritten by the launch plan)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # set under python -m
    program = ["python", "-m", main_spec.name] if main_spec is not None else [Path(sys.argv[0]).name]
    return shlex.join([*program, *sys.argv[1:]])


def append_command(output_dir: Path) -> None:
    """command.txt keeps one line per attempt (resumes, requeues)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(output_dir / COMMAND_FILE, "a") as handle:
        handle.write(f"{stamp} {command_line()}\n")


def write_run_record(cfg: DictConfig, output_dir: Path, environment: dict) -> None:
    """Rank zero, first attempt only: config.yaml, env.json, and the first line of command.txt."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / CONFIG_FILE, OmegaConf.to_yaml(plain_config(cfg)))
    append_command(output_dir)
    write_json_atomic(output_dir / ENV_FILE, environment)
    script = submission_script()
    if script is not None and Path(script).is_file():
        shutil.copyfile(script, output_dir / "job.sbatch")  # the job's own script, beside its record
