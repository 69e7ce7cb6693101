"""One trial of a Hydra multirun.

Two rules make trials safe inside any sweeper:

* A trial never takes the sweep down: its error is printed as one line, recorded in the trial's
  summary.json (status "failed" and the reason) and the trial returns None; the sweeper and the
  results table read the status from the run folder.
* A trial with more than one local process runs as its own process tree. Lightning's `ddp`
  re-launches `sys.argv` for ranks > 0; inside a multirun that command still holds `-m`, so each
  rank would re-run the whole sweep in another folder and, with a sampling sweeper, train
  different hyperparameters. Instead the trial starts `python -m cnnfleet.cli.train <this trial's
  overrides> hydra.run.dir=<trial folder>` (an ordinary single run, whose ranks Lightning
  launches correctly), waits, and returns the metric from its summary.json. Cost: one extra
  interpreter start (~3-5 s of imports) per trial. Under SLURM (launcher=slurm) the ranks are
  SLURM tasks and run the trial directly.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from cnnfleet.config.overrides import quote_value
from cnnfleet.launch.env import SWEEP_DIR_ENV, in_multirun, slurm_task_id, torchrun_run_id
from cnnfleet.run.layout import SUMMARY_FILE
from cnnfleet.run.summary import write_failure

log = logging.getLogger(__name__)


def needs_own_process(world_size: int) -> bool:
    """A local multirun trial with several ranks (SLURM or torchrun already launched them)."""
    env = dict(os.environ)
    return in_multirun() and world_size > 1 and slurm_task_id(env) is None and torchrun_run_id(env) is None


def one_line(exc: BaseException) -> str:
    """An exception as one line: our errors are already phrased for users; others get their type."""
    from cnnfleet.errors import CnnfleetError, user_message

    text = " ".join(user_message(exc).split()) or type(exc).__name__
    return text if isinstance(exc, CnnfleetError) else f"{type(exc).__name__}: {text}"


def run_in_own_process(module: str = "cnnfleet.cli.train") -> float | None:
    """Run this trial as a single run in its own process tree; its metric, or None if it failed."""

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = [*hydra_cfg.overrides.task, f"hydra.run.dir={quote_value(str(output_dir))}", "hydra.output_subdir=null"]
    env = {**os.environ, SWEEP_DIR_ENV: str(hydra_cfg.sweep.dir)}
    log.info("trial %s: its ranks run in their own process tree (python -m %s)", hydra_cfg.job.num, module)
    code = subprocess.call([sys.executable, "-m", module, *overrides], env=env)
    summary_path = output_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if code != 0 and summary.get("status") != "failed":
        summary = {"status": "failed", "reason": f"the trial's process tree exited with code {code}"}
        write_failure(output_dir, summary["reason"])
    if summary.get("status") != "completed":
        return None
    return (summary.get("optimized") or {}).get("value")
