"""Hydra Sweeper plugin: a thin shell over cnnfleet.sweeps.optuna_search.run_study.

Hydra imports every module of `hydra_plugins` at start-up, so this file imports nothing heavy.
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
    ) -> None:
        self.sampler = sampler
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.launcher: Any = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> Any:
        import os
        import sys

        from cnnfleet.cli import fail
        from cnnfleet.errors import CnnfleetError
        from cnnfleet.sweeps.optuna_search import StudySettings, run_study

        assert self.config is not None, "setup() runs before sweep()"
        search = [f"{key}={value}" for key, value in (self.params or {}).items()] + list(arguments)
        settings = StudySettings(
            sweep_dir=str(self.config.hydra.sweep.dir),
            study_name=self.study_name,
            storage=self.storage,
            direction=self.direction,
            n_trials=self.n_trials,
            n_jobs=self.n_jobs,
            max_failure_rate=self.max_failure_rate,
        )
        try:
            return run_study(settings, self.sampler, self.launcher, search)
        except CnnfleetError as exc:  # one line, not Hydra's traceback
            fail(os.path.basename(sys.argv[0]), str(exc))
