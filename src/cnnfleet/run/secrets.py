"""Secrets never reach a config dump, a log or a W&B config."""

import re
from typing import Any

SECRET_KEY = re.compile(r"key|token|secret|password", re.IGNORECASE)
REDACTED = "***"


def redact(value: Any) -> Any:
    """A copy of a plain config with the value of every secret-looking key replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and v is not None else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
