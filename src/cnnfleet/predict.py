"""cnnfleet-predict: classify image files with a trained checkpoint."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-predict"


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="predict")
def hydra_app(cfg: DictConfig) -> list:
    from cnnfleet.tasks.predict import predict

    return run_task(predict, cfg, PROG)


def main() -> None:
    launch(hydra_app, config_name="predict", prog=PROG, check="cnnfleet.tasks.check:predict")


if __name__ == "__main__":
    main()
