"""`launcher=slurm`: hydra-submitit-launcher's SlurmLauncher, with sbatch's refusal as one line.

When sbatch refuses the sweep's jobs (resources the partition cannot give, an unknown
partition or account), submitit prints sbatch's stderr and raises FailedJobError, which Hydra
reports with a 38-line traceback. Here that becomes the same one line and exit code 2 that
cnnfleet-submit gives. Hydra only instantiates launchers from the hydra_plugins package, hence
this module's place.
"""

import io
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


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
        cnnfleet's handlers, which replace submitit's in the trial (launch/plan.py plan_trial): the trial
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
            return super().launch(job_overrides, initial_job_idx)
        except Exception as exc:
            reason = sbatch_refusal(exc)
            if reason is None:
                raise
            _refuse(stderr, f"sbatch refused the sweep's jobs: {reason} (check the cluster.* keys; "
                            "`sinfo -o '%P %c %m %G %l'` shows what the partitions offer)")  # fmt: skip
        finally:
            sys.stderr = stderr
