"""The command line as Hydra reads it: its flags and the overrides, parsed by us.

Hydra's own parser is private to Hydra; this one takes the same flags with the same meanings, so a
command line means what Hydra's documentation says. A single run is then composed and run by
cnnfleet (app.py); Hydra's app handles the flags that print (--cfg, --help, --info, ...) and -m,
which parse the same argv again.
"""

import argparse
import contextlib
import io
from dataclasses import dataclass, field

INFO_CHOICES = ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"]
CHECK_FLAG = "--check"  # cnnfleet's own: build every part without running (tasks/check.py)


@dataclass(frozen=True)
class CommandLine:
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    config_dir: str | None = None
    config_path: str | None = None
    config_name: str | None = None
    check: bool = False
    shows: bool = False  # --help, --hydra-help, --cfg, --info, --shell-completion, ...: Hydra prints, no job runs
    prints_config: bool = False  # --cfg


class FlagError(ValueError):
    """A malformed flag, in argparse's words."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--help", "-h", action="store_true")
    parser.add_argument("--hydra-help", action="store_true")
    parser.add_argument("--version", action="store_true")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument("--resolve", action="store_true")
    parser.add_argument("--package", "-p")
    parser.add_argument("--run", "-r", action="store_true")
    parser.add_argument("--multirun", "-m", action="store_true")
    parser.add_argument("--shell-completion", "-sc", action="store_true")
    parser.add_argument("--config-path", "-cp")
    parser.add_argument("--config-name", "-cn")
    parser.add_argument("--config-dir", "-cd")
    parser.add_argument("--experimental-rerun")
    parser.add_argument("--info", "-i", const="all", nargs="?", choices=INFO_CHOICES)
    parser.add_argument(CHECK_FLAG, action="store_true")
    return parser


def parse(argv: list[str]) -> CommandLine:
    """Raise FlagError with argparse's one-line reason for a malformed flag."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            args = parser().parse_intermixed_args(argv)  # overrides before and after flags
    except (argparse.ArgumentError, SystemExit) as exc:
        reason = str(exc) if isinstance(exc, argparse.ArgumentError) else ""
        lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
        raise FlagError(reason or (lines[-1].split("error: ", 1)[-1] if lines else "malformed arguments")) from None
    shows = bool(
        args.help
        or args.hydra_help
        or args.version
        or args.cfg
        or args.info
        or args.shell_completion
        or args.experimental_rerun
    )
    return CommandLine(
        overrides=list(args.overrides),
        multirun=args.multirun,
        config_dir=args.config_dir,
        config_path=args.config_path,
        config_name=args.config_name,
        check=args.check,
        shows=shows,
        prints_config=bool(args.cfg),
    )
