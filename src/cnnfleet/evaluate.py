"""cnnfleet-eval: re-evaluate a checkpoint on a data split and print its metrics."""

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-eval"


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="eval")
def hydra_app(cfg: DictConfig) -> dict:
    from cnnfleet.tasks.evaluate import evaluate

    return run_task(evaluate, cfg, PROG)


def main() -> None:
    # the checkpoint belongs to a training run; the evaluation gets its own folder under logs/eval
    launch(hydra_app, config_name="eval", prog=PROG, check="cnnfleet.tasks.check:evaluate")


if __name__ == "__main__":
    main()
