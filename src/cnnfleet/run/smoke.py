"""Smoke runs (debug=fast_dev_run, debug=overfit) check that everything runs; their weights and
numbers are no result. One test of "is this a smoke run", without torch: the launch plan, the
trainer builder, the stop path and cnnfleet-runs all ask it."""

from typing import Any

SMOKE_KEYS = ("fast_dev_run", "overfit_batches")  # trainer keys that make a run a smoke run


def smoke_run(trainer: Any) -> str | None:
    """What makes this a smoke run ("trainer.fast_dev_run=True"), or None for a real one. `trainer`: the
    trainer group of a config, its plain dict (a saved config.yaml), or a lightning.Trainer."""
    for key in SMOKE_KEYS:
        value = trainer.get(key) if hasattr(trainer, "get") else getattr(trainer, key, None)
        if value:
            return f"trainer.{key}={value}"
    return None
