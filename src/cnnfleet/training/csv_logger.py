"""CSVLogger that appends to an existing metrics.csv instead of deleting it, and never truncates it.

Lightning's writer removes metrics.csv when its folder is not empty; a resumed run writes into
its own run folder, so that would erase the history of the first attempt. When a new metric key
appears, Lightning rewrites the file in place (truncate, then write): a kill in between would
lose every row, and a reader sees an empty file. Here the rewrite goes to a temporary file that
replaces metrics.csv atomically.
"""

import csv
import os

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cnnfleet.run.files import atomic_path


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # keep the file; continue with its columns so appended rows line up
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(header)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """metrics.csv directly in `save_dir` (no name/version sub-folders)."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
