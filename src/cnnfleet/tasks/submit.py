"""submit(cfg): render the sbatch script from the training config and hand it to sbatch."""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnfleet.cluster.resources import check_request
from cnnfleet.cluster.sbatch import job_layout, render
from cnnfleet.config.overrides import quote_value
from cnnfleet.errors import ConfigError, LaunchError
from cnnfleet.run.files import write_text_atomic
from cnnfleet.run.resume import LAST, checkpoint_file, owning_run_dir
from cnnfleet.run.state import FINISHED, RunState

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


def queued_jobs() -> dict[str, str]:
    """{job id: state} of every job SLURM still holds (pending, running, requeued)."""
    from cnnfleet.cluster.queue import squeue

    return {job: state for job, state in squeue(["%A", "%T"]) or []}


CONTINUES = "continues.json"  # in a submission folder: the run its job continues (before the job has started)


def jobs_continuing(run_dir: Path, log_dir: Path) -> set[str]:
    """Job ids submitted to continue `run_dir` (cnnfleet-submit's record beside each script)."""
    found = set()
    for record in log_dir.glob(f"submissions/*/{CONTINUES}"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if Path(data.get("run_dir", "")) == run_dir and data.get("job_id"):
            found.add(str(data["job_id"]))
    return found


def _check_no_job_holds(run_dir: Path, log_dir: Path) -> None:
    """A run that a queued job will continue (a requeued job waiting PENDING, or a continuation submitted
    earlier that has not started) is not given a second job."""
    state = RunState.read(run_dir)
    ids = jobs_continuing(run_dir, log_dir)
    if state is not None:
        ids |= {state.identity.get("job_id"), *(a.get("job_id") for a in state.attempts)} - {None}
    queued = queued_jobs()
    for job in sorted(ids & set(queued)):
        raise ConfigError(
            f"{run_dir} belongs to job {job}, which SLURM still holds ({queued[job]}); it continues the run when it "
            f"runs: wait for it, or `scancel {job}` first"
        )


def continuation(cfg: DictConfig, given: str | None) -> tuple[list[str], str | None, Path | None]:
    """The job overrides that make the job continue a run (hydra.run.dir=<folder>), why, and the folder;
    ([], None, None) for a new run. `given`: hydra.run.dir passed to cnnfleet-submit; `ckpt_path=last`
    or a checkpoint of an unfinished run continue that run. Decided here with the job's own rules (run/plan.py), so a
    completed, running or differently configured run is refused before the job waits in a queue."""
    from cnnfleet.run.plan import decide
    from cnnfleet.run.record import plain_config

    if given is None and cfg.ckpt_path not in (None, LAST):
        owner = owning_run_dir(checkpoint_file(str(cfg.ckpt_path)))
        state = RunState.read(owner) if owner is not None else None
        if state is None or state.status in FINISHED:
            return [], None, None  # a new run from these weights, in the job's own folder
        given = str(owner)
    if given is None and cfg.ckpt_path is None:
        return [], None, None
    plan = decide(cfg, [f"hydra.run.dir={given}"] if given else [], {}, plain_config(cfg))
    _check_no_job_holds(plan.run_dir, Path(cfg.paths.log_dir) / cfg.task_name)
    return [f"hydra.run.dir={quote_value(str(plan.run_dir))}"], plan.reason, plan.run_dir


def submit(cfg: DictConfig, dry_run: bool, given_run_dir: str | None = None) -> str | None:
    if not cfg.train:
        raise ConfigError("train=false: nothing to submit")
    overrides = job_overrides()
    layout = job_layout(cfg.cluster, overrides)
    continued, reason, run_dir = continuation(cfg, given_run_dir)
    if continued:  # the job finds the newest checkpoint of that folder when it starts
        overrides = [o for o in overrides if o != "ckpt_path=last"] + continued
    log_dir = Path(cfg.paths.log_dir) / cfg.task_name
    command = [*overrides, *layout.device_overrides]
    submission = Path(cfg.paths.output_dir) / "job.sbatch"
    # a request no node of the partition can hold would wait PENDING forever: one line instead
    cpus = cfg.cluster.cpus_per_task if dry_run else check_request(cfg.cluster)
    script = render(
        cfg.cluster,
        layout,
        command,
        workdir=str(Path.cwd()),
        root=str(cfg.paths.root_dir),
        task=cfg.task_name,
        output=str(log_dir / "slurm" / "%j.out"),
        token=uuid.uuid4().hex[:12],
        script=str(submission),
        cpus_per_task=cpus,
    )
    if dry_run:
        print(script, end="")
        return None
    (log_dir / "slurm").mkdir(parents=True, exist_ok=True)  # sbatch does not create --output's folder
    write_text_atomic(submission, script)
    job_id = call_sbatch(submission)
    if continued:  # a second continuation is refused while this job waits in the queue
        write_text_atomic(submission.parent / CONTINUES, json.dumps({"run_dir": str(run_dir), "job_id": job_id}))
    runs = log_dir / "runs"
    folder = (
        f"{run_dir} ({reason})"
        if continued
        else f"{runs}/slurm-{job_id} (or slurm-{job_id}-<token> if SLURM reused the id)"
    )
    print(
        f"submitted job {job_id}\nrun folder: {folder}\nlog: {log_dir / 'slurm' / f'{job_id}.out'}\n"
        f"script: {submission}"
    )
    return job_id
