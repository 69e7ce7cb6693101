"""One job from a config composed once: what Hydra's app does for a single run, on its public API.

hydra.core.utils.run_job creates the job's folder, configures logging from hydra.job_logging,
saves .hydra/{config,hydra,overrides}.yaml, applies hydra.job.env_set and calls the task; the
callbacks of `hydra.callbacks` are called around it as Hydra's app calls them
(https://hydra.cc/docs/experimental/callbacks/).
"""

from collections.abc import Callable
from typing import Any

from hydra.core.utils import configure_log, run_job
from hydra.types import HydraContext
from hydra.utils import instantiate
from omegaconf import DictConfig


class JobCallbacks:
    """The instances of `hydra.callbacks`; `on_*_end` in reverse order, as Hydra calls them."""

    def __init__(self, cfg: DictConfig) -> None:
        callbacks = cfg.hydra.get("callbacks") or {}
        self.callbacks = [instantiate(callbacks[name]) for name in callbacks]

    def _call(self, method: str, reverse: bool = False, **kwargs: Any) -> None:
        for callback in reversed(self.callbacks) if reverse else self.callbacks:
            hook = getattr(callback, method, None)
            if hook is not None:
                hook(**kwargs)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._call("on_run_start", config=config, **kwargs)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._call("on_job_start", config=config, **kwargs)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._call("on_job_end", reverse=True, config=config, job_return=job_return, **kwargs)

    def on_run_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._call("on_run_end", reverse=True, config=config, job_return=job_return, **kwargs)


def run_one(task: Callable[[DictConfig], Any], cfg: DictConfig, config_name: str) -> Any:
    """Run `task` on `cfg` (the hydra node included) in the folder hydra.run.dir; return its value
    (its exception is raised again, as Hydra's app does)."""
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = JobCallbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=config_name)
    context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]  # run_job reads neither loader nor more
    result = run_job(
        task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None, hydra_context=context
    )
    callbacks.on_run_end(config=cfg, config_name=config_name, job_return=result)
    return result.return_value
