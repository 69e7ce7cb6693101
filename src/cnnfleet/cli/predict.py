"""cnnfleet-predict: classify image files with a trained checkpoint."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, launch, run_task
from cnnfleet.config.search_path import conf_dir

COMMAND = Command(
    prog="cnnfleet-predict",
    config_name="predict",
    job_name="predict",
    task="cnnfleet.tasks.predict:predict",
    check="cnnfleet.tasks.check:predict",
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="predict")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: a sweep's trials and what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def main() -> None:
    launch(COMMAND, hydra_app)


if __name__ == "__main__":
    main()
