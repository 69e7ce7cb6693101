"""Hydra callback: record a multirun's settings in <sweep>/sweep.json when it starts.

The results table needs the optimized metric and its direction even when no trial finished,
and the CLI needs to know which sweep folder to summarize when the sweep ends (or is stopped).
Configured in conf/hydra/default.yaml; imports nothing heavy (Hydra builds it for every run).
"""

import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnfleet.run.files import write_json_atomic

SWEEP_FILE = "sweep.json"
_started: list[str] = []


def started_sweeps() -> list[str]:
    """Sweep folders this process started (normally one)."""
    return list(_started)


def swept_keys(config: DictConfig) -> list[str]:
    """Keys the sweep varies: sweep overrides on the command line (a=1,2 / choice(...)) and the
    sweeper's own search space (hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    fixed = {o.get_key_element() for o in parsed if not o.is_sweep_override()}
    return [*(k for k in params if k not in keys and k not in fixed), *keys]


class RecordSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        record = {
            "metric": config.get("optimized_metric"),
            "direction": config.get("optimized_direction"),
            "command": shlex.join(sys.argv),
            "sweeper": config.hydra.sweeper.get("_target_"),
            "launcher": config.hydra.launcher.get("_target_"),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "swept": swept_keys(config),
        }
        write_json_atomic(sweep_dir / SWEEP_FILE, record)
        _started.append(str(sweep_dir))
