"""cnnfleet-bench: how fast cnnfleet trains, against a hand-written loop, across devices, and with DDP."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, launch, run_task
from cnnfleet.config.search_path import conf_dir

COMMAND = Command(
    prog="cnnfleet-bench",
    config_name="bench",
    job_name="bench",
    task="cnnfleet.tasks.bench:bench",
    check="cnnfleet.tasks.check:bench",
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="bench")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: a sweep's trials and what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def main() -> None:
    launch(COMMAND, hydra_app)


if __name__ == "__main__":
    main()
