"""Send the run's whole (redacted) config to the loggers once the ranks are set up.

Not before: the W&B run is created by the first call, and before the process group exists a
rank > 0 still believes it is rank 0 (Lightning's rank_zero_only does not read NODE_RANK), and a
run that fails to start (a rank that cannot reach the others) would leave a W&B run behind.
"""

from typing import Any

import lightning as L


class LogRunConfig(L.Callback):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._logged = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self._logged:
            for logger in trainer.loggers:  # each logger writes on global rank 0 only
                logger.log_hyperparams(self.config)
            self._logged = True
