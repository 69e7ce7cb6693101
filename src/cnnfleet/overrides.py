"""Reading Hydra command-line overrides (`key=value`, `+key=value`, `~key`) before Hydra parses them."""


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of `key` sets, or None when no override names it."""
    value = None
    for item in overrides:
        name, sep, rhs = item.partition("=")
        if sep and name.lstrip("+~") == key:
            value = rhs
    return value


def quote_value(path: str) -> str:
    """Quote a value (a path) for Hydra's override grammar when it holds special characters."""
    return path if all(c.isalnum() or c in "/._-" for c in path) else "'" + path.replace("'", "\\'") + "'"
