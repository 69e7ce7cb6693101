"""Rows written straight to the run's loggers, as Lightning's own logging writes them.

Lightning's logger connector calls `logger.save()` after every `log_metrics`, so metrics.csv
holds each row as soon as it is logged (a killed run loses nothing before its last row). A
callback that logs directly must do the same: CSVLogger alone writes only every 100 steps.
"""

import lightning as L


def log_rows(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
    for logger in trainer.loggers:  # rank-zero-only inside each logger
        logger.log_metrics(metrics, step=step)
        logger.save()
