"""cnnfleet-bench: how fast cnnfleet trains, against a hand-written loop, across devices, and with DDP."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-bench"


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="bench")
def hydra_app(cfg: DictConfig) -> dict:
    from cnnfleet.tasks.bench import bench

    return run_task(bench, cfg, PROG)


def main() -> None:
    launch(hydra_app, config_name="bench", prog=PROG, check="cnnfleet.tasks.check:bench")


if __name__ == "__main__":
    main()
