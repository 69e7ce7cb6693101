"""The end of a rank: its distributed state is ended before the interpreter is.

Every exit of a training process (completed, stopped, requeued, failed) passes through
`end_distributed`: threads of ours that call into torch's C++ (the heartbeat's store calls,
launch/heartbeat.py) are waited for, then the default process group is destroyed while Python
still runs. A daemon thread still inside a pybind11 call when the interpreter finalises is
ended by pthread_exit, whose unwinding through pybind11's noexcept GIL guard calls
std::terminate: "terminate called without an active exception", SIGABRT, and srun reports
"task 0: Aborted" for a rank that had finished its work (seen after a preemption in CI).
Lightning destroys the group at exit only for NCCL; a gloo group lived on into finalisation.

Both waits are bounded: a store call to a frozen host can outlast its own timeout, and
destroying a group waits for its queued work, which a gone peer never finishes. Past the bound
the process leaves at once with the status it was leaving with (`os._exit`, after flushing),
instead of hanging or aborting in finalisation.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
DESTROY_TIMEOUT_S = 30.0
_native_threads: list[threading.Thread] = []


def must_end_before_exit(thread: threading.Thread) -> None:
    """Register a daemon thread that calls into torch's C++: the process does not finalise while it runs."""
    _native_threads[:] = [t for t in _native_threads if t.is_alive()] + [thread]


def end_distributed(exit_code: int, timeout_s: float = DESTROY_TIMEOUT_S) -> None:
    """Wait for the registered threads, then destroy the default process group, if any; when either does
    not finish in `timeout_s`, flush and leave with `exit_code` (the code this exit was going to have)."""
    deadline = time.monotonic() + timeout_s
    for thread in _native_threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in _native_threads):
        log.warning("a heartbeat thread is still waiting on the rendezvous store: leaving now")
        leave_now(exit_code)
    if "torch" not in sys.modules:  # nothing distributed was ever started (config errors, --check)
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    done = threading.Event()

    def destroy() -> None:
        try:
            dist.destroy_process_group()
        except Exception as exc:  # noqa: BLE001 (the process is ending either way)
            log.debug("destroying the process group: %s", exc)
        finally:
            done.set()

    threading.Thread(target=destroy, name="cnnfleet-end-distributed", daemon=True).start()
    if done.wait(max(1.0, deadline - time.monotonic())):
        return
    log.warning("the process group did not shut down within %.0f s (a peer is gone): leaving now", timeout_s)
    leave_now(exit_code)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), read from /proc; [] where there is no /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def leave_now(exit_code: int) -> None:
    """Flush what was said and end the process without finalisation (threads stuck in C++ stay stuck).
    Its own processes go with it (data loader workers, the fork server, local ranks): a worker that
    deadlocked would otherwise outlive the run, holding memory and file handles."""
    for child in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(exit_code)
