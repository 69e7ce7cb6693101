"""The one place that owns the command-line failure policy.

Before Hydra starts (and before torch is imported), `launch` composes the config once with
Hydra's compose API: any typo, wrong type or unknown option becomes ONE line and exit code 2,
instead of Hydra's multi-line report and exit 1. It also turns `ckpt_path=last` into a real
path and points `hydra.run.dir` at the run folder that owns the checkpoint, so a resumed run
continues in its own folder. Inside the job, `run_task` maps our own errors to one line too.
"""

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnfleet.conf_dir import conf_dir
from cnnfleet.config_errors import COMPOSE_ERRORS, explain
from cnnfleet.errors import CnnfleetError
from cnnfleet.overrides import override_value
from cnnfleet.run.launched import launched_rank_overrides
from cnnfleet.run.resume import resolve_resume
from cnnfleet.schema import register_configs

EXIT_USAGE = 2


def fail(prog: str, message: str) -> NoReturn:
    """Print one line on stderr and exit with the usage-error code."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose like Hydra's app would (hydra node included); raise Hydra/OmegaConf errors."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} resolve (runtime.cwd is set)
    return cfg


def _resume_overrides(cfg: DictConfig, overrides: list[str], in_place: bool = True) -> list[str]:
    """Rewrite ckpt_path to an absolute file and run in the folder that owns it."""
    if "ckpt_path" not in cfg or cfg.ckpt_path is None:
        return overrides
    run_dir = override_value(overrides, "hydra.run.dir")
    ckpt, owner = resolve_resume(
        str(cfg.ckpt_path), log_dir=cfg.paths.log_dir, task_name=cfg.task_name, run_dir=run_dir
    )
    extra = [f"ckpt_path={_quote(ckpt)}"]
    if in_place and owner is not None and run_dir is None:
        extra.append(f"hydra.run.dir={_quote(owner)}")
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "ckpt_path"]
    return kept + extra


def _quote(path: str) -> str:
    """Quote a path for Hydra's override grammar when it holds special characters."""
    return path if all(c.isalnum() or c in "/._-" for c in path) else "'" + path.replace("'", "\\'") + "'"


def launch(hydra_app: Callable[[], Any], config_name: str, prog: str, resume_in_place: bool = True) -> None:
    """Validate the command line, then hand it to the Hydra app (which parses sys.argv)."""
    register_configs()
    # torch's C++ layer prints its own warnings with 50-frame stack traces straight to stderr
    # (e.g. every TCPStore connect retry); our errors say what failed. Users can still set it.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    argv = sys.argv[1:]
    args = get_args_parser().parse_args(argv)  # argparse exits 2 on a malformed flag
    skip = args.help or args.hydra_help or args.shell_completion or args.multirun or args.info
    if not skip:
        name = args.config_name or config_name
        try:
            cfg = compose_config(name, list(args.overrides))
            new_overrides = list(args.overrides) + launched_rank_overrides(cfg, list(args.overrides), os.environ)
            new_overrides = _resume_overrides(cfg, new_overrides, in_place=resume_in_place)
        except COMPOSE_ERRORS as exc:
            fail(prog, explain(exc, conf_dir()))
        finally:
            GlobalHydra.instance().clear()
        if new_overrides != list(args.overrides):
            flags = list(argv)
            for item in args.overrides:
                flags.remove(item)
            sys.argv = [sys.argv[0], *flags, *new_overrides]
    hydra_app()


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig, prog: str) -> Any:
    """Run a task inside the Hydra job; our input errors become one line and exit 2."""
    try:
        return task(cfg)
    except CnnfleetError as exc:
        fail(prog, str(exc))
