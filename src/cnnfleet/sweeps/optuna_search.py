"""The Optuna search loop behind `hydra/sweeper=cnnfleet_optuna`: asynchronous, pruned, resumable.

Why our own loop instead of hydra-optuna-sweeper: that plugin (1.2/1.3) pins optuna<3 (2021),
runs n_trials NEW trials per invocation (restarting folder numbers at 0), launches trials in
batches that wait for their slowest member, and has no pruning. Here, on Optuna 4:

* n_trials is the total of finished trials (completed, pruned, failed) the study holds; the same
  command resumes an interrupted study and runs only what is missing;
* the sampler is seeded with `seed + the number of trials the study holds`, so a resumed study
  never draws the same parameters again (a fixed seed would replay trial 0's);
* K = n_jobs slots: a new trial starts as soon as any running trial ends (sweeps/slots.py: local
  processes or SLURM jobs), never waiting for a batch;
* each trial is its own run `<sweep>/<trial number>`, reporting the optimized metric to the study
  at every validation, where the pruner may stop it (sweeps/pruning.py);
* the study lives in a journal file (safe on NFS/Lustre, sweeps/storage.py), and each running
  trial's slot (pid or SLURM job) is stored with it: a driver started again (after a logout or a
  kill -9) waits for trials that still run, resumes the ones that stopped in their own folders,
  and counts the finished ones;
* a trial's end is classified (sweeps/outcome.py): infrastructure failures are retried in place up
  to max_retries, bad input and divergence are told as FAIL with the reason as a user attribute.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from omegaconf import DictConfig, OmegaConf

from cnnfleet.errors import ConfigError
from cnnfleet.run.layout import HYDRA_DIR, OVERRIDES, STATE_FILE, SUMMARY_FILE

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
    pruner: str | None = "none"
    pruner_settings: dict | None = None
    max_retries: int = 2
    poll_seconds: float = 2.0


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


def open_study(settings: StudySettings, sampler_cfg: Any, storage_spec: str) -> Any:
    """Load or create the study; its sampler is seeded from the study (see the module's note)."""
    import optuna
    from hydra.utils import instantiate

    from cnnfleet.sweeps.pruning import build_pruner
    from cnnfleet.sweeps.storage import optuna_storage

    if settings.direction not in ("maximize", "minimize"):
        raise ConfigError(f"optimized_direction={settings.direction!r}: use maximize or minimize")
    Path(settings.sweep_dir).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log says what matters, once per trial
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=optuna_storage(storage_spec),
        direction=settings.direction,
        pruner=build_pruner(settings.pruner, settings.pruner_settings),
        load_if_exists=True,
    )
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"study '{settings.study_name}' in {storage_spec} was created to {study.direction.name.lower()}, "
            f"not {settings.direction}; use another hydra.sweeper.study_name or the original direction"
        )
    study.sampler = make_sampler(sampler_cfg, len(study.get_trials(deepcopy=False)), instantiate)
    return study


def make_sampler(sampler_cfg: Any, held: int, instantiate: Any) -> Any:
    """The configured sampler, its seed advanced by the number of trials the study holds."""
    if sampler_cfg is None:
        return None
    if not isinstance(sampler_cfg, dict | DictConfig):
        return sampler_cfg  # an instantiated sampler (a caller of run_study): used as given
    import warnings

    from optuna.exceptions import ExperimentalWarning

    seed = sampler_cfg.get("seed")
    with warnings.catch_warnings():  # TPE's constant_liar is "experimental" since 2.8; said once in the docs
        warnings.simplefilter("ignore", ExperimentalWarning)
        return instantiate(sampler_cfg, seed=None if seed is None else int(seed) + held)


def finished_count(study: Any) -> int:
    """Completed, failed and pruned trials (not the failed records of trials an older cnnfleet re-queued)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    return sum(1 for t in done if t.number not in interrupted)


def space_record(space: dict[str, Any]) -> dict[str, dict]:
    """The search space for sweep.json (the results plot draws log-searched keys on log axes)."""
    from optuna.distributions import CategoricalDistribution

    record = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            record[key] = {"distribution": "categorical", "choices": [str(c) for c in dist.choices]}
        else:
            kind = "int" if type(dist).__name__ == "IntDistribution" else "float"
            record[key] = {"distribution": kind, "log": bool(dist.log), "low": dist.low, "high": dist.high}
    return record


def _record_sweep(settings: StudySettings, space: dict[str, Any], storage_spec: str) -> None:
    from cnnfleet.run.files import write_json_atomic
    from cnnfleet.sweeps.callback import SWEEP_FILE

    path = Path(settings.sweep_dir) / SWEEP_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record.update(space=space_record(space), optuna={"storage": storage_spec, "study_name": settings.study_name})
    write_json_atomic(path, record)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(settings: StudySettings) -> None:
    """hydra.sweeper.* values as one line each (the sweeper's keys have no schema of their own)."""
    wholes = {
        "n_jobs": (settings.n_jobs, 1),
        "n_trials": (settings.n_trials, 0),
        "max_retries": (settings.max_retries, 0),
    }
    for key, (value, low) in wholes.items():
        if not _whole(value) or value < low:
            raise ConfigError(f"hydra.sweeper.{key}={value!r}: use a whole number >= {low}")
    poll = settings.poll_seconds
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not math.isfinite(poll) or poll <= 0:
        raise ConfigError(f"hydra.sweeper.poll_seconds={poll!r}: use a number of seconds > 0")
    rate = settings.max_failure_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate!r}: use a fraction between 0 and 1")
    if settings.pruner_settings is not None and not isinstance(settings.pruner_settings, dict):
        raise ConfigError(
            f"hydra.sweeper.pruner_settings={settings.pruner_settings!r}: use a mapping of the "
            "pruner's arguments, e.g. 'hydra.sweeper.pruner_settings={n_warmup_steps:2}'"
        )


def check_folders_belong(study: Any, sweep_dir: Path, storage_spec: str, study_name: str) -> None:
    """Every trial folder in the sweep folder is a trial of this study: a study started elsewhere (another
    storage or study name) would otherwise meet finished runs it never trained under its trial numbers."""
    known = {t.number for t in study.get_trials(deepcopy=False)}
    strangers = sorted(
        int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) not in known
    )
    if strangers:
        listed = ", ".join(map(str, strangers[:5])) + (", ..." if len(strangers) > 5 else "")
        raise ConfigError(
            f"{sweep_dir} holds trial folders ({listed}) that study '{study_name}' in {storage_spec} does not know: "
            "the sweep was started with another hydra.sweeper.storage or study_name; resume it with those, or "
            "start this study in a new folder (hydra.sweep.dir=<new folder>)"
        )


class Driver:
    """Ask, start, wait for any, tell: K trials always running until the study holds n_trials."""

    def __init__(
        self,
        settings: StudySettings,
        study: Any,
        slots: Any,
        storage_spec: str,
        space: dict[str, Any],
        fixed: dict[str, str],
    ) -> None:
        self.settings, self.study, self.slots, self.storage_spec = settings, study, slots, storage_spec
        self.space, self.fixed = space, fixed
        self.running: dict[int, Any] = {}
        self.continue_hint = ""  # the sweep folder to name when the command alone would start a new one

    # ------------------------------------------------------------------ starting trials
    def trial_env(self, job: Any) -> dict[str, str]:
        from cnnfleet.launch.env import TRIAL_ENV

        s = self.settings
        info = {
            "storage": self.storage_spec,
            "study": s.study_name,
            "trial_id": job.trial_id,
            "number": job.number,
            "pruner": s.pruner,
            "pruner_settings": dict(s.pruner_settings or {}),
        }
        return {TRIAL_ENV: json.dumps(info)}

    def launch(self, job: Any, why: str) -> None:
        job.handle = self.slots.start(job, self.trial_env(job))
        trial = self._trial(job)
        for key, value in (
            ("slot", job.handle),
            ("retries", job.retries),
            ("run_dir", str(job.run_dir)),
            ("overrides", list(job.overrides)),
        ):
            trial.set_user_attr(key, value)
        where = f"job {job.handle['job_id']}" if "job_id" in job.handle else f"pid {job.handle.get('pid')}"
        log.info("trial %d %s (%s): %s", job.number, why, where, " ".join(job.overrides[: len(self.space)]))
        self.running[job.number] = job

    def _trial(self, job: Any) -> Any:
        import optuna

        return optuna.trial.Trial(self.study, job.trial_id)

    def ask(self) -> None:
        from cnnfleet.sweeps.slots import TrialJob

        try:
            trial = self.study.ask(self.space)
        except ValueError as exc:  # Optuna refuses a parameter whose distribution changed
            raise ConfigError(
                f"the search space differs from the one study '{self.settings.study_name}' was started with ({exc}); "
                "resume with the same search space, or start a new study with hydra.sweeper.study_name=<new name>"
            ) from None
        overrides = tuple(f"{k}={v}" for k, v in {**trial.params, **self.fixed}.items())
        job = TrialJob(trial.number, trial._trial_id, overrides, Path(self.settings.sweep_dir) / str(trial.number))
        if (job.run_dir / STATE_FILE).exists() or (job.run_dir / SUMMARY_FILE).exists():
            check_folders_belong(self.study, Path(self.settings.sweep_dir), self.storage_spec, self.settings.study_name)
            raise ConfigError(
                f"{job.run_dir} already holds a run: trial {job.number} of study "
                f"'{self.settings.study_name}' never takes over another run's folder"
            )
        self.launch(job, "started")

    # ------------------------------------------------------------------ a driver started again
    def adopt(self) -> None:
        """Trials an earlier driver left RUNNING: wait for those that still run, continue or judge the others."""
        from optuna.trial import TrialState

        from cnnfleet.sweeps.slots import TrialJob

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            overrides = tuple(attrs.get("overrides") or (f"{k}={v}" for k, v in {**trial.params, **self.fixed}.items()))
            run_dir = Path(attrs.get("run_dir") or Path(self.settings.sweep_dir) / str(trial.number))
            job = TrialJob(
                trial.number,
                trial._trial_id,
                overrides,
                run_dir,
                int(attrs.get("retries", 0)),
                dict(attrs.get("slot") or {}),
            )
            if job.handle and self.slots.alive(job):
                self.running[job.number] = job
                log.info("trial %d still runs (%s): waiting for it again", job.number, _where(job.handle))
                continue
            self.settle(job, None, resumed_by_driver=True)

    # ------------------------------------------------------------------ trials that ended
    def settle(self, job: Any, exit_code: int | None, resumed_by_driver: bool = False) -> None:
        """Tell Optuna how the trial ended, or start it again in its own folder."""
        from optuna.trial import TrialState

        from cnnfleet.sweeps.outcome import COMPLETE, FAIL, PRUNED, RETRY, judge

        self.running.pop(job.number, None)
        outcome = judge(job.run_dir, exit_code, self.slots.tail(job))
        if outcome.kind == RETRY and resumed_by_driver:  # stopped with the sweep (or never started): go on
            self.launch(job, "continues in its folder")
            return
        if outcome.kind == RETRY and job.retries < self.settings.max_retries:
            job.retries += 1
            log.warning(
                "trial %d: %s; retry %d of %d in its folder",
                job.number,
                outcome.reason,
                job.retries,
                self.settings.max_retries,
            )
            self.launch(job, f"retried ({job.retries}/{self.settings.max_retries})")
            return
        if outcome.kind == COMPLETE:
            self.study.tell(self._trial(job), outcome.value)
            log.info("trial %d completed: %s", job.number, outcome.value)
            return
        if outcome.kind == PRUNED:
            self.study.tell(self._trial(job), state=TrialState.PRUNED)
            log.info("trial %d %s", job.number, outcome.reason)
            return
        reason = outcome.reason if outcome.kind == FAIL else f"{outcome.reason} (after {job.retries} retries)"
        self._trial(job).set_user_attr("fail_reason", reason)
        _record_failure(job, reason)
        self.study.tell(self._trial(job), state=TrialState.FAIL)
        log.warning("trial %d failed: %s", job.number, reason)

    def check_failure_rate(self) -> None:
        from optuna.trial import TrialState

        interrupted = set(self.study.user_attrs.get(INTERRUPTED, []))
        failed = [
            t for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in interrupted
        ]
        finished = finished_count(self.study)
        if finished and len(failed) / finished > self.settings.max_failure_rate:
            raise ConfigError(
                f"{len(failed)} of {finished} trials failed (max_failure_rate={self.settings.max_failure_rate}); "
                f"last reason: {failed[-1].user_attrs.get('fail_reason', '?')}"
            )

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        import time

        from cnnfleet.launch import signals

        self.adopt()
        try:
            while True:
                if signals.pending():
                    self.stop(signals.strongest(signals.pending()))
                while (
                    len(self.running) < self.settings.n_jobs
                    and finished_count(self.study) + len(self.running) < self.settings.n_trials
                ):
                    self.ask()
                if not self.running:
                    return
                ended = self.slots.ended(list(self.running.values()))
                for job, code in ended:
                    self.settle(job, code)
                if ended:
                    self.check_failure_rate()
                else:
                    time.sleep(self.slots.poll_seconds or self.settings.poll_seconds)
        except Exception:  # max_failure_rate, a refused sbatch: local trials stop with a checkpoint
            if self.running:
                log.warning("the sweep ends: %s", self.slots.stop(list(self.running.values())))
            raise

    def stop(self, request: int) -> None:
        from cnnfleet.launch import signals

        jobs = list(self.running.values())
        line = self.slots.stop(jobs) if jobs else "no trial was running"
        log.warning(
            "sweep stopped by %s: %s; continue the study with the same command%s",
            signals.NAMES[request],
            line,
            self.continue_hint,
        )
        raise SystemExit(signals.EXIT_CODES[request])


def _where(handle: dict) -> str:
    return f"SLURM job {handle['job_id']}" if "job_id" in handle else f"pid {handle.get('pid')} on {handle.get('host')}"


def _record_failure(job: Any, reason: str) -> None:
    """A trial that failed before its run wrote a summary (a refused value) still gets its row in the table."""
    import yaml

    from cnnfleet.run.summary import write_failure

    job.run_dir.mkdir(parents=True, exist_ok=True)
    overrides = job.run_dir / HYDRA_DIR / OVERRIDES
    if not overrides.is_file():
        overrides.parent.mkdir(exist_ok=True)
        overrides.write_text(yaml.safe_dump(list(job.overrides)))
    summary = job.run_dir / SUMMARY_FILE
    try:
        status = json.loads(summary.read_text()).get("status")
    except (OSError, ValueError):
        status = None
    if status != "failed":
        write_failure(job.run_dir, reason)


def run_study(settings: StudySettings, sampler_cfg: Any, config: Any, arguments: list[str]) -> Any:
    """Run the study until it holds n_trials finished trials; the best trial's results."""
    from optuna.trial import TrialState

    from cnnfleet.sweeps.slots import make_slots
    from cnnfleet.sweeps.storage import describe, resolve_spec

    space, fixed = search_space(arguments)
    if not space:
        raise ConfigError("the Optuna sweep has no search space: set hydra.sweeper.params or pass key=choice(...)")
    check_settings(settings)
    sweep_dir = Path(settings.sweep_dir).absolute()
    settings.sweep_dir = str(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage_spec = resolve_spec(settings.storage, sweep_dir)
    slots = make_slots(config, sweep_dir, settings.study_name, settings.n_jobs)
    if slots.kind == "slurm" and storage_spec.startswith("sqlite:"):
        log.warning(
            "sqlite's locking is unsafe on NFS/Lustre where SLURM jobs share files: prefer the default "
            "journal file (hydra.sweeper.storage=<sweep>/optuna.journal) or a database server"
        )
    study = open_study(settings, sampler_cfg, storage_spec)
    check_folders_belong(study, sweep_dir, storage_spec, settings.study_name)
    _record_sweep(settings, space, storage_spec)
    held = finished_count(study)
    log.info(
        "study '%s' (%s %s): %d finished trials, %d to run, %d at a time on %s; pruner %s; storage %s",
        settings.study_name,
        settings.direction,
        ", ".join(space),
        held,
        max(settings.n_trials - held, 0),
        settings.n_jobs,
        slots.describe(),
        settings.pruner,
        describe(storage_spec),
    )
    driver = Driver(settings, study, slots, storage_spec, space, fixed)
    if "hydra.sweep.dir" not in " ".join(config.hydra.overrides.hydra) and "/sweeps/" not in str(sweep_dir):
        driver.continue_hint = f" and hydra.sweep.dir={sweep_dir}"  # a timestamped folder: name it
    driver.run()
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.error("study '%s': no trial completed", settings.study_name)
        return None
    best = study.best_trial
    log.info("best trial %d: %s = %s with %s", best.number, settings.direction, best.value, best.params)
    results = {"name": "optuna", "best_trial": best.number, "best_params": best.params, "best_value": best.value}
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    return results
