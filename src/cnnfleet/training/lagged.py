"""Device values read on the host one step late, so the host never waits inside a training step.

A GPU runs what the host queued; `.item()`, `int(t)` or a blocking copy makes the host wait until
the device has finished everything queued so far, and the next step is queued only after that:
the device idles while the host prepares it (airbench never syncs inside its loop). Here a value is
copied into pinned host memory without blocking at step t, with an event recorded behind the copy,
and read at step t+1: by then the device is working on step t+1, so waiting on the event costs
nothing the device notices (cudaEventSynchronize is not a stream or device synchronisation, and
torch.cuda.set_sync_debug_mode does not flag it). On CPU the value is simply read.
"""

from typing import Any

import torch
from torch import Tensor


class LaggedRead:
    """One value in flight: `start(value, tag)` at one step, `take()` at a later one."""

    def __init__(self) -> None:
        self._host: Tensor | None = None
        self._pending: tuple[Tensor, torch.cuda.Event | None, Any] | None = None

    def start(self, value: Tensor, tag: Any = None) -> None:
        """Copy `value` towards the host without waiting; a value still in flight is taken first."""
        if self._pending is not None:
            self.take()  # its copy must land before the buffer is reused
        value = value.detach()
        if value.device.type != "cuda":
            self._pending = (value.clone(), None, tag)
            return
        if self._host is None or self._host.shape != value.shape or self._host.dtype != value.dtype:
            self._host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
        self._host.copy_(value, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (self._host, event, tag)

    def take(self) -> tuple[Any, Any] | None:
        """The value started last as Python numbers (`tolist()`), and its tag; or None. Waits only for
        the copy started then."""
        if self._pending is None:
            return None
        host, event, tag = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        return host.tolist(), tag

    @property
    def pending(self) -> bool:
        return self._pending is not None
