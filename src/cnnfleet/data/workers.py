"""How DataLoader workers start: from a fork server, never as a fork of the training process.

A training process has threads before its loaders start workers (the rank heartbeat, the
rendezvous store's client, torch's intra-op pool, W&B). A plain fork copies the process with
whatever locks those threads held at that instant; Python's after-fork handler then waits on
one of them forever. Seen on main: a 2-process CPU run on shards hung at its first step, rank 1's
worker stuck in `PyOS_AfterFork_Child -> _PyEval_ReInitThreads -> PyThread_acquire_lock`
(Python 3.11), rank 0 waiting in DDP's buffer broadcast, in 2 of 7 starts.

The fork server is a fresh single-threaded process started once per training process (exec'd,
not forked); each worker is forked from it. It imports torch and the data modules once (the
preload), so a worker costs a fork of that server plus unpickling its dataset (the datasets
drop open files and clients in __getstate__ and reopen them in the worker).

Cost, measured on this 2-core machine (2 workers, a small in-memory data set): the process's first
loader delivers its first batch after 4.3-5.7 s (the server starting and importing torch) instead
of 0.04-0.06 s with fork; every later loader of the process (validation, the next fit) after ~0.1 s.
Only runs with data.num_workers > 0 pay it (image folders, shards), once per process.
"""

import multiprocessing
import os
from typing import Any

START_METHOD = "forkserver"
# imported once by the fork server, so each worker starts with them loaded
PRELOAD = ["torch", "PIL.Image", "cnnfleet.data.sharding", "cnnfleet.data.shards.loader", "cnnfleet.data.image_folder"]

_context: Any = None
_server_env: dict[str, str] | None = None  # os.environ when the fork server last started


def worker_start(num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for `num_workers` workers started safely (none for 0 workers).

    Workers take the fork server's environment, not the process's current one: when os.environ
    changed since the server started (credentials set by a notebook or a test), the server is
    restarted, so a loader's workers see the environment of the moment the loader was made (seen:
    an S3 loader's workers without the AWS keys set after an earlier loader started the server)."""
    global _context, _server_env
    if num_workers <= 0:
        return {}
    if _context is None:
        context = multiprocessing.get_context(START_METHOD)
        context.set_forkserver_preload(PRELOAD)
        _context = context
    now = dict(os.environ)
    if _server_env is not None and _server_env != now:
        from multiprocessing import forkserver

        stop = getattr(forkserver._forkserver, "_stop", None)  # Python 3.8+; the next worker starts a new one
        if stop is not None:
            stop()
    _server_env = now
    return {"multiprocessing_context": _context}
