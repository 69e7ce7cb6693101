"""Console and run-log hygiene: one line per message, no third-party noise.

conf/hydra/job_logging/cnnfleet.yaml references DropTips; tasks call `route_lightning_logs`
after importing Lightning (which attaches its own console handlers at import time).
"""

import logging
import warnings

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class DropTips(logging.Filter):
    """Drop Lightning's product tips ("💡 Tip: ..."): noise in every run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def route_lightning_logs() -> None:
    """Send Lightning's records to the root handlers (console + run log) only, once each."""
    if not logging.getLogger().handlers:
        return  # no logging set up (library use): keep Lightning's own console output
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    # torch 2.14 deprecated a pytree API that Lightning 2.6 still calls once per fit
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # printed on any machine with SLURM's client tools; cnnfleet checks srun use itself (device.py)
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # a continued run writes into its own checkpoints/ folder on purpose (run/plan.py decided it may)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # a run started from another run's checkpoint (plan "extends"): its best.ckpt is its own, as intended
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # data=shards: its length is exact with any number of workers (each produces its own batches: shards/plan.py)
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
