"""Locate the Hydra config tree in both install modes, and the folders searched beside it.

Hydra resolves a *relative* config_path as a Python module when started from a console
script and fails ("Primary config module 'conf' not found"), so we hand it an absolute path:
inside the package for a wheel (force-included by pyproject), at the repository top for an
editable install.

A team adds its own options to every group (model, data, experiment, cluster, ...) from folders
of its own, the ways Hydra offers plus one: `--config-dir DIR`, `hydra.searchpath=[file://DIR]`,
and CNNFLEET_CONFIG_PATH (folders separated by ':', e.g. a shared folder on the cluster's file
system; hydra_plugins/cnnfleet_searchpath adds them to every composition). `config_roots` lists
them in Hydra's order, for the checks and messages that name a group's options.
"""

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/cnnfleet
SEARCH_PATH_ENV = "CNNFLEET_CONFIG_PATH"
_roots: list[str] = []  # this command's search path, once its command line is read (launch)


def conf_dir() -> str:
    """Return the absolute path of conf/; raise FileNotFoundError if neither location exists."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"cnnfleet config tree not found next to {_PACKAGE_DIR}; reinstall the package")


def shared_folders(env: Mapping[str, str] | None = None) -> list[str]:
    """CNNFLEET_CONFIG_PATH's folders, absolute, in their order."""
    value = (os.environ if env is None else env).get(SEARCH_PATH_ENV, "")
    return [str(Path(part).expanduser().absolute()) for part in value.split(os.pathsep) if part.strip()]


def folder_of(entry: str) -> str | None:
    """The folder a search path entry names: file://DIR or DIR itself, pkg://package.sub inside an
    installed package; None for what is no folder (a structured config provider)."""
    scheme, sep, rest = entry.partition("://")
    if not sep:
        return str(Path(entry).expanduser().absolute())
    if scheme == "file":
        return str(Path(rest).expanduser().absolute())
    if scheme == "pkg":
        package, _, sub = rest.partition("/")
        try:
            return str(Path(str(resources.files(package))) / sub)
        except (ModuleNotFoundError, TypeError):
            return None
    return None


def searchpath_override(overrides: Sequence[str]) -> list[str]:
    """The entries of a `hydra.searchpath=[...]` override, or []."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides([o for o in overrides if "searchpath" in o]):
        if override.get_key_element() == "hydra.searchpath":
            value = override.value()
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def config_roots(
    config_dir: str | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    primary: str | None = None,
) -> list[str]:
    """Every config folder of a composition in Hydra's order: the primary one (cnnfleet's conf/, or
    --config-path), --config-dir, CNNFLEET_CONFIG_PATH, hydra.searchpath."""
    roots = [str(Path(primary).absolute()) if primary else conf_dir()]
    roots += [str(Path(config_dir).absolute())] if config_dir else []
    roots += shared_folders(env)
    roots += [folder for entry in searchpath_override(overrides) if (folder := folder_of(entry))]
    return list(dict.fromkeys(roots))


def use_search_path(roots: Sequence[str]) -> None:
    """Record this command's search path (for --help's list of options)."""
    _roots[:] = list(roots)


def current_roots() -> list[str]:
    return list(_roots) or config_roots(env=os.environ)
