"""cnnfleet-sweep-summary <sweep folder> [<second sweep folder>]: a sweep's results table, or two sweeps compared.

With one folder: rebuilds the sweep's results (sweep_summary.csv, .md and .png, and for an Optuna
sweep optuna_importance.png and optuna_parallel_coordinate.png) and prints the table. A finished
`cnnfleet-train -m ...` writes them already; run this while a sweep is still going
(launcher=slurm), after it was stopped, or to rebuild the files.

With two folders A B (sweeps of the same metric): compares them (trials completed/pruned/failed,
best value, trial and parameters, sweep wall time, total trial-seconds, wall time B/A), prints the
comparison and writes it to B/compare.md, with B/compare.png (best so far against wall-clock time).
"""

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from cnnfleet.cli.app import fail

PROG = "cnnfleet-sweep-summary"
EXAMPLES = """examples:
  cnnfleet-sweep-summary logs/train/sweeps/digits_optuna
  cnnfleet-sweep-summary logs/train/multiruns/2026-01-10_09-00-00 logs/train/sweeps/digits_optuna
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other cnnfleet command."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sweep_dirs",
        nargs="*",
        type=Path,
        metavar="SWEEP",
        help="a sweep folder (logs/train/multiruns/<time> or logs/train/sweeps/<study>); give two to compare them "
        "(the second one, B, receives compare.md and compare.png)",
    )
    return parser


def summarize(sweep_dir: Path) -> None:
    """One sweep: write and print its results table."""
    from cnnfleet.sweeps.results import write_sweep_summary

    write_sweep_summary(sweep_dir)
    print(f"wrote {sweep_dir}/sweep_summary.csv, .md and .png")


def compare(sweep_a: Path, sweep_b: Path) -> None:
    """Two sweeps: print the comparison, write B/compare.md and B/compare.png."""
    from cnnfleet.sweeps.compare import compare_sweeps

    compare_sweeps(sweep_a, sweep_b)
    print(f"wrote {sweep_b}/compare.md and {sweep_b}/compare.png")


def main(argv: list[str] | None = None) -> None:
    from cnnfleet.errors import CnnfleetError, user_message
    from cnnfleet.sweeps.results import sweep_folder_problem

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    folders: list[Path] = args.sweep_dirs
    if not folders or len(folders) > 2:
        fail(PROG, f"got {len(folders)} folders; give one sweep folder, or two to compare (see {PROG} --help)")
    for folder in folders:
        problem = sweep_folder_problem(folder)
        if problem:
            fail(PROG, problem)
    try:
        if len(folders) == 1:
            summarize(folders[0])
        else:
            compare(*folders)
    except CnnfleetError as exc:
        fail(PROG, user_message(exc), exc.exit_code)
    except OSError as exc:  # a folder not writable, a disk full: the reason, not a traceback
        fail(PROG, f"cannot write the results: {exc.strerror or exc} ({exc.filename or ''})", 1)


if __name__ == "__main__":
    main()
