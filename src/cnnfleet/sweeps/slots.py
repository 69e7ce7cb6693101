"""Trial slots: where a sweep's trials run, each a run of its own, started as soon as a slot frees.

Every Optuna trial is an ordinary single run, `cnnfleet-train <its overrides> hydra.run.dir=<sweep>/<n>`,
so the run lifecycle (run/plan.py) applies to it unchanged: a trial continued after an
interruption resumes from its own checkpoints, a requeued SLURM job keeps its folder.

* LocalSlots: a child process per trial on this host (its output in `<trial>/console.log`),
  `CNNFLEET_CPUS` = the host's cores / n_jobs, so K trials never run K x all-cores threads. The
  child is forked from the driver after torch and Lightning are imported (once, ~4 s; a fresh
  interpreter per trial paid that every time, more than a digits trial's training), and then runs
  the same command line as `cnnfleet-train`. Fork is safe here: the driver never runs a torch op
  or touches CUDA, and holds no Python threads.
* SlurmSlots: an sbatch job per trial, rendered like cnnfleet-submit's (cluster/sbatch.py: the
  same requeue contract), job name `<cluster.job_name>-<sweep tag>-<n>`; a trial is alive while
  squeue holds a job of that name (a requeued job keeps its id, a follow-up job its name), so
  no sacct (accounting) is needed. The batch shell leaves `job-<id>.exit` (cluster/job_end.py).

A slot's handle (pid and host, or job name and id) is stored with the Optuna trial, so a driver
started again finds trials that still run and waits for them instead of running them twice.
"""

import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnfleet.config.overrides import quote_value
from cnnfleet.launch.env import CPUS_ENV
from cnnfleet.run.state import is_locked
from cnnfleet.sweeps.trial import SWEEP_DIR_ENV

CONSOLE = "console.log"


@dataclass
class TrialJob:
    """One trial as the driver tracks it."""

    number: int
    trial_id: int
    overrides: tuple[str, ...]
    run_dir: Path
    retries: int = 0
    handle: dict = field(default_factory=dict)


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process, never a later one that got the same pid. None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 and fields[0] not in ("Z", "X") else None  # a zombie has ended


def _pid_runs(handle: dict) -> bool:
    """The trial process the handle names still runs on this host."""
    pid, started = int(handle.get("pid") or 0), handle.get("started")
    return (
        pid > 0
        and handle.get("host") == socket.gethostname()
        and started is not None
        and (process_start(pid) == started)
    )


class ForkedChild:
    """A trial forked from the driver: `cnnfleet-train <argv>` in a child that has torch imported already."""

    def __init__(self, argv: list[str], env: dict[str, str], console: Path) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            _run_trial(argv, env, console)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        import time

        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("trial", timeout)
            time.sleep(0.2)
        return self.returncode


def _run_trial(argv: list[str], env: dict[str, str], console: Path) -> None:
    """In the forked child: output to the trial's console.log, then cnnfleet-train's main; exit with its code."""
    code = 1
    try:
        out = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.environ.update(env)
        import time

        import cnnfleet
        from cnnfleet.cli.train import main

        cnnfleet.STARTED = time.perf_counter()  # the trial's wall time starts now, not with the driver
        sys.argv = [sys.argv[0], *argv]  # Lightning re-launches sys.argv for DDP ranks > 0: cnnfleet-train's
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a bug: its traceback in console.log
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def preload() -> None:
    """What every trial imports (torch, Lightning, cnnfleet's training), once, before the first fork."""
    import cnnfleet.cli.train  # noqa: F401
    import cnnfleet.tasks.train  # noqa: F401


class LocalSlots:
    kind = "local"
    poll_seconds = 0.2  # waitpid is cheap: a free slot is refilled at once

    def __init__(self, sweep_dir: Path, n_jobs: int) -> None:
        self.sweep_dir = sweep_dir
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.cpus = max(1, cores // max(1, n_jobs))
        self.children: dict[int, ForkedChild] = {}
        preload()

    def describe(self) -> str:
        return f"local processes, {self.cpus} core{'s' if self.cpus > 1 else ''} each"

    def start(self, job: TrialJob, trial_env: dict[str, str]) -> dict:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [*job.overrides, f"hydra.run.dir={quote_value(str(job.run_dir))}"]
        env = {**trial_env, CPUS_ENV: str(self.cpus), SWEEP_DIR_ENV: str(self.sweep_dir)}
        child = ForkedChild(argv, env, job.run_dir / CONSOLE)
        self.children[job.number] = child
        return {"kind": self.kind, "pid": child.pid, "host": socket.gethostname(), "started": process_start(child.pid)}

    def alive(self, job: TrialJob) -> bool:
        """A trial a previous driver started: its process still runs (or still holds the folder's lock)."""
        return _pid_runs(job.handle) or is_locked(job.run_dir)

    def ended(self, jobs: list[TrialJob]) -> list[tuple[TrialJob, int | None]]:
        """The jobs whose process has ended, with its exit code (None: not our child, code unknown)."""
        done = []
        for job in jobs:
            child = self.children.get(job.number)
            if child is not None:
                code = child.poll()
                if code is not None:
                    del self.children[job.number]
                    done.append((job, code))
            elif not self.alive(job):
                done.append((job, None))
        return done

    def stop(self, jobs: list[TrialJob]) -> str:
        """The driver is stopping: each trial saves and stops (SIGTERM; they resume when the sweep does),
        our children and the trials an earlier driver started alike."""
        import time

        adopted = [job for job in jobs if job.number not in self.children and self._own_pid(job)]
        for child in self.children.values():
            child.send_signal(signal.SIGTERM)
        for job in adopted:
            os.kill(int(job.handle["pid"]), signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
        deadline = time.monotonic() + 120
        while any(self._own_pid(job) for job in adopted) and time.monotonic() < deadline:
            time.sleep(0.2)
        return f"{len(jobs)} running trial(s) saved and stopped; they resume where they stopped"

    def _own_pid(self, job: TrialJob) -> bool:
        return _pid_runs(job.handle)

    def tail(self, job: TrialJob) -> str | None:
        return last_line(job.run_dir / CONSOLE)


def last_line(path: Path) -> str | None:
    """The last `...: error: ...` line of a console log (the one-line reason of an early exit), else its last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line.split(": error: ", 1)[1] for line in lines if ": error: " in line]
    return (errors or lines or [None])[-1]


class SlurmSlots:
    kind = "slurm"
    poll_seconds = None  # hydra.sweeper.poll_seconds: each look is one squeue call

    def __init__(self, cfg: DictConfig, sweep_dir: Path, study_name: str) -> None:
        from cnnfleet.cluster.resources import check_request
        from cnnfleet.cluster.sbatch import job_layout

        self.cfg, self.sweep_dir = cfg, sweep_dir
        self.layout = job_layout(cfg.cluster, [])
        self.cpus = check_request(cfg.cluster, what="the sweep's jobs")  # one line before any sbatch
        tag = hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]
        self.prefix = f"{cfg.cluster.job_name}-{tag}"

    def describe(self) -> str:
        return f"SLURM jobs ({self.layout.nodes} node(s) x {self.layout.tasks_per_node} task(s) each)"

    def _folder(self, job: TrialJob) -> Path:
        return self.sweep_dir / "submissions" / str(job.number)

    def _render(self, job: TrialJob, trial_env: dict[str, str], script: Path) -> str:
        from cnnfleet.cluster.sbatch import render

        trial_env = {SWEEP_DIR_ENV: str(self.sweep_dir), **trial_env}
        exports = [f"export {key}={shlex.quote(value)}" for key, value in trial_env.items()]
        cluster = OmegaConf.merge(
            self.cfg.cluster,
            {"job_name": f"{self.prefix}-{job.number}", "setup": [*self.cfg.cluster.setup, *exports]},
        )
        train_args = [*job.overrides, *self.layout.device_overrides, f"hydra.run.dir={quote_value(str(job.run_dir))}"]
        return render(
            cluster,
            self.layout,
            train_args,
            workdir=str(Path.cwd()),
            root=str(self.cfg.paths.root_dir),
            task=self.cfg.task_name,
            output=str(script.parent / "%j.out"),
            token=uuid.uuid4().hex[:12],
            script=str(script),
            cpus_per_task=self.cpus,
        )

    def start(self, job: TrialJob, trial_env: dict[str, str]) -> dict:
        from cnnfleet.run.files import write_text_atomic
        from cnnfleet.tasks.submit import call_sbatch

        script = self._folder(job) / "job.sbatch"
        script.parent.mkdir(parents=True, exist_ok=True)
        if not script.is_file():  # a retried trial is the same script again: a new job continues its folder
            write_text_atomic(script, self._render(job, trial_env, script))
        job_id = call_sbatch(script)
        return {"kind": self.kind, "job_name": f"{self.prefix}-{job.number}", "job_id": job_id, "script": str(script)}

    def _queued_names(self, jobs: list[TrialJob]) -> set[str] | None:
        names = ",".join(str(job.handle.get("job_name")) for job in jobs if job.handle.get("job_name"))
        if not names:
            return set()
        from cnnfleet.cluster.queue import squeue

        rows = squeue(["%j"], f"--name={names}")
        return None if rows is None else {name for (name,) in rows}  # None: ask again later

    def alive(self, job: TrialJob) -> bool:
        queued = self._queued_names([job])
        return queued is None or job.handle.get("job_name") in queued

    def ended(self, jobs: list[TrialJob]) -> list[tuple[TrialJob, int | None]]:
        queued = self._queued_names(jobs)
        if queued is None:  # squeue did not answer: nothing is known to have ended
            return []
        return [(job, self.exit_code(job)) for job in jobs if job.handle.get("job_name") not in queued]

    def exit_code(self, job: TrialJob) -> int | None:
        """The newest job of the trial's exit status, from the file its batch shell left."""
        exits = sorted(self._folder(job).glob("job-*.exit"), key=lambda p: p.stat().st_mtime)
        try:
            return int(exits[-1].read_text().strip()) if exits else None
        except ValueError:
            return None

    def stop(self, jobs: list[TrialJob]) -> str:
        ids = " ".join(str(job.handle.get("job_id")) for job in jobs)
        return (
            f"{len(jobs)} trial job(s) keep running on SLURM ({ids}): the same command waits for them again; "
            f"`scancel {ids}` stops them"
        )

    def tail(self, job: TrialJob) -> str | None:
        outs = sorted(self._folder(job).glob("*.out"), key=lambda p: p.stat().st_mtime)
        return last_line(outs[-1]) if outs else None


def make_slots(cfg: DictConfig, sweep_dir: Path, study_name: str, n_jobs: int) -> Any:
    """Slots for the sweep's launcher: launcher=slurm -> SLURM jobs, else local processes."""
    target = str(cfg.hydra.launcher.get("_target_", ""))
    if "slurm" in target.lower():
        return SlurmSlots(cfg, sweep_dir, study_name)
    return LocalSlots(sweep_dir, n_jobs)
