"""Atomic file writes (a reader never sees half a file), each with the mode of a new file.

Every atomic write in cnnfleet goes through `atomic_path`: the writer fills a temporary name
beside the target, which then gets the mode `open()` would have given a new file (0666 minus the
umask: 0644 under the usual 022), optionally an fsync, and is renamed over the target. Setting
the mode here, not trusting the writer, is the point: writers that stage through a private
temporary file create it 0600 (measured: safetensors 0.8's save_file leaves model.safetensors
-rw-------), and a rename keeps that mode.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def new_file_mode() -> int:
    """0666 minus this process's umask: the mode open() gives a new file."""
    try:  # Linux >= 4.7 reports the umask without changing it (os.umask would, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path` atomically.

    durable: fsync the file and its folder (checkpoints), so the rename survives a crash.
    The temporary file is removed when the writer raises; `path` is then untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
