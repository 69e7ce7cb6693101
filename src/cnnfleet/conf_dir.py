"""Locate the Hydra config tree in both install modes.

Hydra resolves a *relative* config_path as a Python module when started from a console
script and fails ("Primary config module 'conf' not found"), so we hand it an absolute path:
inside the package for a wheel (force-included by pyproject), at the repository top for an
editable install.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> str:
    """Return the absolute path of conf/; raise FileNotFoundError if neither location exists."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"cnnfleet config tree not found next to {_PACKAGE_DIR}; reinstall the package")
