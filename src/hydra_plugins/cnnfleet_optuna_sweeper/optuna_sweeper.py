"""Hydra Sweeper plugin: a thin shell over cnnfleet.sweeps.optuna_search.run_study.

Hydra imports every module of `hydra_plugins` at start-up, so this file imports nothing heavy.
The sampler arrives as its config (`_recursive_: false` in conf/hydra/sweeper/cnnfleet_optuna.yaml):
the driver instantiates it with a seed that follows from the study.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CnnfleetOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        params: DictConfig | None = None,
        pruner: str | None = "none",
        pruner_settings: DictConfig | None = None,
        max_retries: int = 2,
        poll_seconds: float = 2.0,
    ) -> None:
        self.sampler = sampler
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.pruner, self.pruner_settings = pruner, pruner_settings
        self.max_retries, self.poll_seconds = max_retries, poll_seconds
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config  # trials run as runs of their own (sweeps/slots.py), not through Hydra's launcher

    def sweep(self, arguments: list[str]) -> Any:
        import os
        import sys

        from cnnfleet.cli.app import fail
        from cnnfleet.errors import CnnfleetError
        from cnnfleet.sweeps.optuna_search import StudySettings, run_study

        assert self.config is not None, "setup() runs before sweep()"
        search = [f"{key}={value}" for key, value in (self.params or {}).items()] + list(arguments)
        try:
            settings = StudySettings(
                sweep_dir=str(self.config.hydra.sweep.dir),
                study_name=self.study_name,
                storage=self.storage,
                direction=self.direction,
                n_trials=self.n_trials,
                n_jobs=self.n_jobs,
                max_failure_rate=self.max_failure_rate,
                pruner=self.pruner,
                pruner_settings=_plain(self.pruner_settings),
                max_retries=self.max_retries,
                poll_seconds=self.poll_seconds,
            )
            return run_study(settings, self.sampler, self.config, search)
        except CnnfleetError as exc:  # one line, not Hydra's traceback
            fail(os.path.basename(sys.argv[0]), str(exc))


def _plain(value: Any) -> Any:
    """pruner_settings as plain Python (a mapping is checked by the driver; anything else is refused there)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
