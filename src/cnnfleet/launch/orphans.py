"""Ranks started by Lightning's DDP launcher die with rank 0.

Lightning's launcher watches its children: when a rank > 0 dies, it kills the others and itself
(measured: the job ends within its 5 s polling period, naming the rank). The reverse is not
covered: when rank 0 dies (SIGKILL, OOM killer), its children keep waiting in a collective until
the timeout, as orphans. Linux's parent-death signal closes that gap.
"""

import os
import signal
import sys
from collections.abc import Mapping

from cnnfleet.launch.env import lightning_launched_child

PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """For worker processes of our own (cnnfleet-prepare's encoders): SIGKILL when the parent dies, so a
    killed command leaves no orphan holding its locks."""
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)


def die_with_parent(env: Mapping[str, str] | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent (rank 0) exits; True when set."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux") or not lightning_launched_child(env):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return False
    if os.getppid() == 1:  # rank 0 died before the signal was armed
        os._exit(1)
    return True
