"""cnnfleet-submit: render an sbatch script from the training config and submit it.

Takes every cnnfleet-train override plus `dry_run=true` (print the script, submit nothing).
Before sbatch it builds the job on this host (`--check` without the devices: data, one batch,
model, optimizer, loggers), so a typo never waits in a queue; `--no-check` skips that,
`--check` alone checks and submits nothing.
"""

import dataclasses
import sys

import hydra
from omegaconf import DictConfig

from cnnfleet.cli.app import Command, fail, launch, run_task
from cnnfleet.config.search_path import conf_dir

PROG = "cnnfleet-submit"
COMMAND = Command(
    prog=PROG,
    config_name="train",
    job_name="submit",
    task="cnnfleet.tasks.submit:submit",
    check="cnnfleet.tasks.check:submit",
    new_folder=False,
    check_first=True,
)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def hydra_app(cfg: DictConfig) -> object:
    """Hydra's app: what Hydra prints (--cfg, --help, --info)."""
    return run_task(COMMAND, cfg)


def _pop(argv: list[str], key: str) -> tuple[list[str], list[str]]:
    """The values of `key=...` in argv (cnnfleet-submit's own keys, not the job's) and argv without them."""
    prefix = f"{key}="
    return [a[len(prefix) :] for a in argv if a.startswith(prefix)], [a for a in argv if not a.startswith(prefix)]


def _pop_dry_run(argv: list[str]) -> tuple[bool, list[str]]:
    values, rest = _pop(argv, "dry_run")
    values = [v.lower() for v in values]
    if any(v not in ("true", "false") for v in values):
        fail(PROG, f"dry_run must be true or false, got {values[-1]!r}")
    return (values[-1] == "true" if values else False), rest


def main(argv: list[str] | None = None) -> None:
    """`dry_run=true`: print the script, submit nothing; `hydra.run.dir=<run folder>`: the run the job
    continues (the submission's own folder is logs/<task>/submissions/<time>/: job.sbatch, submit.log)."""
    dry_run, rest = _pop_dry_run(sys.argv[1:] if argv is None else argv)
    run_dirs, rest = _pop(rest, "hydra.run.dir")
    if "-m" in rest or "--multirun" in rest:
        fail(PROG, "cnnfleet-submit submits one job; for a sweep on SLURM use cnnfleet-train -m launcher=slurm")
    check_first = "--no-check" not in rest  # build the job here before it waits in a queue
    rest = [a for a in rest if a != "--no-check"]
    folder = "${paths.log_dir}/${task_name}/submissions/${now:%Y-%m-%d_%H-%M-%S_%f}"
    options = {"dry_run": dry_run, "given_run_dir": run_dirs[-1] if run_dirs else None}
    command = dataclasses.replace(COMMAND, check_first=check_first, options=options)
    launch(command, hydra_app, [*rest, f"hydra.run.dir={folder}"])


if __name__ == "__main__":
    main()
