"""The Optuna search loop behind `hydra/sweeper=cnnfleet_optuna`.

Why our own loop instead of hydra-optuna-sweeper: that plugin (1.2/1.3) pins optuna<3 (2021),
whose sqlite storage needs SQLAlchemy 1.4, and its loop suits neither resuming nor failing
trials: it runs n_trials NEW trials per invocation, restarts job numbers at 0 (so a resumed
sweep writes over the first trials' folders) and stops at the first failed trial by default.
Here, on Optuna 4 with SQLAlchemy 2:

* n_trials is the total of finished trials (completed + failed) the study should hold; the same
  command resumes an interrupted study and runs only what is missing;
* a trial's folder is named after its Optuna trial number, so no folder is reused;
* a trial left RUNNING by an interrupted sweep is marked failed and its parameters are queued
  again, so it is retried rather than lost;
* a failed trial (exception, NaN loss: the trial returns None and records why in its
  summary.json) is told to Optuna as FAIL with the reason as a user attribute; the sweep goes on.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from omegaconf import OmegaConf

from cnnfleet.errors import ConfigError

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted_trials"  # study user attribute: numbers of trials retried after a crash


@dataclass
class StudySettings:
    sweep_dir: str
    study_name: str
    storage: str | None
    direction: str
    n_trials: int
    n_jobs: int = 1
    max_failure_rate: float = 1.0


def distribution(override: Override) -> Any:
    """An Optuna distribution for a sweep override (choice/range/interval), None for a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # Hydra's range excludes `stop`; Optuna's high is inclusive
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"sweep '{override.input_line}' is an empty range")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_interval_sweep():  # Hydra's interval is always float; integers sweep with range()
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ConfigError(f"'{key}': the Optuna sweeper takes choice(), range() or interval() sweeps, not glob()")


def search_space(arguments: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split `key=value` / `key=choice(...)` overrides into Optuna distributions and fixed values."""
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        dist = distribution(override)
        if dist is None:
            fixed[key] = override.get_value_element_as_str()
        else:
            space[key] = dist
    for key in fixed:
        space.pop(key, None)  # a fixed value on the command line wins over the config's search space
    return space, fixed


def open_study(settings: StudySettings, sampler: Any) -> Any:
    import optuna

    if settings.direction not in ("maximize", "minimize"):
        raise ConfigError(f"optimized_direction={settings.direction!r}: use maximize or minimize")
    Path(settings.sweep_dir).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log says what matters, once per trial
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage,
        sampler=sampler,
        direction=settings.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"study '{settings.study_name}' in {settings.storage} was created to {study.direction.name.lower()}, "
            f"not {settings.direction}; use another hydra.sweeper.study_name or the original direction"
        )
    return study


def retry_interrupted(study: Any) -> list[int]:
    """Trials left RUNNING by a crashed sweep: mark them failed and queue their parameters again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    interrupted = list(study.user_attrs.get(INTERRUPTED, []))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
        interrupted.append(trial.number)
        log.warning("trial %d was interrupted; its parameters are queued again: %s", trial.number, trial.params)
    if stale:
        study.set_user_attr(INTERRUPTED, interrupted)
    return interrupted


def finished_count(study: Any) -> int:
    """Completed, failed and pruned trials, not counting interrupted ones (they are retried)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    return sum(1 for t in done if t.number not in interrupted)


def failure_reason(run_dir: Path) -> str | None:
    """The reason a trial wrote into its summary.json, when it failed."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary.get("reason") if summary.get("status") == "failed" else None


def run_study(settings: StudySettings, sampler: Any, launcher: Any, arguments: list[str]) -> Any:
    """Ask, launch, tell until the study holds n_trials finished trials."""
    from optuna.trial import TrialState

    space, fixed = search_space(arguments)
    if not space:
        raise ConfigError("the Optuna sweep has no search space: set hydra.sweeper.params or pass key=choice(...)")
    study = open_study(settings, sampler)
    interrupted = retry_interrupted(study)
    to_go = settings.n_trials - finished_count(study)
    log.info(
        "study '%s' (%s %s): %d finished trials, %d to run; storage %s",
        settings.study_name, settings.direction, ", ".join(space), settings.n_trials - max(to_go, 0),
        max(to_go, 0), settings.storage,
    )  # fmt: skip
    while to_go > 0:
        trials = [_ask(study, space, settings) for _ in range(min(settings.n_jobs, to_go))]
        numbers = [t.number for t in trials]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "one sweep driver per study"
        overrides = [tuple(f"{k}={v}" for k, v in {**t.params, **fixed}.items()) for t in trials]
        returns = launcher.launch(overrides, initial_job_idx=numbers[0])  # folder name = trial number
        for trial, trial_overrides, ret in zip(trials, overrides, returns, strict=True):
            _tell(study, trial, trial_overrides, ret, settings)
        to_go -= len(trials)
        _check_failure_rate(study, settings, interrupted)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.error("study '%s': no trial completed", settings.study_name)
        return None
    best = study.best_trial
    log.info("best trial %d: %s = %s with %s", best.number, settings.direction, best.value, best.params)
    results = {"name": "optuna", "best_trial": best.number, "best_params": best.params, "best_value": best.value}
    OmegaConf.save(OmegaConf.create(results), Path(settings.sweep_dir) / "optimization_results.yaml")
    return results


def _ask(study: Any, space: dict[str, Any], settings: StudySettings) -> Any:
    try:
        return study.ask(space)
    except ValueError as exc:  # Optuna refuses a parameter whose distribution changed
        raise ConfigError(
            f"the search space differs from the one study '{settings.study_name}' was started with ({exc}); "
            "resume with the same search space, or start a new study with hydra.sweeper.study_name=<new name>"
        ) from None


def _tell(study: Any, trial: Any, overrides: tuple[str, ...], ret: Any, settings: StudySettings) -> None:
    from optuna.trial import TrialState

    from cnnfleet.sweeps.trial import one_line

    run_dir = Path(settings.sweep_dir) / str(trial.number)
    if getattr(ret, "hydra_cfg", None) is not None:
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("overrides", list(overrides))
    reason = None
    try:
        value = ret.return_value
    except Exception as exc:  # the job itself raised (a launcher or infrastructure error)
        reason = one_line(exc)
    else:
        if value is None or not math.isfinite(float(value)):
            reason = failure_reason(run_dir) or f"the trial reported no finite value ({value})"
    if reason is not None:
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason)
    else:
        study.tell(trial, float(value))
        log.info("trial %d: %s -> %s", trial.number, " ".join(overrides), value)


def _check_failure_rate(study: Any, settings: StudySettings, interrupted: list[int]) -> None:
    from optuna.trial import TrialState

    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in interrupted]
    finished = finished_count(study)
    if finished and len(failed) / finished > settings.max_failure_rate:
        raise ConfigError(
            f"{len(failed)} of {finished} trials failed (max_failure_rate={settings.max_failure_rate}); "
            f"last reason: {failed[-1].user_attrs.get('fail_reason', '?')}"
        )
