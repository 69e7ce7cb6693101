"""Confusion matrix of the test split: confusion_matrix.csv + .png in the run folder, and an
image in the loggers that take one (W&B). Reduced across ranks by torchmetrics."""

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnfleet.run.plots import plot_confusion


class ConfusionMatrixCallback(L.Callback):
    def __init__(self, num_classes: int, output_dir: str, class_names: list[str] | None = None) -> None:
        self.matrix = MulticlassConfusionMatrix(num_classes)
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.class_names = class_names  # None: the data module's names (known after its setup)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.matrix.update(outputs["preds"], outputs["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        counts = self.matrix.compute().cpu().numpy().astype(np.int64)  # collective: every rank computes
        if not trainer.is_global_zero:
            return
        names = self.class_names or list(getattr(trainer.datamodule, "class_names", None) or [])
        names = names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]
        np.savetxt(self.output_dir / "confusion_matrix.csv", counts, fmt="%d", delimiter=",", header=",".join(names))
        png = plot_confusion(counts, names, self.output_dir / "confusion_matrix.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="test/confusion_matrix", images=[str(png)])
