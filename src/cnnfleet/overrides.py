"""Reading Hydra command-line overrides (`key=value`, `+key=value`, `~key`) before Hydra parses them."""


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of `key` sets, or None when no override names it."""
    value = None
    for item in overrides:
        name, sep, rhs = item.partition("=")
        if sep and name.lstrip("+~") == key:
            value = rhs
    return value
