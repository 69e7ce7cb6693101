"""The config, composed once with Hydra's compose API on the run's search path, and checked: every
group option known, every required key set, the run folder creatable, every key in its domain.
A sweep's values are checked the same way before its first trial starts."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cnnfleet.config.domains import check_config as check_domains
from cnnfleet.config.domains import creatable_problem, nearest_existing, path_text_problem
from cnnfleet.config.errors import COMPOSE_ERRORS, explain, group_options, is_group, unknown_option_message
from cnnfleet.config.overrides import quote_value
from cnnfleet.config.search_path import conf_dir, config_roots, current_roots, searchpath_override
from cnnfleet.errors import CnnfleetError, ConfigError


def compose_config(
    config_name: str,
    overrides: list[str],
    config_dir: str | None = None,
    job_name: str | None = None,
    config_path: str | None = None,
) -> DictConfig:
    """Compose like Hydra's app would (hydra node included), on the same search path (`config_dir`:
    Hydra's --config-dir; `config_path`: --config-path, the primary folder instead of cnnfleet's conf/);
    raise Hydra/OmegaConf errors (and ConfigError for what Hydra lets through: `data=null`, an unknown
    option of an optional group). `job_name`: hydra.job.name (the command's; its log file's name)."""
    for flag, folder in (("--config-dir", config_dir), ("--config-path", config_path)):
        if folder and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder}: no such folder; give the folder that holds your config groups")
    check_group_options(overrides, config_roots(config_dir, overrides, primary=config_path))
    GlobalHydra.instance().clear()
    primary = str(Path(config_path).absolute()) if config_path else conf_dir()
    with initialize_config_dir(config_dir=primary, version_base="1.3", job_name=job_name or config_name):
        try:
            cfg = compose(
                config_name=config_name, overrides=with_config_dir(overrides, config_dir), return_hydra_config=True
            )
        except ValueError as exc:  # Hydra's defaults list raises plain ValueErrors for some overrides
            raise ConfigError(
                f"cannot compose the config: {first_text_line(exc)} (a group takes one option: "
                "group=option; remove a group's keys with ~group.key)"
            ) from None
    with open_dict(cfg):  # the job's folder, as Hydra will set it (the run plan may choose another)
        cfg.hydra.mode = cfg.hydra.mode or RunMode.RUN  # as Hydra's app marks a single run
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


def check_sweep(
    config_name: str, overrides: list[str], config_dir: str | None = None, config_path: str | None = None
) -> None:
    """A multirun's values are checked before the first trial starts (domains, options, types):
    a bad value in the sweep is one line and exit 2, not a failed trial after hours of others."""
    for variant in sweep_variants(overrides):
        try:
            check_config(compose_config(config_name, variant, config_dir, config_path=config_path))
        except CnnfleetError as exc:
            raise ConfigError(f"in the sweep ({' '.join(variant)}): {exc}") from None
        except COMPOSE_ERRORS as exc:
            raise ConfigError(f"in the sweep ({' '.join(variant)}): {explain(exc, current_roots())}") from None


def check_new_folder(cfg: DictConfig, prog: str) -> None:
    """eval/predict/export/bench write a NEW folder: never into a run folder or a folder with files."""
    folder = Path(str(cfg.hydra.run.dir)).absolute()
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(
            f"{folder} is not empty; {prog} writes its results into a new folder of its own: "
            "leave hydra.run.dir out or point it at a new or empty folder"
        )


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


def apply_overrides(cfg: DictConfig, overrides: list[str], given: list[str]) -> None:
    """Set the values of `overrides` that `given` (the composed command line) did not hold on the
    composed config, and record the whole list as Hydra does (hydra.overrides, .hydra/overrides.yaml):
    the run plan's folder and checkpoint reach the job without composing the config again."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    added = [o for o in overrides if o not in given]
    with open_dict(cfg), read_write(cfg), read_write(cfg.hydra):
        for override in OverridesParser.create().parse_overrides(added):
            OmegaConf.update(cfg, override.get_key_element(), override.value(), merge=False, force_add=True)
        hydra_keys = {o.lstrip("+~").partition("=")[0] for o in overrides if o.lstrip("+~").startswith("hydra.")}
        kept = [o for o in cfg.hydra.overrides.hydra if o.lstrip("+~").partition("=")[0] not in hydra_keys]
        cfg.hydra.overrides.hydra = kept + [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
        cfg.hydra.overrides.task = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
