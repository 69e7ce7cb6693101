"""Training loaders that resume mid-epoch exactly where they stopped.

When a run resumes from a checkpoint saved in the middle of an epoch (SIGTERM, preemption),
Lightning restores its loop counters but starts a fresh pass over the loader. Ours ask, when an
epoch's iteration begins, how many batches of this epoch the loop has already completed (0 for
a new epoch, k after a resume at step k of it) and skip them: the TrainingSampler (data/sharding.py)
drops their indices before any image is read, so training continues with batch k + 1 of the same
permutation.

Why not Lightning's stateful-loader support (`state_dict`/`load_state_dict` on the loader): it
loads the saved state only when the fit loop builds its loader after restoring, but our LR
schedulers ask for `estimated_stepping_batches`, which builds the loader first, so the saved
state was never applied (measured: the resumed run started the epoch over).
"""

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

SkipFn = Callable[[], int]


def completed_batches(trainer: Any) -> int:
    """Batches of the current epoch the fit loop has completed: what a resumed epoch skips."""
    if trainer is None or not trainer.training:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)


class ResumeAware:
    """Mixin: `skip_fn` says how many batches to skip when an epoch's iteration starts.

    The empty state_dict/load_state_dict mark the loader as resumable for Lightning (no
    "not resumable" warning); the position comes from the restored loop, not from this state."""

    skip_fn: SkipFn | None = None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def batches_to_skip(self) -> int:
        return self.skip_fn() if self.skip_fn is not None else 0


class ResumableDataLoader(ResumeAware, DataLoader):
    """The DataLoader path's training loader (its sampler: a TrainingSampler, which has `skip`)."""

    def __iter__(self) -> Iterator[Any]:
        self.sampler.skip = self.batches_to_skip() * self.batch_size  # runs at the epoch's first next()
        yield from super().__iter__()
