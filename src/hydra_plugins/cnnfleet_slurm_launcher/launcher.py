"""`launcher=slurm`: hydra-submitit-launcher's SlurmLauncher, with sbatch's refusal as one line and
trials that end without a result reported, never waited for.

When sbatch refuses the sweep's jobs (resources the partition cannot give, an unknown
partition or account), submitit prints sbatch's stderr and raises FailedJobError, which Hydra
reports with a 38-line traceback. Here that becomes the same one line and exit code 2 that
cnnfleet-submit gives. Hydra only instantiates launchers from the hydra_plugins package, hence
this module's place.

submitit learns that a job ended from `sacct` (or from the job's result file). On a cluster without
accounting (`AccountingStorageType=accounting_storage/none`, as on small clusters and the local test
cluster) sacct fails, every state reads UNKNOWN, and a trial cancelled or killed before it wrote its
result was waited for forever; and where sacct works, the first such trial raised out of the sweep
while the others still ran. Here squeue answers when sacct cannot (squeue_fallback_watcher), and a trial
job that ended without a result is a trial without a value: the sweep goes on, and its summary
table lists the trial with the status its folder records (cnnfleet's policy for a failed trial).
"""

import contextlib
import getpass
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)
# squeue states after which a job never runs again (squeue(1) JOB STATE CODES); PREEMPTED is left out:
# a job submitted with --requeue comes back
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}
GONE = "ENDED"  # a job squeue no longer lists (SLURM forgets ended jobs after MinJobAge)


def squeue_states() -> dict[str, str] | None:
    """State of each of this user's jobs that SLURM still holds (array tasks as `id_index`); None when
    squeue itself fails (the controller unreachable): then nothing is concluded."""
    from cnnfleet.cluster.queue import squeue

    rows = squeue(["%i", "%T"], "-r", "--states=all", "-u", getpass.getuser())
    return None if rows is None else {job: state for job, state in rows}


def squeue_fallback_watcher(delay_s: int = 60):  # noqa: ANN201 (submitit's class, imported lazily)
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueFallbackWatcher(SlurmInfoWatcher):
        """sacct while it works; once it fails, squeue: a job it lists in an ended state, or no longer
        lists, has ended; any other state it lists means not yet."""

        sacct_works = True

        def update(self) -> None:
            if self.sacct_works:
                calls = self._num_calls
                super().update()
                if self._num_calls == calls or self._info_dict:
                    return
                self.sacct_works = False  # sacct ran and told nothing: accounting is off
            to_check = self._registered - self._finished
            states = squeue_states() if to_check else None
            if states is None:
                return
            for job_id in to_check:
                state = states.get(job_id, GONE)
                self._info_dict[job_id] = {"State": state if state in ENDED or state == GONE else "RUNNING"}
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return SqueueFallbackWatcher(delay_s=delay_s)


@contextlib.contextmanager
def trials_without_results_return_none() -> Iterator[None]:
    """While the launcher waits: squeue when sacct cannot answer, and a trial job that ended without a
    result returns None (logged) instead of raising out of the sweep while other trials still run."""
    from submitit.core.utils import UncompletedJobError
    from submitit.slurm.slurm import SlurmJob

    results = SlurmJob.results

    def results_or_none(job: SlurmJob) -> list:
        try:
            return results(job)
        except UncompletedJobError:
            log.warning(
                "trial job %s ended (%s) without a result: the sweep goes on without its value; its "
                "folder keeps what it saved",
                job.job_id,
                job.state,
            )
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

    watcher = SlurmJob.watcher
    SlurmJob.watcher, SlurmJob.results = squeue_fallback_watcher(), results_or_none
    try:
        yield
    finally:
        SlurmJob.watcher, SlurmJob.results = watcher, results


class _DropSbatchErrors(io.TextIOBase):
    """stderr without the `sbatch: error: ...` lines submitit copies there (we say it once)."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target
        self.dropped = False  # print() writes its end="\n" separately: drop that one too

    def write(self, text: str) -> int:
        drop = text.lstrip().startswith("sbatch: error:") or (self.dropped and text == "\n")
        self.dropped = drop and text != "\n"
        if not drop:
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def sbatch_refusal(exc: BaseException) -> str | None:
    """sbatch's last error line when `exc` is submitit's report of a refused submission."""
    cause = exc.__cause__
    if not isinstance(cause, subprocess.CalledProcessError) or "sbatch" not in " ".join(map(str, cause.cmd)):
        return None
    lines = [line for line in str(cause.stderr or "").splitlines() if line.strip()] or ["no message"]
    return lines[-1].strip().removeprefix("sbatch: error: ")


def _refuse(stderr: io.TextIOBase, line: str) -> NoReturn:
    stderr.write(f"cnnfleet-train: error: {line}\n")
    stderr.flush()
    raise SystemExit(2) from None


class CnnfleetSlurmLauncher(SlurmLauncher):
    def _preemption_contract(self) -> None:
        """Trials get cnnfleet-submit's contract: SIGUSR1 before the time limit (submitit reads the signal's
        name from SUBMITIT_PREEMPT_SIGNAL, here and in the job, which inherits it), `--requeue`, and
        cnnfleet's handlers, which replace submitit's in the trial (run/plan.py plan_trial): the trial
        saves, requeues its job (same id, same folder) and returns no result, so the sweep waits for it."""
        from cnnfleet.launch.env import REQUEUE_ENV

        os.environ["SUBMITIT_PREEMPT_SIGNAL"] = "USR1"
        os.environ[REQUEUE_ENV] = "1" if self.config.cluster.requeue else "0"  # the trials read it (sbatch exports it)
        if self.config.cluster.requeue:
            self.params["additional_parameters"] = {**(self.params.get("additional_parameters") or {}), "requeue": True}

    def _check_resources(self) -> None:
        """The partition can hold every trial's request (cluster/resources.py), checked before the first
        sbatch; cluster.cpus_per_task=null becomes the partition's derived value."""
        from cnnfleet.cluster.resources import check_request
        from cnnfleet.errors import ConfigError

        try:
            cpus = check_request(self.config.cluster, what="the sweep's jobs")
        except ConfigError as exc:
            _refuse(sys.stderr, str(exc))
        if cpus is not None:
            self.params["cpus_per_task"] = cpus

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):  # noqa: ANN201 (Hydra's type)
        if "cluster" in self.config:
            self._check_resources()
            self._preemption_contract()
        stderr = sys.stderr
        sys.stderr = _DropSbatchErrors(stderr)
        try:
            with trials_without_results_return_none():
                return super().launch(job_overrides, initial_job_idx)
        except Exception as exc:
            reason = sbatch_refusal(exc)
            if reason is None:
                raise
            _refuse(
                stderr,
                f"sbatch refused the sweep's jobs: {reason} (check the cluster.* keys; "
                "`sinfo -o '%P %c %m %G %l'` shows what the partitions offer)",
            )
        finally:
            sys.stderr = stderr
