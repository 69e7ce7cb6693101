"""The MLflow logger: a local file store in the logs root; no server, no network.

`logger=mlflow` logs every run into one store, `<paths.log_dir>/mlruns` (tracking_uri `file:...`),
experiment `cnnfleet`: one MLflow run per run folder, named after it and tagged with its path
(`cnnfleet.run_dir`). View it where the full `mlflow` package is installed:
`mlflow ui --backend-store-uri logs/mlruns` (cnnfleet depends on mlflow-skinny, which has no UI).

Why a file store: every MLflow run is a folder of its own, so the concurrent trials of a sweep and
the jobs of several nodes write one store on a shared file system; sqlite's locking is not safe on
NFS/Lustre (the reason the Optuna study is a journal file). MLflow >= 3.8 refuses file stores unless
MLFLOW_ALLOW_FILE_STORE=true ("maintenance mode"), so the builder sets it for a `file:` URI only;
any other URI MLflow accepts (`sqlite:///...`, `http://server:5000`) is passed through.

The MLflow run id is kept in `<run>/mlflow_run_id.txt`, so a resumed run (ckpt_path=last, a
requeued SLURM job) continues the same MLflow run. MLflow parameters cannot change once logged: a
key logged again (the module's hparams after the run config, or a resumed attempt that changed
trainer.max_epochs) keeps its first value; state.json records what each attempt changed.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cnnfleet.launch.env import global_rank
from cnnfleet.run.files import write_text_atomic

RUN_ID_FILE = "mlflow_run_id.txt"
RUN_DIR_TAG = "cnnfleet.run_dir"


class RunFolderMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that keeps its run id in the run folder and never re-logs a parameter."""

    def __init__(self, run_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self._reopen = kwargs.get("run_id") is not None  # a resumed attempt: the run ended FINISHED or FAILED
        self._id_kept = False  # experiment is read at every log call: write the id file once, not stat it each time

    @property
    def experiment(self):  # noqa: ANN201 (MlflowClient, imported lazily by Lightning)
        client = super().experiment
        if self._reopen and global_rank() == 0:
            client.update_run(self._run_id, status="RUNNING")
            self._reopen = False
        if self._run_id is not None and not self._id_kept and global_rank() == 0:
            path = Path(self.run_dir) / RUN_ID_FILE
            if not path.is_file():
                write_text_atomic(path, self._run_id + "\n")
            self._id_kept = True
        return client

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Any) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        flat = _flatten_dict(_convert_params(params))
        logged = self.experiment.get_run(self.run_id).data.params
        fresh = {key: value for key, value in flat.items() if key not in logged}
        if fresh:
            super().log_hyperparams(fresh)


def _kept_run_id(run_dir: str) -> str | None:
    path = Path(run_dir) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def build_mlflow_logger(
    run_dir: str,
    tracking_uri: str,
    experiment_name: str = "cnnfleet",
    run_name: str | None = None,
    tags: list[str] | None = None,
    log_model: bool = False,
) -> MLFlowLogger:
    """`run_name` null = the run folder's name; `tags` become MLflow tags `tag.<name>` (MLflow tags are key/value)."""
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        Path(tracking_uri.removeprefix("file:").removeprefix("//")).mkdir(parents=True, exist_ok=True)
    run_tags = {RUN_DIR_TAG: str(run_dir), **{f"tag.{tag}": "true" for tag in tags or []}}
    return RunFolderMLFlowLogger(
        run_dir=run_dir,
        experiment_name=experiment_name,
        run_name=run_name or Path(run_dir).name,
        tracking_uri=tracking_uri,
        tags=run_tags,
        log_model=log_model,
        run_id=_kept_run_id(run_dir),
    )
