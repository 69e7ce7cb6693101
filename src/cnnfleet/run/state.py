"""The run folder's state file and lock: who owns the folder, how far it got, how each attempt ended.

`state.json` (written atomically by rank 0) holds the run's identity (launcher kind, job or
rendezvous id, submission token), its status (created, running, stopped, completed, failed),
step and epoch, and one entry per attempt with its exit reason and, while it runs, its phase
(training, validation, test: rewritten as each phase starts). A run killed outright (SIGKILL,
node loss) stays `running`; its lock tells the truth: `.lock` is held with flock(2) by rank 0
for the life of the process, and the kernel releases it when the process dies. So "running with
a free lock" means interrupted, and a second process on the folder is refused while the first
lives. flock works across NFS clients on Linux (emulated with POSIX locks since 2.6.12).
"""

import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnfleet.errors import ConfigError
from cnnfleet.run.files import write_json_atomic
from cnnfleet.run.layout import LOCK_FILE, STATE_FILE

CREATED, RUNNING, STOPPED, COMPLETED, FAILED = "created", "running", "stopped", "completed", "failed"
PRUNED = "pruned"  # a sweep trial its pruner stopped early: finished, like a completed run
UNFINISHED = (CREATED, RUNNING, STOPPED, FAILED)
FINISHED = (COMPLETED, PRUNED)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunState:
    identity: dict[str, Any]
    status: str = CREATED
    step: int = 0
    epoch: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    extends: str | None = None  # the completed run this one continues from (ckpt_path=<its checkpoint>)

    @classmethod
    def read(cls, run_dir: Path) -> "RunState | None":
        """The folder's state, None when it has none; ConfigError when it is unreadable."""
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**{key: data[key] for key in ("identity", "status", "step", "epoch", "attempts", "extends")})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path} is unreadable ({type(exc).__name__}); move the folder aside or repair it"
            ) from None

    def write(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / STATE_FILE, self.__dict__)

    def begin_attempt(
        self,
        run_dir: Path,
        resumed_from_step: int | None,
        command: str,
        changed: dict,
        restarts: int,
        job_id: str | None = None,
    ) -> None:
        """`job_id`: the SLURM job (or torchrun run) of this attempt: a run continued by a new job keeps
        its identity (the first job's), and its attempts name every job of the lineage."""
        self.status = RUNNING
        for earlier in self.attempts:
            if earlier.get("exit") is None:  # its process died without a word (SIGKILL, a lost node)
                earlier["exit"] = "ended without a record (killed or lost)"
        self.attempts.append(
            {
                "attempt": len(self.attempts) + 1,
                "started": now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "job_id": job_id,
                "restarts": restarts,
                "resumed_from_step": resumed_from_step,
                "command": command,
                "changed": changed,
                "ended": None,
                "exit": None,
            }
        )
        self.write(run_dir)

    def end_attempt(self, run_dir: Path, status: str, reason: str, step: int, epoch: int) -> None:
        self.status, self.step, self.epoch = status, step, epoch
        if self.attempts:
            self.attempts[-1].update(ended=now(), exit=reason, step=step)
        self.write(run_dir)

    def enter_phase(self, run_dir: Path, phase: str, step: int) -> None:
        """The running attempt is now in `phase` (training, validation, test) at `step`: readers of the
        folder (cnnfleet-runs, a person, a test) see where a live run is."""
        self.step = step
        if self.attempts:
            self.attempts[-1].update(phase=phase, step=step)
        self.write(run_dir)

    def describe(self) -> str:
        """'completed at step 380 (ended 2026-11-26T08:00:00+00:00)' for messages."""
        ended = self.attempts[-1].get("ended") if self.attempts else None
        return f"{self.status} at step {self.step}" + (f" (ended {ended})" if ended else "")


class RunLock:
    """An exclusive flock on `<run>/.lock`, held for the life of the process (rank 0 only)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the holder (host, pid, since)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"run folder {self.path.parent} is in use by {holder(self.path.parent)}; wait for that run to end "
                "or stop it, or start this one in another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": now()}).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def is_locked(run_dir: Path) -> bool:
    """True while a live process holds the folder's lock."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def holder(run_dir: Path) -> str:
    """'pid 123 on host n1 since ...' from the lock file, for messages."""
    try:
        info = json.loads((Path(run_dir) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('since', '?')}"
