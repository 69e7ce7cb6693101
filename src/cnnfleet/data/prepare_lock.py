"""One preparer per shared data root, and files that appear whole or not at all.

On a cluster the data root is shared by every node, and Lightning prepares data once per node
(`prepare_data` on each node's local rank 0): N nodes would download and unpack into one folder
at once, and a rank could read a file while another process writes it. So preparation holds an
exclusive flock on `<root>/.cnnfleet-prepare.lock` (flock works across NFS clients on Linux; on
Lustre it needs the `flock` mount option, which sites enable for exactly this), and everything it
writes goes to a temporary name first and is renamed into place (rename is atomic on POSIX file
systems), so a reader sees the old state or the new file, never half of it.
"""

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnfleet.errors import DataError

log = logging.getLogger(__name__)
LOCK_NAME = ".cnnfleet-prepare.lock"
WAIT_LIMIT_S = 6 * 3600  # a download of a large data set on a slow link; a dead holder's lock is freed by the kernel


@contextmanager
def preparing(root: Path, what: str, wait_limit_s: float = WAIT_LIMIT_S) -> Iterator[None]:
    """Hold the data root's preparation lock; waits (saying so once) while another process holds it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited, start = False, time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    holder = path.read_text().strip() or "another process"
                    log.info("waiting for %s to finish preparing %s in %s", holder, what, root)
                    waited = True
                if time.monotonic() - start > wait_limit_s:
                    raise DataError(
                        f"{root}: another process has been preparing {what} for over {wait_limit_s / 3600:g} h "
                        f"({path.read_text().strip() or 'holder unknown'}); stop it or remove {path}"
                    ) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        yield
    finally:
        os.close(fd)  # closing drops the flock


def temporary_name(path: Path) -> Path:
    """A sibling name no other process uses, for writing `path` before renaming it into place."""
    return path.with_name(f".{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")
