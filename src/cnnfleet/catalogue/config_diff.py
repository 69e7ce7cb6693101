"""Two runs' configs side by side: the flattened keys (`optimizer.lr`) whose values differ.

By default compares Hydra's composed config (`.hydra/config.yaml`, written as every job starts, so
also for a run that failed early), before interpolation: each setting shows once, where it is set,
and the run folder's own paths (`${paths.output_dir}/checkpoints`) are not differences. `resolved`
compares config.yaml instead (the values the run used, written by the run). Lists are values
(`[32, 64, 128]`), not expanded by index. Secret-looking keys are shown as *** (run/secrets.py).
"""

import json
from pathlib import Path
from typing import Any

import yaml

from cnnfleet.catalogue.records import find_runs
from cnnfleet.errors import ConfigError
from cnnfleet.run.layout import CONFIG_FILE, HYDRA_DIR, OVERRIDES
from cnnfleet.run.resume import flatten  # the leaves of a nested config, as resume compares them
from cnnfleet.run.secrets import redact

ABSENT = "(absent)"


def shown(value: Any) -> str:
    if value is ABSENT:
        return ABSENT
    return json.dumps(value) if not isinstance(value, str) else value


def resolve_run(name: str, root: Path) -> Path:
    """A run folder from a path, or from a name under `root` (its folder name, or a unique part of it)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    runs = find_runs(root) if root.is_dir() else []
    matches = [run for run in runs if run.name == name or str(run.relative_to(root)) == name]
    matches = matches or [run for run in runs if name in str(run.relative_to(root))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(f"no run folder {name!r}: not a folder, and no run under {root} is named like it")
    names = ", ".join(str(m.relative_to(root)) for m in matches[:5])
    more = ", ..." if len(matches) > 5 else ""
    raise ConfigError(f"{name!r} matches {len(matches)} runs under {root} ({names}{more}); give more of the name")


def _load(path: Path) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def config_of(run_dir: Path, resolved: bool = False) -> dict[str, Any]:
    """The flattened, redacted config; ConfigError when the file is missing or damaged."""
    path = run_dir / CONFIG_FILE if resolved else run_dir / HYDRA_DIR / CONFIG_FILE
    config = _load(path)
    if config is None:
        hint = "" if resolved else " (a run folder holds .hydra/config.yaml from its start)"
        raise ConfigError(f"{path} is missing or unreadable{hint}")
    return flatten(redact(config))


def overrides_of(run_dir: Path) -> str:
    """The run's command-line overrides (.hydra/overrides.yaml), one line."""
    values = _load_list(run_dir / HYDRA_DIR / OVERRIDES)
    return " ".join(str(v) for v in values) if values else "none"


def _load_list(path: Path) -> list:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return data if isinstance(data, list) else []


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    keys = sorted(set(a) | set(b))
    return [(k, shown(a.get(k, ABSENT)), shown(b.get(k, ABSENT))) for k in keys if a.get(k, ABSENT) != b.get(k, ABSENT)]


def render_diff(run_a: Path, run_b: Path, rows: list[tuple[str, str, str]], width: int = 60) -> str:
    """`key  A  B` aligned; values longer than `width` are cut."""

    def cut(value: str) -> str:
        return value if len(value) <= width else value[: width - 3] + "..."

    header = ("key", "A", "B")
    table = [header, *[(k, cut(a), cut(b)) for k, a, b in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [f"A: {run_a}  (overrides: {overrides_of(run_a)})", f"B: {run_b}  (overrides: {overrides_of(run_b)})"]
    if not rows:
        return "\n".join([*lines, "the configs are identical"])
    lines.append(f"{len(rows)} keys differ:")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines)
