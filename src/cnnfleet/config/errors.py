"""Turn Hydra/OmegaConf composition errors into one line that names the key and the fix."""

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from cnnfleet.errors import CnnfleetError

Roots = str | Sequence[str]  # cnnfleet's conf/ alone, or every folder of the search path (conf_dir.config_roots)


def _folders(roots: Roots) -> list[Path]:
    return [Path(roots)] if isinstance(roots, str) else [Path(root) for root in roots]


def group_options(roots: Roots, group: str) -> list[str]:
    """Options of a config group as a user types them, from every folder of the search path."""
    return sorted({p.stem for root in _folders(roots) for p in (root / group).glob("*.yaml")})


def is_group(roots: Roots, name: str) -> bool:
    return any((root / name).is_dir() for root in _folders(roots))


def describe_groups(roots: Roots) -> str:
    """One line per config group with its options (the --help listing)."""
    folders = _folders(roots)
    groups = sorted({p.name for root in folders if root.is_dir() for p in root.iterdir() if p.is_dir()} - {"hydra"})
    return "\n".join(f"  {group}: {', '.join(group_options(roots, group))}" for group in groups)


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _close(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _unknown_option(exc: MissingConfigException, roots: Roots) -> str:
    found = re.search(r"Could not (?:find|load) '([^']+)'", str(exc))
    missing = found.group(1) if found else (exc.missing_cfg_file or "?")
    group, _, option = missing.rpartition("/")
    if not group:
        return f"config '{missing}' not found in {', '.join(str(f) for f in _folders(roots))}"
    return unknown_option_message(roots, group, option)


def unknown_option_message(roots: Roots, group: str, option: str) -> str:
    valid = group_options(roots, group)
    return (
        (f"unknown option '{option}' for group '{group}'{_close(option, valid)} valid options: {', '.join(valid)}")
        .replace("? valid", "? Valid")
        .replace("' valid", "'; valid")
    )


def _schema_of_option(roots: Roots, group: str, option: str) -> str | None:
    """The `*_schema` an option's YAML starts its defaults list with (the first folder that has it)."""
    path = next((p for root in _folders(roots) if (p := root / group / f"{option}.yaml").is_file()), None)
    found = re.search(r"^\s*-\s*(\w+_schema)\s*$", path.read_text(), re.M) if path else None
    return found.group(1) if found else None


def key_homes(conf_root: Roots, leaf: str) -> list[str]:
    """Where a key named `leaf` is defined: `device.precision`, or `data.root (data=imagefolder, ...)`."""
    from dataclasses import fields

    from cnnfleet.config.schema import GROUP_SCHEMAS, TrainConfig

    homes = [f.name for f in fields(TrainConfig) if f.name == leaf and f.name not in GROUP_SCHEMAS]
    for group, schemas in GROUP_SCHEMAS.items():
        owners = {name for name, cls in schemas.items() if leaf in {f.name for f in fields(cls)}}
        if not owners:
            continue
        if len(schemas) == 1:
            homes.append(f"{group}.{leaf}")
            continue
        options = [o for o in group_options(conf_root, group) if _schema_of_option(conf_root, group, o) in owners]
        homes.append(f"{group}.{leaf} (with {', '.join(f'{group}={o}' for o in options)})")
    return homes


def _unknown_key(cause: ConfigKeyError | ConfigAttributeError, conf_root: Roots) -> str:
    key = cause.full_key or str(cause.key)
    siblings: list[str] = []
    parent = cause.parent_node
    if parent is not None and hasattr(parent, "keys"):
        siblings = [str(k) for k in parent if not str(k).startswith("_")]
    leaf = key.rsplit(".", 1)[-1]
    hint = _close(leaf, siblings)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = hint.replace("mean '", f"mean '{prefix}")
    homes = [h for h in key_homes(conf_root, leaf) if h != key]
    if homes:  # a key of another group (or another option): say where it lives, never suggest +key
        return f"unknown config key '{key}'; '{leaf}' is set as {' or '.join(homes)}"
    return f"unknown config key '{key}'{hint} (to add a new key on purpose use +{key}=...)"


def explain(exc: BaseException, conf_root: Roots) -> str:
    """Return one line describing a composition error; the caller prints it and exits 2."""
    if isinstance(exc, CnnfleetError):
        return str(exc)
    if isinstance(exc, MissingConfigException):
        return _unknown_option(exc, conf_root)
    if "Ambiguous value for argument" in str(exc):
        return f"{_first_line(exc)} (a sweep over several values needs -m; one run takes one value)"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override: {_first_line(exc)} (write key=value, quote values with spaces)"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and " not in " in str(cause):
        return _unknown_key(cause, conf_root)
    if isinstance(cause, ValidationError):
        return f"wrong type for '{cause.full_key}': {_first_line(cause.msg or cause)}"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return f"'{cause.full_key}': {_first_line(cause.msg or cause)}"
    detail = _first_line(cause) if cause is not exc else ""
    head = _first_line(exc)
    return f"{head} {detail}".strip() if detail and detail not in head else head


COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, CnnfleetError)
