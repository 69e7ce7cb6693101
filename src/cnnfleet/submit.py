"""cnnfleet-submit: render an sbatch script from the training config and submit it.

Takes every cnnfleet-train override plus `dry_run=true` (print the script, submit nothing).
Before sbatch it builds the job on this host (`--check` without the devices: data, one batch,
model, optimizer, loggers), so a typo never waits in a queue; `--no-check` skips that,
`--check` alone checks and submits nothing.
"""

import sys

import hydra
from omegaconf import DictConfig

from cnnfleet.cli import fail, launch, run_task
from cnnfleet.conf_dir import conf_dir

PROG = "cnnfleet-submit"
_dry_run = False  # parsed from the command line before Hydra sees it (not a training key)
_run_dir: str | None = None  # the user's hydra.run.dir: the run folder the job continues (ours is the submission's)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def hydra_app(cfg: DictConfig) -> str | None:
    from cnnfleet.tasks.submit import submit

    return run_task(lambda c: submit(c, dry_run=_dry_run, given_run_dir=_run_dir), cfg, PROG)


def dry_run_requested() -> bool:
    """`dry_run=true` was given: the script is printed for reading, the partition is not asked."""
    return _dry_run


def continued_run_dir() -> str | None:
    """`hydra.run.dir=<run folder>` given to cnnfleet-submit: the job continues (or starts) that run."""
    return _run_dir


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


def main() -> None:
    global _dry_run, _run_dir
    _dry_run, rest = _pop_dry_run(sys.argv[1:])
    run_dirs, rest = _pop(rest, "hydra.run.dir")  # the run the job continues; ours is the submission's
    _run_dir = run_dirs[-1] if run_dirs else None
    check_first = "--no-check" not in rest  # build the job here before it waits in a queue
    rest = [a for a in rest if a != "--no-check"]
    # cnnfleet-submit's own folder: logs/<task>/submissions/<time>/ (job.sbatch, submit.log)
    folder = "${paths.log_dir}/${task_name}/submissions/${now:%Y-%m-%d_%H-%M-%S_%f}"
    sys.argv = [sys.argv[0], *rest, f"hydra.run.dir={folder}", "hydra.job.name=submit"]
    launch(hydra_app, config_name="train", prog=PROG, check="cnnfleet.tasks.check:submit", check_first=check_first)


if __name__ == "__main__":
    main()
