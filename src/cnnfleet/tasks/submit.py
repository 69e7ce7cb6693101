"""submit(cfg): render the sbatch script from the training config and hand it to sbatch."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnfleet.cluster.resources import check_request
from cnnfleet.cluster.sbatch import job_layout, render
from cnnfleet.errors import ConfigError, LaunchError
from cnnfleet.run.files import write_text_atomic

SUBMIT_ONLY = ("hydra.",)  # overrides that configure cnnfleet-submit itself, not the job


def job_overrides() -> list[str]:
    """The user's training overrides as typed (cluster.* included: the job records them too)."""
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(SUBMIT_ONLY)]


def call_sbatch(script: Path) -> str:
    """Submit; return the job id. One clear line when sbatch is missing or refuses the job."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise LaunchError("sbatch not found on PATH: run cnnfleet-submit on a SLURM login node, or add dry_run=true")
    proc = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("sbatch: error: ")
        raise LaunchError(f"sbatch refused the job: {reason} (script: {script}; check the cluster.* keys)")
    return proc.stdout.strip().split(";")[0]


def submit(cfg: DictConfig, dry_run: bool) -> str | None:
    overrides = job_overrides()
    layout = job_layout(cfg.cluster, overrides)
    if not cfg.train:
        raise ConfigError("train=false: nothing to submit")
    log_dir = Path(cfg.paths.log_dir) / cfg.task_name
    command = [str(Path(sys.executable).parent / "cnnfleet-train"), *overrides, *layout.device_overrides]
    submission = Path(cfg.paths.output_dir) / "job.sbatch"
    # a request no node of the partition can hold would wait PENDING forever: one line instead
    cpus = cfg.cluster.cpus_per_task if dry_run else check_request(cfg.cluster)
    script = render(
        cfg.cluster, layout, command, workdir=str(Path.cwd()), root=str(cfg.paths.root_dir),
        task=cfg.task_name, output=str(log_dir / "slurm" / "%j.out"), token=uuid.uuid4().hex[:12],
        script=str(submission), cpus_per_task=cpus,
    )  # fmt: skip
    if dry_run:
        print(script, end="")
        return None
    (log_dir / "slurm").mkdir(parents=True, exist_ok=True)  # sbatch does not create --output's folder
    write_text_atomic(submission, script)
    job_id = call_sbatch(submission)
    runs = log_dir / "runs"
    print(f"submitted job {job_id}\nrun folder: {runs}/slurm-{job_id} (or slurm-{job_id}-<token> if SLURM reused "
          f"the id)\nlog: {log_dir / 'slurm' / f'{job_id}.out'}\nscript: {submission}")  # fmt: skip
    return job_id
