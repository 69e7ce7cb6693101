"""cnnfleet-eval: re-evaluate a checkpoint on a data split and print its metrics."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, launch, run_task
from cnnfleet.config.search_path import conf_dir

COMMAND = Command(
    prog="cnnfleet-eval",
    config_name="eval",
    job_name="evaluate",
    task="cnnfleet.tasks.evaluate:evaluate",
    check="cnnfleet.tasks.check:evaluate",
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="eval")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: a sweep's trials and what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def main() -> None:
    launch(COMMAND, hydra_app)


if __name__ == "__main__":
    main()
