"""cnnfleet-export: a trained network as safetensors weights and a torch.export program."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, launch, run_task
from cnnfleet.config.search_path import conf_dir

COMMAND = Command(
    prog="cnnfleet-export",
    config_name="export",
    job_name="export",
    task="cnnfleet.tasks.export:export",
    check="cnnfleet.tasks.check:export",
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="export")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: a sweep's trials and what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def main() -> None:
    launch(COMMAND, hydra_app)


if __name__ == "__main__":
    main()
