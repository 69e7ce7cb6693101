"""cnnfleet-runs: the local run catalogue: list runs, compare two runs' configs, upload offline W&B runs.

Reads the run folders under the logs root (`$CNNFLEET_ROOT/logs`, else ./logs, as cnnfleet-train
writes them; --logs DIR for another): state.json, summary.json and config.yaml. No server and no
network, except `wandb --sync`. A damaged or half-written folder is listed with what is wrong.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from cnnfleet.cli.app import fail

PROG = "cnnfleet-runs"
EXAMPLES = """examples:
  cnnfleet-runs                                        # every run, newest first
  cnnfleet-runs list --filter status=completed --sort val/acc --limit 5
  cnnfleet-runs list --filter 'run=train/sweeps/*' --filter 'val/acc>=0.95' --metric val/loss
  cnnfleet-runs diff 2026-11-26_15-02-31_922986 2026-11-27_09-10-11_123456
  cnnfleet-runs wandb                                  # offline W&B runs not yet uploaded
  cnnfleet-runs wandb --sync                           # upload them (wandb sync), one line each
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other cnnfleet command."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {PROG} --help)")


def default_logs() -> Path:
    """Where cnnfleet-train writes by default: paths.log_dir = ${CNNFLEET_ROOT or the current folder}/logs."""
    return Path(os.environ.get("CNNFLEET_ROOT") or Path.cwd()) / "logs"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--logs",
        type=Path,
        default=None,
        metavar="DIR",
        help="the logs root (default: $CNNFLEET_ROOT/logs, else ./logs)",
    )
    common.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs where KEY=glob, KEY!=glob, or KEY>=|<=|>|< number (repeatable)",
    )
    parser = _Parser(
        prog=PROG, description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    listing = commands.add_parser("list", parents=[common], help="a table of runs (the default command)")
    listing.add_argument(
        "--sort",
        default="date",
        metavar="KEY",
        help="date (default, newest first), run, status, task, wall, world, device or a metric "
        "(best first: *loss* ascending, others descending)",
    )
    listing.add_argument("--reverse", action="store_true", help="flip the sort order")
    listing.add_argument("--limit", type=int, default=None, metavar="N", help="show the first N rows")
    listing.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="KEY",
        help="metric columns (repeatable; default test/acc and val/acc)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (every metric) instead of the table")
    diff = commands.add_parser("diff", parents=[common], help="two runs' config differences, side by side")
    diff.add_argument(
        "runs", nargs=2, metavar="RUN", help="a run folder, or its name (or a unique part) under the logs"
    )
    diff.add_argument(
        "--resolved",
        action="store_true",
        help="compare the resolved config.yaml (values after interpolation, run paths included) "
        "instead of Hydra's composed .hydra/config.yaml",
    )
    wandb = commands.add_parser("wandb", parents=[common], help="offline W&B runs not yet synced, and how to sync")
    wandb.add_argument("--sync", action="store_true", help="run `wandb sync` for each (one result line per run)")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["list", *argv]  # `cnnfleet-runs --sort val/acc` lists
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", None) is not None and args.limit < 1:
        fail(PROG, f"--limit {args.limit} must be 1 or more")
    args.logs = (args.logs or default_logs()).expanduser()
    if not args.logs.is_dir():
        fail(PROG, f"logs folder {args.logs} does not exist; pass --logs <dir> or set CNNFLEET_ROOT")
    return args


def list_runs(args: argparse.Namespace) -> None:
    from cnnfleet.catalogue import records, table

    found = records.read_runs(args.logs)
    runs = table.apply_filters(found, args.filter)
    metrics = args.metric or list(table.DEFAULT_METRICS)
    for key in metrics:
        table.check_metric(key, found)
    runs = table.sort_records(runs, args.sort, args.reverse)[: args.limit]
    if args.json:
        print(table.as_json(runs))
    elif runs:
        print(table.render(runs, metrics))
    else:
        print(f"no runs under {args.logs}" + (" match the filters" if found else ""))


def diff_runs(args: argparse.Namespace) -> None:
    from cnnfleet.catalogue import config_diff

    run_a, run_b = (config_diff.resolve_run(name, args.logs) for name in args.runs)
    configs = (config_diff.config_of(run, args.resolved) for run in (run_a, run_b))
    rows = config_diff.differences(*configs)
    print(config_diff.render_diff(run_a, run_b, rows))


def wandb_runs(args: argparse.Namespace) -> int:
    from cnnfleet.catalogue import records, table, wandb_offline

    runs = table.apply_filters(records.read_runs(args.logs), args.filter)
    text, code = wandb_offline.report(wandb_offline.offline_runs(runs), args.sync)
    print(text)
    return code


def main(argv: list[str] | None = None) -> None:
    from cnnfleet.errors import CnnfleetError, user_message

    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "diff":
            diff_runs(args)
        elif args.command == "wandb":
            raise SystemExit(wandb_runs(args))
        else:
            list_runs(args)
    except CnnfleetError as exc:
        fail(PROG, user_message(exc), exc.exit_code)


if __name__ == "__main__":
    main()
