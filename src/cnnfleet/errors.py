"""Errors a user can fix. The CLI prints each as one line and exits with code 2."""


class CnnfleetError(Exception):
    """Base class: an input problem with a message that says what is wrong and how to fix it."""

    exit_code = 2  # usage error; failures of the run itself use 1


class ConfigError(CnnfleetError):
    """A config key, value or combination is invalid."""


class CheckpointError(CnnfleetError):
    """A checkpoint is missing, unreadable or does not match the run."""


class DataError(CnnfleetError):
    """A data set cannot be found or read."""


class LaunchError(CnnfleetError):
    """The processes of a distributed run could not find or reach each other."""


class RunFailed(CnnfleetError):
    """The run could not go on (out of memory, ...); the message says what to change."""

    exit_code = 1


class RankLost(CnnfleetError):
    """A rank of a running distributed job died; the others cannot go on."""

    exit_code = 1


def user_message(exc: BaseException) -> str:
    """The message to print. An error raised in a DataLoader worker reaches us re-raised with the
    worker's traceback inside its message ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."): keep only our own last line."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        prefix = f"{type(exc).__name__}: "
        text = last.split(prefix, 1)[1] if prefix in last else last
    return text
