"""cnnfleet-train: validate the command line, then train (torch is imported only after)."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, launch, run_task
from cnnfleet.config.search_path import conf_dir

COMMAND = Command(
    prog="cnnfleet-train",
    config_name="train",
    job_name="train",
    task="cnnfleet.tasks.train:train",
    check="cnnfleet.tasks.check:train",
    plans_run=True,
    new_folder=False,
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: a sweep's trials and what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def main() -> None:
    launch(COMMAND, hydra_app)


if __name__ == "__main__":
    main()
