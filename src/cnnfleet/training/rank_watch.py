"""A rank that stops answering ends the run within device.timeout_s, in one line naming it.

The heartbeat (launch/heartbeat.py) starts once the ranks have met (Lightning's setup) and stops
at teardown, so ranks that finish first are never taken for lost. When a peer falls silent the
watching rank records the end (rank 0: state.json and summary.json), says which rank and how to
continue, kills the silent peer when it runs on this host (a frozen process holds its GPU and
port), and exits: the training thread is stuck in a collective that would only fail at
device.timeout_s (gloo) or be aborted without a word (NCCL's watchdog).
"""

import contextlib
import logging
import os
import re
import signal as os_signals
import socket
import sys
from collections.abc import Callable

import lightning as L

from cnnfleet.errors import RankLost
from cnnfleet.launch.heartbeat import Heartbeat
from cnnfleet.run.attempt import Attempt
from cnnfleet.run.plan import RunPlan
from cnnfleet.run.state import FAILED
from cnnfleet.run.summary import write_failure

log = logging.getLogger(__name__)
SILENT_SHARE = 0.9  # of device.timeout_s: report before the collective's own timeout fires


class RankWatch(L.Callback):
    def __init__(self, timeout_s: float, on_silent: Callable[[int, str, Heartbeat, L.Trainer | None], None]) -> None:
        self.timeout_s, self.on_silent = timeout_s, on_silent
        self.heartbeat: Heartbeat | None = None
        self.trainer: L.Trainer | None = None  # its step and epoch go into the record

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size < 2 or self.heartbeat is not None:
            return
        self.trainer = trainer
        heartbeat = Heartbeat(
            trainer.global_rank,
            trainer.world_size,
            max(5.0, SILENT_SHARE * self.timeout_s),
            lambda peer, what: self.on_silent(peer, what, heartbeat, trainer),
        )
        try:
            heartbeat.start()
        except Exception as exc:  # noqa: BLE001 (no watch is better than no run; the timeout still holds)
            log.warning("rank heartbeat not started (%s): a frozen rank is found by device.timeout_s only", exc)
            return
        self.heartbeat = heartbeat

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning calls no teardown hook after an exception (a stop, a failure): the beat must end here
        self.stop()

    def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    def end_for_silent(self, at_least_s: float, why: str) -> None:
        """After a collective failed: when a peer has been silent for `at_least_s`, end as the heartbeat
        would (one line naming it; a frozen local peer killed). Returns when every peer still beats."""
        heartbeat = self.heartbeat
        if heartbeat is None:
            return
        for peer, silent_s in heartbeat.silent(at_least_s):
            heartbeat.stop()
            self.on_silent(
                peer,
                f"{heartbeat.describe(peer)} stopped answering: its heartbeat stopped {silent_s:.0f} s ago and {why}",
                heartbeat,
                self.trainer,
            )


def end_on_silent_rank(plan: RunPlan, attempt: Attempt) -> Callable[[int, str, Heartbeat], None]:
    """What a rank does when a peer stops answering (training/rank_watch.py): record, say, end."""

    def end(peer: int, what: str, heartbeat: Heartbeat, trainer: L.Trainer | None = None) -> None:
        line = (
            f"{what}, so rank {plan.rank} ends the run (the others cannot go on without it); the checkpoints "
            f"written so far are kept; continue with: {plan.next_command()}"
        )
        try:
            if trainer is not None:  # the step the run got to (its last checkpoint may be older)
                attempt.at(trainer.global_step, trainer.current_epoch)
            if attempt.close(FAILED, line):
                write_failure(plan.run_dir, line)
        finally:
            sys.stderr.write(f"cnnfleet-train: error: {line}\n")
            sys.stderr.flush()
            kill_if_local(heartbeat.who.get(peer, ""))
            os._exit(RankLost.exit_code)  # the training thread waits in a collective that will not return

    return end


def kill_if_local(who: str) -> None:
    """SIGKILL the silent peer when it runs on this host ('host H, pid P'): frozen, it holds its device and port."""
    match = re.fullmatch(r"host (\S+), pid (\d+)", who)
    if match and match.group(1) == socket.gethostname():
        with contextlib.suppress(OSError):
            os.kill(int(match.group(2)), os_signals.SIGKILL)
