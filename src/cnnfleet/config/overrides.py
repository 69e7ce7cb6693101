"""Reading Hydra command-line overrides (`key=value`, `+key=value`, `~key`) before Hydra parses them."""


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of `key` sets (quotes removed), or None when no override names it.

    Lightning's DDP re-launch passes `hydra.run.dir="<folder>"`: the quotes are Hydra's grammar."""
    value = None
    for item in overrides:
        name, sep, rhs = item.partition("=")
        if sep and name.lstrip("+~") == key:
            value = rhs
    if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].replace("\\" + value[0], value[0])
    return value


def quote_value(path: str) -> str:
    """Quote a value (a path) for Hydra's override grammar when it holds special characters."""
    return path if all(c.isalnum() or c in "/._-" for c in path) else "'" + path.replace("'", "\\'") + "'"
