"""What every command shares: its start-up, one composition of its config, and the failure policy.

`launch` reads the command line (flags.py), composes the config ONCE with Hydra's compose API and
checks it before torch is imported: a typo, a wrong type or an unknown option is ONE line and exit
code 2, not Hydra's multi-line report. For cnnfleet-train it then decides the RunPlan (run/plan.py:
the run folder, its lock, the checkpoint to resume from), sets its values on the composed config,
and runs the task in the run folder as Hydra's app would (job.py). Hydra's own app handles what
prints (--cfg, --help, --info) and sweeps (-m), which compose one config per trial. Inside a job,
`call_task` maps our own errors to one line and a bug to one line and a traceback file.
"""

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cnnfleet.cli.flags import CHECK_FLAG, CommandLine, FlagError, parse
from cnnfleet.config.compose import (
    apply_overrides,
    check_config,
    check_new_folder,
    check_sweep,
    compose_config,
)
from cnnfleet.config.domains import check_config as check_domains
from cnnfleet.config.errors import COMPOSE_ERRORS, explain
from cnnfleet.config.overrides import quote_value
from cnnfleet.config.schema import register_configs
from cnnfleet.config.search_path import conf_dir, config_roots, current_roots, use_search_path
from cnnfleet.data.class_folders import complete_from_data
from cnnfleet.errors import CnnfleetError, user_message
from cnnfleet.launch import signals
from cnnfleet.launch.env import slurm_task_id
from cnnfleet.launch.orphans import die_with_parent
from cnnfleet.run.layout import TRACEBACK_FILE
from cnnfleet.run.resume import checkpoint_file

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """A console script: its config, its task and its check ("module:function"), and what it writes.

    `plans_run` (cnnfleet-train): decide the run folder first; rank 0 holds its lock from there on.
    `new_folder` (eval, predict, export, bench): results go into a new folder of their own.
    `check_first` (cnnfleet-submit): `--check` also runs before the task, not only instead of it.
    `options`: the task's and the check's keyword arguments that are not config keys."""

    prog: str
    config_name: str
    job_name: str
    task: str | Callable[..., Any]
    check: str
    plans_run: bool = False
    new_folder: bool = True
    check_first: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


def fail(prog: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on stderr and exit (by default with the usage-error code)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _load(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _run_overrides(cfg: DictConfig, overrides: list[str], plans_run: bool) -> tuple[list[str], dict]:
    """Training: plan the run (folder, lock, checkpoint); the argv every rank parses, and the plan for
    the task. Other commands: an explicit ckpt_path becomes an absolute file (one line when it is not)."""
    if plans_run:
        from cnnfleet.run.plan import argv_overrides, plan_launch
        from cnnfleet.run.record import plain_config

        plan = plan_launch(cfg, overrides, os.environ, plain_config(cfg))
        return argv_overrides(plan, cfg, overrides), {"plan": plan}
    if "ckpt_path" not in cfg or OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path in (None, "last"):
        return overrides, {}
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "ckpt_path"]
    return [*kept, f"ckpt_path={quote_value(str(checkpoint_file(str(cfg.ckpt_path))))}"], {}


def _start_process() -> None:
    """Before anything slow: a rank started by Lightning does not outlive rank 0, and no signal
    kills us unasked."""
    register_configs()
    die_with_parent()
    signals.install(requeue=slurm_task_id() is not None)
    # torch's C++ layer prints its own warnings with 50-frame stack traces straight to stderr
    # (e.g. every TCPStore connect retry); our errors say what failed. Users can still set it.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")


def read_command_line(prog: str, argv: list[str]) -> CommandLine:
    """The flags and overrides; a malformed flag is one line (not argparse's usage block), exit 2."""
    try:
        return parse(argv)
    except FlagError as exc:
        fail(prog, f"{exc} (overrides are key=value; flags: --help, --cfg job, --check, -m)")


def launch(command: Command, hydra_app: Callable[[], Any], argv: list[str] | None = None) -> None:
    """Run `command` with the command line `argv` (default: sys.argv[1:]).

    `hydra_app` (the command's @hydra.main function) runs what Hydra prints and sweeps."""
    _start_process()
    prog = command.prog
    argv = list(sys.argv[1:] if argv is None else argv)
    line = read_command_line(prog, argv)
    try:
        use_search_path(config_roots(line.config_dir, line.overrides, primary=line.config_path))
    except COMPOSE_ERRORS as exc:  # a malformed hydra.searchpath
        fail(prog, explain(exc, conf_dir()))
    if line.check and line.multirun:
        fail(prog, f"{CHECK_FLAG} checks one run: leave out -m (or check one combination of the sweep)")
    if line.multirun or line.shows:
        _hydra_app(command, hydra_app, line, argv)
        return
    try:
        cfg = compose_config(
            command.config_name if line.config_name is None else line.config_name,
            line.overrides,
            line.config_dir,
            command.job_name,
            line.config_path,
        )
        check_config(cfg)
        # values the data define (an image folder's class count): every rank and the record see them
        overrides = [*line.overrides, *complete_from_data(cfg)]
        if command.new_folder:
            check_new_folder(cfg, prog)
        if line.check or command.check_first:
            run_check(command, cfg, overrides, exit_after=line.check)
        final, decided = _run_overrides(cfg, overrides, command.plans_run)
        apply_overrides(cfg, final, line.overrides)
    except COMPOSE_ERRORS as exc:
        fail(prog, explain(exc, current_roots()))
    finally:
        GlobalHydra.instance().clear()
    if command.plans_run and final != line.overrides:  # Lightning starts ranks > 0 with this command line
        flags = list(argv)
        for item in line.overrides:
            flags.remove(item)
        sys.argv = [sys.argv[0], *flags, *final]
    from cnnfleet.cli.job import run_one

    run_one(lambda job_cfg: call_task(command, job_cfg, **decided), cfg, cfg.hydra.job.config_name)


def _hydra_app(command: Command, hydra_app: Callable[[], Any], line: CommandLine, argv: list[str]) -> None:
    """Hydra's app, for what it prints and for sweeps; a sweep's values are checked first, and its
    results table written when it ends (also after Ctrl-C)."""
    prog = command.prog
    name = command.config_name if line.config_name is None else line.config_name
    try:
        if line.multirun and not line.shows:
            check_sweep(name, line.overrides, line.config_dir, line.config_path)
        elif line.prints_config:  # the printed config is a checked one
            check_config(compose_config(name, line.overrides, line.config_dir, command.job_name, line.config_path))
    except COMPOSE_ERRORS as exc:
        fail(prog, explain(exc, current_roots()))
    except CnnfleetError as exc:
        fail(prog, user_message(exc), exc.exit_code)
    finally:
        GlobalHydra.instance().clear()
    if line.config_path:  # Hydra reads --config-path beside the Python file; we read it from the cwd
        at = argv.index(next(a for a in argv if a in ("--config-path", "-cp") or a.startswith("--config-path=")))
        argv = (
            argv[:at]
            + [f"--config-path={Path(line.config_path).absolute()}"]
            + argv[at + (1 if "=" in argv[at] else 2) :]
        )
    sys.argv = [sys.argv[0], *argv]
    if not line.multirun:
        hydra_app()
        return
    finished, refused = False, False
    try:
        hydra_app()
        finished = True
    except SystemExit as exc:
        refused = exc.code == EXIT_USAGE  # the sweep's settings were refused: its one line is the whole answer
        raise
    finally:  # also after Ctrl-C or a sweeper error: the table shows what finished
        if not refused:
            _summarize_sweeps(prog, check=finished)


def run_check(command: Command, cfg: DictConfig, overrides: list[str], exit_after: bool) -> None:
    """Build every part of the command without running it (tasks/check.py); print the report.
    `exit_after`: `--check` alone, exit 0 here; otherwise the command goes on (cnnfleet-submit)."""
    import logging
    import warnings

    checker = _load(command.check)
    importlib.import_module("lightning.pytorch")  # it sets its loggers' levels on import
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # their set-up chatter is not a finding
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lines = checker(cfg, overrides, **command.options)
    except CnnfleetError as exc:
        fail(command.prog, user_message(exc), exc.exit_code)
    except Exception as exc:
        _internal_fault(command.prog, exc, None)
    if exit_after:
        print(f"{command.prog} --check: ok")
        for line in lines:
            print(f"  {line}")
        raise SystemExit(0)


def _internal_fault(prog: str, exc: BaseException, folder: Path | None) -> NoReturn:
    """A bug in cnnfleet (not the user's input): one line pointing at the full traceback."""
    from cnnfleet.config.guard import first_line
    from cnnfleet.launch.env import global_rank
    from cnnfleet.run.summary import write_traceback

    path = None
    if folder is not None and global_rank(os.environ) == 0:
        path = folder / TRACEBACK_FILE
        if not path.is_file():
            path = write_traceback(folder, exc)
    if path is None:
        import tempfile

        path = write_traceback(Path(tempfile.mkdtemp(prefix="cnnfleet-fault-")), exc)
    fail(
        prog,
        f"internal error ({type(exc).__name__}: {first_line(exc)}); this is a cnnfleet bug, please report "
        f"it with {path}",
        1,
    )


def _summarize_sweeps(prog: str, check: bool) -> None:
    """Write each sweep's results table; exit 1 when every trial of a finished sweep failed."""
    from cnnfleet.sweeps.callback import started_sweeps
    from cnnfleet.sweeps.results import write_sweep_summary

    for sweep_dir in started_sweeps():
        rows = write_sweep_summary(sweep_dir)
        failed = [row for row in rows if row.status not in ("completed", "pruned")]
        if failed:
            print(
                f"{prog}: {len(failed)} of {len(rows)} trials failed or did not finish; see "
                f"{sweep_dir}/sweep_summary.md"
            )
        if check and rows and len(failed) == len(rows):
            sys.stderr.write(f"{prog}: error: every trial failed; first reason: {failed[0].reason}\n")
            raise SystemExit(1)


def call_task(command: Command, cfg: DictConfig, **decided: Any) -> Any:
    """Run the command's task on a checked config (`decided`: what the launch decided for it, the run
    plan); our input errors become one line and exit 2, a bug one line and the traceback in the run folder."""
    try:
        return _load(command.task)(cfg, **command.options, **decided)
    except CnnfleetError as exc:
        fail(command.prog, user_message(exc), exc.exit_code)
    except Exception as exc:
        _internal_fault(command.prog, exc, Path(HydraConfig.get().runtime.output_dir))


def run_task(command: Command, cfg: DictConfig) -> Any:
    """The task inside Hydra's app (a sweep's trial, --experimental-rerun): check the config, then
    `call_task`. In a multirun a failed trial prints its line and returns None instead, so the sweep
    goes on (the trial recorded why in its summary.json; see cnnfleet/sweeps/trial.py)."""
    from cnnfleet.sweeps.trial import in_multirun, one_line

    if not in_multirun():
        try:
            check_domains(cfg)
            complete_from_data(cfg)
        except CnnfleetError as exc:
            fail(command.prog, user_message(exc), exc.exit_code)
        return call_task(command, cfg)
    try:
        check_domains(cfg)
        complete_from_data(cfg)
    except CnnfleetError as exc:  # this trial's values: recorded like any failed trial, the sweep goes on
        from cnnfleet.run.summary import write_failure

        write_failure(HydraConfig.get().runtime.output_dir, one_line(exc))
        sys.stderr.write(f"{command.prog}: error: trial {HydraConfig.get().job.num} failed: {one_line(exc)}\n")
        return None
    try:
        return _load(command.task)(cfg, **command.options)
    except Exception as exc:
        sys.stderr.write(f"{command.prog}: error: trial {HydraConfig.get().job.num} failed: {one_line(exc)}\n")
        return None
