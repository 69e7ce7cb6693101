"""cnnfleet-prepare: turn an ImageFolder tree (or MNIST / CIFAR files) into tar shards for `data=shards`.

Images are resized (short side, never enlarged) and re-encoded as JPEG, shuffled once, and written
as WebDataset tar shards with index.json (classes, per-shard counts, sizes and SHA-256). Shards are
written in parallel, each atomically and reproducibly: an interrupted preparation continues where it
stopped when run again, and a finished one is left as it is. Settings are fixed per output folder.
"""

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from cnnfleet.cli.app import fail
from cnnfleet.data.shards.prepare import PrepareSettings, prepare

PROG = "cnnfleet-prepare"
EXAMPLES = """examples:
  cnnfleet-prepare /datasets/imagenet /scratch/imagenet-shards          # train/, val/ -> shards, 256 px
  cnnfleet-prepare data/imagenet data/imagenet-shards --size 160 --quality 90 --shard-size 2000
  cnnfleet-prepare data/mnist data/mnist-shards --from mnist            # torchvision's files
  cnnfleet-train data=shards data.root=/scratch/imagenet-shards
"""
log = logging.getLogger(PROG)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    from cnnfleet.data.shards.sources import FORMATS

    parser = _Parser(
        prog=PROG, description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source",
        type=Path,
        help="ImageFolder root (train/, val/, optional test/) or the folder torchvision reads MNIST/CIFAR from",
    )
    parser.add_argument("output", type=Path, help="the folder to write (new, or one this command started)")
    parser.add_argument("--from", dest="kind", choices=FORMATS, default="imagefolder", help="the source's format")
    parser.add_argument(
        "--size", type=int, default=256, help="resize the short side down to this many pixels (0: keep; default 256)"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="ImageFolder: RGB (3) or grayscale (1)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="MNIST/CIFAR: share of the training split held out for validation",
    )
    parser.add_argument("--seed", type=int, default=0, help="the shuffle before sharding (and the MNIST/CIFAR split)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    parser.add_argument(
        "--verify", action="store_true", help="check existing shards' SHA-256; write again the ones that differ"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse(argv: list[str]) -> PrepareSettings:
    args = build_parser().parse_args(argv)
    for name, low, high in (
        ("size", 0, 100_000),
        ("quality", 1, 100),
        ("shard_size", 1, 10_000_000),
        ("workers", 1, 1024),
    ):
        value = getattr(args, name)
        if not low <= value <= high:
            fail(PROG, f"--{name.replace('_', '-')} {value} is out of range; use {low}..{high}")
    if not 0 < args.val_fraction < 1:
        fail(PROG, f"--val-fraction {args.val_fraction} must be between 0 and 1")
    return PrepareSettings(**vars(args))


def main(argv: list[str] | None = None) -> None:
    from cnnfleet.errors import CnnfleetError, user_message

    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")  # waiting for a lock, a restart
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill / a batch system: stop as on Ctrl-C
    try:
        print(prepare(args))
    except CnnfleetError as exc:
        fail(PROG, user_message(exc), exc.exit_code)
    except OSError as exc:  # the output cannot be written (a file in the way, /proc, permissions, a full disk)
        fail(PROG, f"cannot write {args.output}: {exc.strerror or exc}; give a writable folder")
    except KeyboardInterrupt:
        fail(
            PROG,
            f"interrupted; the shards written so far are kept: run the same command again to finish {args.output}",
            130,
        )


if __name__ == "__main__":
    main()
