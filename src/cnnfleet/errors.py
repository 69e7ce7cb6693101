"""Errors a user can fix. The CLI prints each as one line and exits with code 2."""


class CnnfleetError(Exception):
    """Base class: an input problem with a message that says what is wrong and how to fix it."""


class ConfigError(CnnfleetError):
    """A config key, value or combination is invalid."""


class CheckpointError(CnnfleetError):
    """A checkpoint is missing, unreadable or does not match the run."""


class DataError(CnnfleetError):
    """A data set cannot be found or read."""


class LaunchError(CnnfleetError):
    """The processes of a distributed run could not find or reach each other."""
