"""cnnfleet-train: validate the command line, then train (torch is imported only after)."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-train"


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def hydra_app(cfg: DictConfig) -> float | None:
    from cnnfleet.tasks.train import train

    return run_task(train, cfg, PROG)


def main() -> None:
    launch(hydra_app, config_name="train", prog=PROG, plans_run=True, check="cnnfleet.tasks.check:train")


if __name__ == "__main__":
    main()
