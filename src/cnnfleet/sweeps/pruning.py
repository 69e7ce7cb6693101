"""Pruning: a trial reports the optimized metric at every validation; Optuna's pruner may stop it.

The trial is a run of its own (a local process tree or a SLURM job), so it reaches its study
through the shared storage (sweeps/storage.py): the sweep driver passes the storage, the study
and the trial's id in CNNFLEET_TRIAL (launch/env.py). Rank 0 alone reports and asks the pruner;
its answer is broadcast so every rank stops at the same validation (DDP ranks must agree, as in
Optuna's PyTorchLightningPruningCallback). The step is the epoch: trials that search the batch
size take different numbers of optimizer steps per epoch, so steps would not compare.
"""

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any

import lightning as L

from cnnfleet.errors import ConfigError

log = logging.getLogger(__name__)
PRUNERS = {
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "none": "NopPruner",
}


def build_pruner(name: str | None, settings: dict | None) -> Any:
    """Optuna's pruner for `hydra.sweeper.pruner` with `hydra.sweeper.pruner_settings`; ConfigError on a
    name or setting Optuna's pruner does not take."""
    import optuna

    key = "none" if name in (None, "null") else str(name)
    if key not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner={name}: use one of {', '.join(PRUNERS)}")
    cls = getattr(optuna.pruners, PRUNERS[key])
    settings = dict(settings or {})
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no settings"
        raise ConfigError(f"hydra.sweeper.pruner_settings.{unknown[0]}: {PRUNERS[key]} takes {takes}")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hydra.sweeper.pruner_settings for {key}: {exc}") from None


@dataclass(frozen=True)
class Pruned:
    epoch: int
    value: float
    metric: str
    pruner: str

    @property
    def reason(self) -> str:
        return f"pruned at epoch {self.epoch} by {self.pruner} ({self.metric} {self.value:.4g})"


class ReportToStudy(L.Callback):
    """Report `metric` to the trial at the end of every validation; stop training when pruned."""

    def __init__(self, trial_info: dict, metric: str) -> None:
        self.info, self.metric = trial_info, metric
        self.pruned: Pruned | None = None
        self._trial: Any = None
        self._pruner_name = PRUNERS.get(str(trial_info.get("pruner")), "NopPruner")
        self._warned = False

    def _open_trial(self) -> Any:
        import optuna

        from cnnfleet.sweeps.storage import optuna_storage

        if self._trial is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(
                study_name=self.info["study"],
                storage=optuna_storage(self.info["storage"]),
                pruner=build_pruner(self.info.get("pruner"), self.info.get("pruner_settings")),
            )
            self._trial = optuna.trial.Trial(study, int(self.info["trial_id"]))
        return self._trial

    def _report(self, epoch: int, value: float) -> bool:
        trial = self._open_trial()
        if epoch not in trial.storage.get_trial(trial._trial_id).intermediate_values:  # a resumed trial
            trial.report(value, epoch)
        return trial.should_prune()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch, prune, value = trainer.current_epoch, False, math.nan
        if trainer.is_global_zero:
            raw = trainer.callback_metrics.get(self.metric)
            value = float(raw) if raw is not None else math.nan
            if math.isfinite(value):
                prune = self._report(epoch, value)
            elif not self._warned:
                self._warned = True
                log.warning(
                    "trial %s: %s is not a finite validation metric here; it is not pruned",
                    self.info.get("number"),
                    self.metric,
                )
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned = Pruned(epoch, value, self.metric, self._pruner_name)
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info("trial %s: %s", self.info.get("number"), self.pruned.reason)
