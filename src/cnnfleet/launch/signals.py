"""Stop requests for the whole life of the process: handlers only set flags.

Installed first thing by the command line, so SIGINT (Ctrl-C), SIGTERM (kill, scancel, Kubernetes)
and, in SLURM tasks, SIGUSR1 (--signal before the time limit) never kill a process outright, in
start-up, training, validation or test alike. Whoever can act safely reads the flags:
training/preemption.py at optimizer-step boundaries and at the end of validation (all ranks
agree through one all-reduce), tasks/train.py between phases. A second Ctrl-C aborts at once.

Why flags: Python runs a handler whenever the main thread gets to it; under DDP a handler that
saves or broadcasts (Lightning's do) can meet another rank sitting in a gradient all-reduce, and
both wait until the collective timeout (measured: a 2-node gloo job hung 600 s).

Every stop has a deadline (device.stop_timeout_s, armed by the task): a request not acted on by
then (the main thread blocked in a data loader whose worker hangs, or in a collective) ends the
process with the request's status, as a second Ctrl-C does. A thread reading the signal wake-up
pipe starts the clock, so it starts even while the main thread is blocked in C code, where
Python's own handlers cannot run; a second Ctrl-C shortens what is left to a few seconds.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from cnnfleet.launch.shutdown import leave_now

REQUEUE, TERMINATE, INTERRUPT = 1, 2, 4  # flag bits, combined across ranks with MAX per bit
NAMES = {REQUEUE: "SIGUSR1", TERMINATE: "SIGTERM", INTERRUPT: "SIGINT"}
EXIT_CODES = {REQUEUE: 138, TERMINATE: 143, INTERRUPT: 130}  # 128 + signal number (a requeued job exits 0)

SECOND_INTERRUPT_GRACE_S = 5.0  # a second Ctrl-C: the main thread's own abort, else leave after this

_flags = 0
_deadline_s: float | None = None  # armed by the task (device.stop_timeout_s); None: no deadline yet
_on_deadline: list[Callable[[int], None]] = []
_clock: dict[str, float] = {}  # "expires": the monotonic time the pending stop ends the process
_clock_lock = threading.Lock()
_clock_thread: list[threading.Thread] = []


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


BITS = {signal.SIGUSR1: REQUEUE, signal.SIGTERM: TERMINATE, signal.SIGINT: INTERRUPT}


def install(requeue: bool) -> None:
    """Our handlers for SIGINT and SIGTERM, and SIGUSR1 when this is a SLURM task (requeue)."""
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_terminate)
    if requeue:
        signal.signal(signal.SIGUSR1, _on_requeue)
    _watch_wakeups()


def _watch_wakeups() -> None:
    """The C-level handler writes each signal's number to a pipe; this thread reads it at once, also
    while the main thread is blocked in C code (where the Python handlers above wait their turn)."""
    if threading.current_thread() is not threading.main_thread() or _clock.get("watching"):
        return  # once per process (commands called in-process, as the tests do, install again)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:
        return
    threading.Thread(target=_read_wakeups, args=(read_end,), name="cnnfleet-stop-clock", daemon=True).start()
    _clock["watching"] = 1.0


def _read_wakeups(read_end: int) -> None:
    interrupts = 0
    while True:
        try:
            received = os.read(read_end, 64)
        except OSError:
            return
        for number in received:
            bit = BITS.get(signal.Signals(number)) if number in signal.valid_signals() else None
            if bit is None:
                continue
            # the flags are the Python handlers' alone (a flag set here first would make the first
            # Ctrl-C look like a second one); the clock keeps what it was started by
            _clock["received"] = int(_clock.get("received", 0)) | bit
            interrupts += bit == INTERRUPT
            _start_clock(SECOND_INTERRUPT_GRACE_S if interrupts >= 2 else None)


def arm_deadline(seconds: float, on_expire: Callable[[int], None] | None = None) -> None:
    """From now on a stop request not acted on within `seconds` ends the process; `on_expire(request)`
    records and says why first. Called by the task once it knows the run (a request already pending
    gets its clock now); a later task of the same process (an in-process sweep trial) replaces it."""
    global _deadline_s
    _deadline_s = float(seconds)
    _on_deadline[:] = [on_expire] if on_expire is not None else []
    if _flags or _clock.get("received"):
        _start_clock(None)


def _start_clock(at_most_s: float | None) -> None:
    """Start (or shorten to `at_most_s`) the pending stop's clock."""
    if _deadline_s is None:
        return
    with _clock_lock:
        expires = time.monotonic() + min(_deadline_s, at_most_s if at_most_s is not None else _deadline_s)
        if _clock.get("expires", float("inf")) <= expires:
            return
        _clock["expires"] = expires
        if not (_clock_thread and _clock_thread[0].is_alive()):
            _clock_thread[:] = [threading.Thread(target=_run_clock, name="cnnfleet-stop-deadline", daemon=True)]
            _clock_thread[0].start()


def _run_clock() -> None:
    while (left := _clock["expires"] - time.monotonic()) > 0:
        if left == float("inf"):  # disarmed
            return
        time.sleep(min(left, 0.5))
    request = strongest(_flags | int(_clock.get("received", 0))) or INTERRUPT
    for callback in _on_deadline:
        with contextlib.suppress(Exception):
            callback(request)
    sys.stderr.flush()
    leave_now(EXIT_CODES[request])


def disarm() -> None:
    """The stop was acted on (the ranks agreed and raised Stopped): what remains is an ordinary exit."""
    global _deadline_s
    _deadline_s = None
    with _clock_lock:
        _clock["expires"] = float("inf")


def pending() -> int:
    """This process's flags (0: no stop requested)."""
    return _flags


def strongest(flags: int) -> int:
    """The request that decides what happens: a requeue wins (the job comes back), then SIGTERM."""
    for bit in (REQUEUE, TERMINATE, INTERRUPT):
        if flags & bit:
            return bit
    return 0
