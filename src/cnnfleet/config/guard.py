"""The guard around every builder: what goes wrong while building from config becomes one line.

Rule: an exception raised by a library (torch, torchvision, Lightning, timm, wandb, PIL) while
a part is built from the user's settings is an input problem: it becomes a ConfigError naming the
group and the component, e.g. `cannot build optimizer torch.optim.AdamW from optimizer.*: Invalid
learning rate: -1.0` (exit 2). An exception raised by cnnfleet's own code that is not one of our
errors is a bug: it passes through untouched, and the command writes traceback.txt and a one-line
pointer to it (cli.run_task).
"""

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnfleet.errors import CnnfleetError, ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/cnnfleet: frames of cnnfleet's own code


def first_line(exc: BaseException) -> str:
    """The message's first line; a heading that ends in ':' keeps its first detail
    (torch's `Error(s) in loading state_dict for X:` is nothing without the next line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _innermost(exc: BaseException) -> BaseException:
    """Hydra's InstantiationException (and similar wrappers) keep the real error as __cause__."""
    while exc.__cause__ is not None and type(exc).__name__ == "InstantiationException":
        exc = exc.__cause__
    return exc


def raised_by_cnnfleet(exc: BaseException) -> bool:
    """True when the innermost frame that raised `exc` is cnnfleet's own code (a bug, not input)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    return Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


@contextmanager
def building(key: str, component: object, label: str | None = None) -> Iterator[None]:
    """Build one part from the config node at `key` (a group such as `optimizer`, or `logger.wandb`);
    a library's complaint about the settings becomes one line naming the group and the component."""
    try:
        yield
    except CnnfleetError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:
        cause = _innermost(exc)
        if isinstance(cause, CnnfleetError):
            raise cause from None
        if raised_by_cnnfleet(cause):
            raise
        label = label or f"cannot build {key.split('.')[0]} {component or '?'} from {key}.*"
        raise ConfigError(f"{label}: {first_line(cause)}") from exc
