"""Which rank stopped answering: heartbeats through the rendezvous store, not error text.

A rank that dies with a TCP reset surfaces in gloo as "Connection reset by peer"; one that freezes
(SIGSTOP, a hung driver) or whose node vanishes without a reset surfaces nowhere: the survivors
wait in a collective for device.timeout_s, and NCCL's watchdog then aborts them without a word.
So every rank runs a thread that increments its own counter in the rendezvous store
(MASTER_ADDR:MASTER_PORT, a client connection of its own with a short timeout, so the thread never
blocks the training thread's use of the store) every `interval_s`, and reads the others'. A rank
whose counter has not moved for `silent_after_s` (0.9 x device.timeout_s, so before the
collective's own timeout), or a store that has not answered that long (its host, rank 0, is
gone), is reported once: the callback's `on_silent(rank, what)` says so in one line and ends the
process. The thread runs beside the training thread (torch releases the GIL in collectives and
kernels), so a slow step, a long checkpoint write or a straggler never looks silent.
"""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from cnnfleet.launch.shutdown import must_end_before_exit

PREFIX = "cnnfleet/heartbeat"


class Heartbeat:
    def __init__(
        self,
        rank: int,
        world_size: int,
        silent_after_s: float,
        on_silent: Callable[[int, str], None],
        interval_s: float = 1.0,
        address: tuple[str, int] | None = None,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.silent_after_s, self.interval_s = silent_after_s, interval_s
        self.on_silent = on_silent
        self.address = address or (os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 0)))
        self._stop = threading.Event()
        self._store = None
        self.store_ok, self.store_error = time.monotonic(), ""
        self.seen: dict[int, float] = {}  # peer -> monotonic time its counter last moved
        self.who: dict[int, str] = {}  # peer -> "host H, pid P"
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        from torch.distributed import TCPStore

        timeout = timedelta(seconds=max(1.0, min(10.0, self.silent_after_s / 3)))
        self._store = TCPStore(*self.address, is_master=False, timeout=timeout, wait_for_workers=False)
        self._store.set(f"{PREFIX}/who/{self.rank}", f"host {socket.gethostname()}, pid {os.getpid()}")
        now = time.monotonic()
        self.seen = {peer: now for peer in range(self.world_size) if peer != self.rank}
        self.store_ok, self.store_error = now, ""
        self._threads = [
            threading.Thread(target=target, name=f"cnnfleet-heartbeat{target.__name__}", daemon=True)
            for target in (self._beat, self._judge)
        ]
        for thread in self._threads:
            thread.start()
        must_end_before_exit(self._threads[0])  # _beat calls into the store

    def stop(self) -> None:
        """Stop beating; the threads leave at their next wake-up. The process waits for the one inside
        store calls before it exits (launch/shutdown.py: a daemon thread inside a store call during the
        interpreter's finalisation aborts the process)."""
        self._stop.set()

    def describe(self, peer: int) -> str:
        """'rank 1 (host n2, pid 123)' as the peer published it (learned at start, while all answer)."""
        return f"rank {peer}" + (f" ({self.who[peer]})" if peer in self.who else "")

    def _learn_who(self) -> None:
        """Every peer's host and pid, read once all have published them (a frozen store could not tell later)."""
        deadline = time.monotonic() + 60
        while len(self.who) < len(self.seen) and time.monotonic() < deadline and not self._stop.is_set():
            for peer in self.seen:
                if peer not in self.who and self._store.check([f"{PREFIX}/who/{peer}"]):
                    self.who[peer] = self._store.get(f"{PREFIX}/who/{peer}").decode()
            time.sleep(0.2)

    def silent(self, at_least_s: float) -> list[tuple[int, float]]:
        """Peers whose counter has not moved for `at_least_s`, longest first."""
        now = time.monotonic()
        quiet = [(peer, now - seen) for peer, seen in self.seen.items() if now - seen >= at_least_s]
        return sorted(quiet, key=lambda pair: -pair[1])

    def _beat(self) -> None:
        """Increment our counter, read the others'. A store op may block while the store's host is frozen
        (the client's timeout does not cover every read), so this thread never judges: _judge does."""
        counts: dict[int, int] = {}
        with contextlib.suppress(Exception):  # names are for messages only
            self._learn_who()
        while not self._stop.wait(self.interval_s):
            try:
                self._store.add(f"{PREFIX}/beat/{self.rank}", 1)
                for peer in self.seen:
                    count = self._store.add(f"{PREFIX}/beat/{peer}", 0)  # adding 0 reads without waiting
                    if count != counts.get(peer):
                        counts[peer], self.seen[peer] = count, time.monotonic()
                self.store_ok = time.monotonic()
            except Exception as exc:  # noqa: BLE001 (a store that does not answer is judged by its silence)
                self.store_error = type(exc).__name__

    def _judge(self) -> None:
        while not self._stop.wait(self.interval_s):
            quiet = time.monotonic() - self.store_ok
            if quiet >= self.silent_after_s and self.rank != 0:  # rank 0's node hosts the store
                why = f" ({self.store_error})" if self.store_error else ""
                self._report(
                    0,
                    f"its rendezvous store at {self.address[0]}:{self.address[1]} has not answered for "
                    f"{quiet:.0f} s{why}",
                )
                return
            for peer, silent_s in self.silent(self.silent_after_s):
                self._report(peer, f"its heartbeat stopped {silent_s:.0f} s ago")
                return

    def _report(self, peer: int, what: str) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.on_silent(peer, f"{self.describe(peer)} stopped answering: {what}")
