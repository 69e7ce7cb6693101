"""The W&B logger: online when an API key is configured, otherwise offline, never a prompt.

The run's files live in the run folder (`<run>/wandb/`); the run id is kept in
`<run>/wandb_run_id.txt`, so a resumed run (ckpt_path=last, a requeued SLURM job) continues the
same W&B run. Lightning creates the W&B run on global rank 0 only.
"""

import contextlib
import logging
import netrc
import os
import threading
import uuid
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from cnnfleet.errors import ConfigError
from cnnfleet.launch.env import global_rank

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"


def has_api_key(env: dict[str, str] | None = None) -> bool:
    """WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc."""
    env = dict(os.environ) if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(env: dict[str, str] | None = None) -> str:
    """WANDB_MODE when the user set it, else online with a key and offline without."""
    env = dict(os.environ) if env is None else env
    return env.get("WANDB_MODE") or ("online" if has_api_key(env) else "offline")


def run_id(save_dir: str) -> str:
    """The run folder's W&B id: read on resume, else a new one (written when the run starts)."""
    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    return uuid.uuid4().hex[:12]


def keep_run_id(save_dir: str, value: str) -> None:
    """Rank 0, as the W&B run starts: the id a resumed attempt will read (building writes nothing)."""
    path = Path(save_dir) / RUN_ID_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")


def sweep_group() -> str | None:
    """In a Hydra multirun: the sweep folder's name, so every trial lands in one W&B group."""
    from cnnfleet.launch.env import current_sweep_dir

    sweep_dir = current_sweep_dir()  # also set for a DDP trial's own process tree
    return f"sweep-{Path(sweep_dir).name}" if sweep_dir else None


class EarlyStartWandbLogger(WandbLogger):
    """Starts the W&B run in a background thread (rank 0, once every check has passed and the
    trainer is built): wandb.init waits ~1-2 s for W&B's service process, and Lightning's set-up
    (strategy, data) runs meanwhile. Any use of the run from another thread first waits for that
    start (and re-raises its error)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, and wandb 0.31 warns on stderr that the setting has
        # no effect: one line too many under every error message
        self._wandb_init.pop("anonymous", None)

    def start_in_background(self) -> None:
        keep_run_id(self.save_dir, self._id)

        def start() -> None:
            try:
                WandbLogger.experiment.fget(self)
            except BaseException as exc:  # re-raised where the run is first used
                self._start_error = exc

        self._start_error: BaseException | None = None
        self._starter = threading.Thread(target=start, name="wandb-start", daemon=True)
        self._starter.start()

    def wait_for_start(self) -> None:
        starter = getattr(self, "_starter", None)
        if starter is None or threading.current_thread() is starter:
            return
        starter.join()
        self._starter = None
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            raise error

    @property
    def experiment(self):  # noqa: ANN201 (Lightning's type)
        self.wait_for_start()
        return super().experiment

    def __getstate__(self) -> dict:
        self.wait_for_start()
        state = super().__getstate__()
        state.pop("_starter", None)
        return state


def build_wandb_logger(
    save_dir: str,
    project: str,
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    log_model: bool = False,
) -> WandbLogger:
    import wandb  # only when W&B is configured: `import wandb` costs ~1 s

    mode = wandb_mode()
    offline = mode != "online"
    if not offline and not has_api_key():
        raise ConfigError(
            "W&B is set online (WANDB_MODE=online) but no API key is configured: set WANDB_API_KEY or run "
            "`wandb login`, or use WANDB_MODE=offline (then `wandb sync` later) or logger=csv"
        )
    group = group if group is not None else sweep_group()
    if offline and log_model:
        log.info("W&B is offline: logger.wandb.log_model=true is ignored (checkpoints stay in the run folder)")
    logger = EarlyStartWandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=list(tags or []),
        id=run_id(save_dir),
        resume="allow",
        offline=offline,
        log_model=log_model and not offline,
        settings=wandb.Settings(silent=True),  # our log says what matters; errors stay one line
    )
    if offline and global_rank() == 0:
        log.info("W&B offline (no API key found); upload later with: wandb sync %s/wandb/offline-run-*", save_dir)
    return logger


def start_wandb_runs(loggers: list) -> None:
    """Rank 0: start the W&B run now, in the background (after the last check of the input)."""
    if global_rank() == 0:
        for logger in loggers:
            if isinstance(logger, EarlyStartWandbLogger):
                logger.start_in_background()


def finish_wandb_runs(loggers: list, failed: bool) -> None:
    """Close this process's W&B run. Lightning leaves it open, so the next trial of a local
    multirun would otherwise log into the same W&B run."""
    if not any(isinstance(logger, WandbLogger) for logger in loggers):
        return
    for logger in loggers:
        if isinstance(logger, EarlyStartWandbLogger):
            # a run that failed early still has its W&B start to close; the start's own error was
            # reported where the run was used, or is moot
            with contextlib.suppress(Exception):
                logger.wait_for_start()
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
