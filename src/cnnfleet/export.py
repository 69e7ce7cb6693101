"""cnnfleet-export: a trained network as safetensors weights and a torch.export program."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-export"


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="export")
def hydra_app(cfg: DictConfig) -> dict:
    from cnnfleet.tasks.export import export

    return run_task(export, cfg, PROG)


def main() -> None:
    launch(hydra_app, config_name="export", prog=PROG, check="cnnfleet.tasks.check:export")


if __name__ == "__main__":
    main()
