"""The one place that owns the command-line failure policy.

Before Hydra starts (and before torch is imported), `launch` composes the config once with
Hydra's compose API: any typo, wrong type or unknown option becomes ONE line and exit code 2,
instead of Hydra's multi-line report and exit 1. For cnnfleet-train it then computes the
RunPlan (run/plan.py): the run folder, its lock, the checkpoint to resume from. Inside the
job, `run_task` maps our own errors to one line too.
"""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnfleet.conf_dir import conf_dir, config_roots, current_roots, searchpath_override, use_search_path
from cnnfleet.config_errors import COMPOSE_ERRORS, explain, is_group
from cnnfleet.data.class_folders import complete_from_data
from cnnfleet.domains import check_config as check_domains
from cnnfleet.domains import creatable_problem, nearest_existing, path_text_problem
from cnnfleet.errors import CnnfleetError, ConfigError, user_message
from cnnfleet.launch import signals
from cnnfleet.launch.env import slurm_task_id
from cnnfleet.launch.orphans import die_with_parent
from cnnfleet.overrides import quote_value
from cnnfleet.run.resume import checkpoint_file
from cnnfleet.schema import register_configs

EXIT_USAGE = 2


def fail(prog: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on stderr and exit (by default with the usage-error code)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def compose_config(config_name: str, overrides: list[str], config_dir: str | None = None) -> DictConfig:
    """Compose like Hydra's app would (hydra node included), on the same search path (`config_dir`:
    Hydra's --config-dir); raise Hydra/OmegaConf errors (and ConfigError for what Hydra lets through:
    `data=null`, an unknown option of an optional group)."""
    if config_dir and not Path(config_dir).is_dir():
        raise ConfigError(f"--config-dir {config_dir}: no such folder; give the folder that holds your config groups")
    check_group_options(overrides, config_roots(config_dir, overrides))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        try:
            cfg = compose(
                config_name=config_name, overrides=with_config_dir(overrides, config_dir), return_hydra_config=True
            )
        except ValueError as exc:  # Hydra's defaults list raises plain ValueErrors for some overrides
            raise ConfigError(f"cannot compose the config: {first_text_line(exc)} (a group takes one option: "
                              "group=option; remove a group's keys with ~group.key)") from None  # fmt: skip
    with open_dict(cfg):  # the job's folder, as Hydra will set it (the run plan may choose another)
        cfg.hydra.runtime.output_dir = str(Path(str(cfg.hydra.run.dir)).absolute())
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} resolve (runtime.cwd is set)
    return cfg


def first_text_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """Hydra's --config-dir as the compose API takes it: first on `hydra.searchpath` (Hydra puts the
    folder before the schemas, so its options are found like conf/'s own)."""
    if not config_dir:
        return overrides
    folder = Path(config_dir).absolute()
    entries = [f"file://{folder}", *searchpath_override(overrides)]
    kept = [o for o in overrides if o.lstrip("+").partition("=")[0] != "hydra.searchpath"]
    return [*kept, f"hydra.searchpath=[{','.join(quote_value(e) for e in entries)}]"]


def check_group_options(overrides: list[str], roots: list[str] | None = None) -> None:
    """`group=option` names an existing option, also for optional groups (experiment, debug,
    hparams_search), which Hydra would silently skip: `experiment=digit_fast` is a typo, not nothing.
    `roots`: every folder of the search path (default: cnnfleet's conf/ and CNNFLEET_CONFIG_PATH)."""
    from cnnfleet.config_errors import group_options, is_group, unknown_option_message

    roots = roots or config_roots(overrides=overrides)
    for override in overrides:
        key, eq, value = override.lstrip("+").partition("=")
        if not eq or "." in key or "@" in key or key.startswith("hydra") or not is_group(roots, key):
            continue
        valid = group_options(roots, key)
        if value.strip() in ("null", "None", ""):
            drop = " (or none to leave it out)" if "none" in valid else ""
            raise ConfigError(f"{key}={value}: the group takes one of its options: {', '.join(valid)}{drop}")
        options = (
            [v.strip() for v in value.strip("[]").split(",")] if "," in value or value.startswith("[") else [value]
        )
        for option in options:
            if option and option not in valid:
                raise ConfigError(unknown_option_message(roots, key, option))


def check_missing(cfg: DictConfig) -> None:
    """A required key left without a value (`~data`, `data=[]`): one line naming it."""
    missing = []
    for name in cfg:
        node = cfg._get_node(name)
        if name == "hydra" or node is None:
            continue
        if node._is_missing():
            missing.append(str(name))
        elif isinstance(node, DictConfig) and not node._is_none():
            missing.extend(f"{name}.{key}" for key in sorted(OmegaConf.missing_keys(node)))
    if missing:
        key = missing[0]
        hint = f"pick one with {key}=<option>" if is_group(current_roots(), key) else f"set {key}=<value>"
        raise ConfigError(f"{key} has no value (it is required): {hint}")


def sweep_variants(overrides: list[str], limit: int = 64) -> list[list[str]]:
    """Command lines that together use every value of every swept key once (`a=1,2 b=x,y` ->
    [a=1 b=x], [a=2 b=x], [a=1 b=y]): each value composed and checked without the full grid.
    Interval sweeps (Optuna's ranges) are checked at their first bound by the trial itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed, swept = [], []
    for override in parsed:
        key = override.get_key_element()
        if override.is_interval_sweep() and not key.startswith("hydra"):
            fixed.append(f"{key}={override.value().start}")  # its lower bound stands for the interval
        elif override.is_sweep_override() and not key.startswith("hydra"):
            swept.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    base = [values[0] for values in swept]
    variants = [[*fixed, *base]]
    for i, values in enumerate(swept):
        for value in values[1:]:
            variants.append([*fixed, *base[:i], value, *base[i + 1 :]])
    return variants[:limit]


def check_sweep(config_name: str, overrides: list[str], config_dir: str | None = None) -> None:
    """A multirun's values are checked before the first trial starts (domains, options, types):
    a bad value in the sweep is one line and exit 2, not a failed trial after hours of others."""
    for variant in sweep_variants(overrides):
        try:
            check_config(compose_config(config_name, variant, config_dir))
        except CnnfleetError as exc:
            raise ConfigError(f"in the sweep ({' '.join(variant)}): {exc}") from None
        except COMPOSE_ERRORS as exc:
            raise ConfigError(f"in the sweep ({' '.join(variant)}): {explain(exc, current_roots())}") from None


def check_new_folder(cfg: DictConfig, prog: str) -> None:
    """eval/predict/export/bench write a NEW folder: never into a run folder or a folder with files."""
    folder = Path(str(cfg.hydra.run.dir)).absolute()
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty; {prog} writes its results into a new folder of its own: "
                          "leave hydra.run.dir out or point it at a new or empty folder")  # fmt: skip


def check_writable(cfg: DictConfig) -> None:
    """The run folder (hydra.run.dir, and paths.output_dir when set apart from it) can be created:
    a path the filesystem takes, under a writable folder of a real filesystem."""
    folders = [Path(str(cfg.hydra.run.dir)).absolute()]
    if "paths" in cfg and not OmegaConf.is_missing(cfg.paths, "output_dir"):
        folders.append(Path(str(cfg.paths.output_dir)).absolute())
    for run_dir in dict.fromkeys(folders):
        problem = path_text_problem(str(run_dir))
        if problem is None:
            ancestor = nearest_existing(run_dir)
            problem = f"{ancestor} is a file, not a folder" if not ancestor.is_dir() else creatable_problem(run_dir)
        if problem:
            problem = problem.removeprefix("cannot be created: ")
            raise ConfigError(
                f"cannot create the run folder {run_dir}: {problem}; set CNNFLEET_ROOT or paths.root_dir "
                "(or hydra.run.dir) to a writable place"
            )


def check_config(cfg: DictConfig) -> None:
    """Every required key set, the run folder creatable, every key inside its domain (domains.py)."""
    check_missing(cfg)
    try:
        check_writable(cfg)  # before the domains: it names the run folder and how to move it
    except ConfigError:
        check_domains(cfg)  # unless a key's own domain is the cause (a 300-character task_name)
        raise
    check_domains(cfg)


def _run_overrides(cfg: DictConfig, overrides: list[str], plans_run: bool) -> list[str]:
    """Training: plan the run (folder, lock, checkpoint) and return the argv every rank parses.
    Other commands: an explicit ckpt_path becomes an absolute file (one line when it is not)."""
    if plans_run:
        from cnnfleet.run.plan import argv_overrides, plan_launch
        from cnnfleet.run.record import plain_config

        plan = plan_launch(cfg, overrides, os.environ, plain_config(cfg))
        return argv_overrides(plan, cfg, overrides)
    if "ckpt_path" not in cfg or OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path in (None, "last"):
        return overrides
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "ckpt_path"]
    return [*kept, f"ckpt_path={quote_value(str(checkpoint_file(str(cfg.ckpt_path))))}"]


CHECK_FLAG = "--check"


def _parse_args(argv: list[str], prog: str) -> Any:
    """Hydra's argparse; a malformed flag is one line (not argparse's usage block), exit 2."""
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            return get_args_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:
            raise
        last = [line for line in buffer.getvalue().splitlines() if line.strip()][-1:] or ["malformed arguments"]
        fail(
            prog, f"{last[0].split('error: ', 1)[-1]} (overrides are key=value; flags: --help, --cfg job, --check, -m)"
        )


def launch(hydra_app: Callable[[], Any], config_name: str, prog: str, plans_run: bool = False,
           check: str | None = None, check_first: bool = False) -> None:  # fmt: skip
    """Validate the command line, then hand it to the Hydra app (which parses sys.argv).

    `plans_run` (cnnfleet-train): compute the RunPlan first; rank 0 holds its folder's lock from here on.
    `check` ("module:function"): what `--check` runs instead of the task (tasks/check.py); with
    `check_first` it also runs before the task (cnnfleet-submit checks the job before sbatch)."""
    register_configs()
    die_with_parent()  # a rank started by Lightning's launcher does not outlive rank 0
    signals.install(requeue=slurm_task_id() is not None)  # before anything slow: no signal kills us unasked
    # torch's C++ layer prints its own warnings with 50-frame stack traces straight to stderr
    # (e.g. every TCPStore connect retry); our errors say what failed. Users can still set it.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    check_only = CHECK_FLAG in sys.argv[1:] and check is not None
    sys.argv = [a for a in sys.argv if a != CHECK_FLAG] if check_only else sys.argv
    argv = sys.argv[1:]
    args = _parse_args(argv, prog)
    try:
        use_search_path(config_roots(args.config_dir, list(args.overrides)))
    except COMPOSE_ERRORS as exc:  # a malformed hydra.searchpath
        fail(prog, explain(exc, conf_dir()))
    if check_only and args.multirun:
        fail(prog, f"{CHECK_FLAG} checks one run: leave out -m (or check one combination of the sweep)")
    if args.multirun and not (args.help or args.hydra_help or args.info or args.cfg):
        try:
            check_sweep(args.config_name or config_name, list(args.overrides), args.config_dir)
        except COMPOSE_ERRORS as exc:
            fail(prog, explain(exc, current_roots()))
        finally:
            GlobalHydra.instance().clear()
    skip = args.help or args.hydra_help or args.shell_completion or args.multirun or args.info
    if not skip:
        name = args.config_name or config_name
        try:
            cfg = compose_config(name, list(args.overrides), args.config_dir)
            check_config(cfg)
            # values the data define (an image folder's class count): every rank and the record see them
            overrides = [*args.overrides, *complete_from_data(cfg)]
            if not plans_run and not check_first:  # eval, predict, export, bench: a new folder of their own
                check_new_folder(cfg, prog)
            if check_only or check_first:
                run_check(check, cfg, overrides, prog, exit_after=check_only)
            new_overrides = _run_overrides(cfg, overrides, plans_run and not args.cfg)
        except COMPOSE_ERRORS as exc:
            fail(prog, explain(exc, current_roots()))
        finally:
            GlobalHydra.instance().clear()
        if new_overrides != list(args.overrides):
            flags = list(argv)
            for item in args.overrides:
                flags.remove(item)
            sys.argv = [sys.argv[0], *flags, *new_overrides]
    if not args.multirun:
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


def run_check(check: str, cfg: DictConfig, overrides: list[str], prog: str, exit_after: bool) -> None:
    """Build every part of the command without running it (tasks/check.py); print the report.
    `exit_after`: `--check` alone, exit 0 here; otherwise the command goes on (cnnfleet-submit)."""
    import importlib
    import logging
    import warnings

    module_name, _, function = check.partition(":")
    checker = getattr(importlib.import_module(module_name), function)
    importlib.import_module("lightning.pytorch")  # it sets its loggers' levels on import
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # their set-up chatter is not a finding
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lines = checker(cfg, overrides)
    except CnnfleetError as exc:
        fail(prog, user_message(exc), exc.exit_code)
    except Exception as exc:
        _internal_fault(prog, exc, None)
    if exit_after:
        print(f"{prog} --check: ok")
        for line in lines:
            print(f"  {line}")
        raise SystemExit(0)


def _internal_fault(prog: str, exc: BaseException, folder: Path | None) -> NoReturn:
    """A bug in cnnfleet (not the user's input): one line pointing at the full traceback."""
    from cnnfleet.guard import first_line, write_traceback
    from cnnfleet.launch.env import global_rank

    path = None
    if folder is not None and global_rank(os.environ) == 0:
        path = folder / "traceback.txt"
        if not path.is_file():
            path = write_traceback(folder, exc)
    if path is None:
        import tempfile

        path = write_traceback(Path(tempfile.mkdtemp(prefix="cnnfleet-fault-")), exc)
    fail(prog, f"internal error ({type(exc).__name__}: {first_line(exc)}); this is a cnnfleet bug, please report "
               f"it with {path}", 1)  # fmt: skip


def _summarize_sweeps(prog: str, check: bool) -> None:
    """Write each sweep's results table; exit 1 when every trial of a finished sweep failed."""
    from cnnfleet.sweeps.callback import started_sweeps
    from cnnfleet.sweeps.results import write_sweep_summary

    for sweep_dir in started_sweeps():
        rows = write_sweep_summary(sweep_dir)
        failed = [row for row in rows if row.status not in ("completed", "pruned")]
        if failed:
            print(f"{prog}: {len(failed)} of {len(rows)} trials failed or did not finish; see "
                  f"{sweep_dir}/sweep_summary.md")  # fmt: skip
        if check and rows and len(failed) == len(rows):
            sys.stderr.write(f"{prog}: error: every trial failed; first reason: {failed[0].reason}\n")
            raise SystemExit(1)


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig, prog: str) -> Any:
    """Run a task inside the Hydra job; our input errors become one line and exit 2.

    In a multirun a failed trial prints its line and returns None instead, so the sweep goes on
    (the trial recorded why in its summary.json; see cnnfleet/sweeps/trial.py)."""
    from cnnfleet.sweeps.trial import in_multirun, one_line

    if in_multirun():
        try:
            check_domains(cfg)
            complete_from_data(cfg)
        except CnnfleetError as exc:  # this trial's values: recorded like any failed trial, the sweep goes on
            from cnnfleet.run.summary import write_failure

            write_failure(HydraConfig.get().runtime.output_dir, one_line(exc))
            sys.stderr.write(f"{prog}: error: trial {HydraConfig.get().job.num} failed: {one_line(exc)}\n")
            return None
        try:
            return task(cfg)
        except Exception as exc:
            sys.stderr.write(f"{prog}: error: trial {HydraConfig.get().job.num} failed: {one_line(exc)}\n")
            return None
    try:
        check_domains(cfg)  # the Hydra app may be called without launch() (tests, other entry points)
        complete_from_data(cfg)
        return task(cfg)
    except CnnfleetError as exc:
        fail(prog, user_message(exc), exc.exit_code)
    except Exception as exc:  # a bug: the traceback goes to the run folder, one line to the user
        _internal_fault(prog, exc, Path(HydraConfig.get().runtime.output_dir))
