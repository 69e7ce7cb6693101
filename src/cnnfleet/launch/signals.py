"""Stop requests for the whole life of the process: handlers only set flags.

Installed first thing by the command line, so SIGINT (Ctrl-C), SIGTERM (kill, scancel, Kubernetes)
and, in SLURM tasks, SIGUSR1 (--signal before the time limit) never kill a process outright, in
start-up, training, validation or test alike. Whoever can act safely reads the flags:
training/preemption.py at optimizer-step boundaries and at the end of validation (all ranks
agree through one all-reduce), tasks/train.py between phases. A second Ctrl-C aborts at once.

Why flags: Python runs a handler whenever the main thread gets to it; under DDP a handler that
saves or broadcasts (Lightning's do) can meet another rank sitting in a gradient all-reduce, and
both wait until the collective timeout (measured: a 2-node gloo job hung 600 s).
"""

import signal
from types import FrameType

REQUEUE, TERMINATE, INTERRUPT = 1, 2, 4  # flag bits, combined across ranks with MAX per bit
NAMES = {REQUEUE: "SIGUSR1", TERMINATE: "SIGTERM", INTERRUPT: "SIGINT"}
EXIT_CODES = {REQUEUE: 138, TERMINATE: 143, INTERRUPT: 130}  # 128 + signal number (a requeued job exits 0)

_flags = 0


def _on_requeue(signum: int, frame: FrameType | None) -> None:
    global _flags
    _flags |= REQUEUE


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    global _flags
    _flags |= TERMINATE


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _flags
    if _flags & INTERRUPT:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now, the last checkpoint stays as it is
    _flags |= INTERRUPT


def install(requeue: bool) -> None:
    """Our handlers for SIGINT and SIGTERM, and SIGUSR1 when this is a SLURM task (requeue)."""
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_terminate)
    if requeue:
        signal.signal(signal.SIGUSR1, _on_requeue)


def pending() -> int:
    """This process's flags (0: no stop requested)."""
    return _flags


def strongest(flags: int) -> int:
    """The request that decides what happens: a requeue wins (the job comes back), then SIGTERM."""
    for bit in (REQUEUE, TERMINATE, INTERRUPT):
        if flags & bit:
            return bit
    return 0
