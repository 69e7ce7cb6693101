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
        }
        write_json_atomic(sweep_dir / SWEEP_FILE, record)
        _started.append(str(sweep_dir))
