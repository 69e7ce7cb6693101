"""cnnfleet-sweep-summary <sweep folder>: the results table of a sweep, on demand.

A finished `cnnfleet-train -m ...` writes it already; run this while a sweep is still going
(launcher=slurm), after it was stopped, or to rebuild the files.
"""

import argparse
import sys
from pathlib import Path

from cnnfleet.cli import fail

PROG = "cnnfleet-sweep-summary"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="logs/train/multiruns/<time> or logs/train/sweeps/<study>")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sweep_dir.is_dir():
        fail(PROG, f"{args.sweep_dir} is not a folder; pass a sweep folder such as logs/train/multiruns/<time>")
    from cnnfleet.sweeps.results import write_sweep_summary

    rows = write_sweep_summary(args.sweep_dir)
    if not rows:
        fail(PROG, f"{args.sweep_dir} holds no trial folders (0/, 1/, ...); is it a sweep folder?")
    print(f"wrote {args.sweep_dir}/sweep_summary.csv, .md and .png")


if __name__ == "__main__":
    main()
