"""Where an Optuna study lives: a journal file by default, or a database URL.

Why a journal file: the driver and every trial process (local, DDP, SLURM jobs on other nodes)
open the study to report and prune; sweeps on clusters live on NFS or Lustre, where sqlite's
locking is unsafe. Optuna's JournalStorage appends operations to one file and takes its lock by
creating a symlink (atomic on NFS), so it needs no database server
(https://optuna.readthedocs.io/en/stable/reference/generated/optuna.storages.JournalStorage.html).

A storage spec is one string: `<path>` (a journal file), `sqlite:///<path>` or any SQLAlchemy URL
(`postgresql://...`, `mysql://...`); a URL is anything with `://`.
"""

import logging
from pathlib import Path
from typing import Any

from cnnfleet.errors import ConfigError

log = logging.getLogger(__name__)
JOURNAL = "optuna.journal"
LEGACY_DB = "optuna.db"  # studies before the journal default


def is_url(spec: str) -> bool:
    return "://" in spec


def resolve_spec(spec: str | None, sweep_dir: Path) -> str:
    """The storage this sweep uses: the spec given, except that a default journal beside an older
    study's optuna.db (and no journal yet) keeps that study."""
    if spec is None or str(spec).strip() == "":
        raise ConfigError(
            "hydra.sweeper.storage=null: the study must live where its trial processes can reach it; leave the "
            f"default ({sweep_dir / JOURNAL}), or give a journal file path or a database URL"
        )
    spec = str(spec)
    legacy = sweep_dir / LEGACY_DB
    default = Path(spec).absolute() == sweep_dir.absolute() / JOURNAL
    if not is_url(spec) and default and not Path(spec).exists() and legacy.is_file():
        log.warning("this sweep's study is in %s (an earlier cnnfleet's default): resuming it there", legacy)
        return f"sqlite:///{legacy}"
    return spec


def optuna_storage(spec: str) -> Any:
    """An Optuna storage object for `spec`; ConfigError when it cannot be opened."""
    import optuna

    if is_url(spec):
        if spec.startswith("sqlite:///"):
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.RDBStorage(spec)
        except Exception as exc:  # a driver missing, a server unreachable, a malformed URL
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise ConfigError(f"hydra.sweeper.storage={spec}: cannot open it ({why})") from None
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec)
    if path.is_dir():
        raise ConfigError(f"hydra.sweeper.storage={spec} is a folder; give a journal file path (e.g. {path / JOURNAL})")
    if not path.parent.is_dir():
        raise ConfigError(
            f"hydra.sweeper.storage={spec}: its folder {path.parent} does not exist; create it or give "
            "another journal file path"
        )
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def describe(spec: str) -> str:
    kind = "sqlite" if spec.startswith("sqlite:") else "database" if is_url(spec) else "journal file"
    return f"{kind} {spec}"
