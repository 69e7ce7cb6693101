"""cnnfleet-prepare: turn an ImageFolder tree (or MNIST / CIFAR files) into tar shards for `data=shards`.

Images are resized (short side, never enlarged) and re-encoded as JPEG, shuffled once, and written
as WebDataset tar shards with index.json (classes, per-shard counts, sizes and SHA-256). Shards are
written in parallel, each atomically and reproducibly: an interrupted preparation continues where it
stopped when run again, and a finished one is left as it is. Settings are fixed per output folder.
"""

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NoReturn

from cnnfleet.cli import fail

PROG = "cnnfleet-prepare"
EXAMPLES = """examples:
  cnnfleet-prepare /datasets/imagenet /scratch/imagenet-shards          # train/, val/ -> shards, 256 px
  cnnfleet-prepare data/imagenet data/imagenet-shards --size 160 --quality 90 --shard-size 2000
  cnnfleet-prepare data/mnist data/mnist-shards --from mnist            # torchvision's files
  cnnfleet-train data=shards data.root=/scratch/imagenet-shards
"""
STATE = ".prepare"  # per-shard records and the settings, while and after preparing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    from cnnfleet.data.shards.sources import FORMATS

    parser = _Parser(prog=PROG, description=__doc__, epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("source", type=Path, help="ImageFolder root (train/, val/, optional test/) or the folder "
                                                  "torchvision reads MNIST/CIFAR from")  # fmt: skip
    parser.add_argument("output", type=Path, help="the folder to write (new, or one this command started)")
    parser.add_argument("--from", dest="kind", choices=FORMATS, default="imagefolder", help="the source's format")
    parser.add_argument("--size", type=int, default=256,
                        help="resize the short side down to this many pixels (0: keep; default 256)")  # fmt: skip
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3,
                        help="ImageFolder: RGB (3) or grayscale (1)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="MNIST/CIFAR: share of the training split held out for validation")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the shuffle before sharding (and the MNIST/CIFAR split)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, low, high in (("size", 0, 100_000), ("quality", 1, 100), ("shard_size", 1, 10_000_000),
                            ("workers", 1, 1024)):  # fmt: skip
        value = getattr(args, name)
        if not low <= value <= high:
            fail(PROG, f"--{name.replace('_', '-')} {value} is out of range; use {low}..{high}")
    if not 0 < args.val_fraction < 1:
        fail(PROG, f"--val-fraction {args.val_fraction} must be between 0 and 1")
    return args


def plan_shards(source: object, shard_size: int, seed: int) -> list[tuple[str, int, list]]:
    """(split, shard number, samples) for every shard: each split shuffled once, then cut in order."""
    import numpy as np

    jobs = []
    for split, samples in source.splits.items():
        order = np.random.default_rng([seed, len(samples)]).permutation(len(samples))
        shuffled = [samples[i] for i in order]
        jobs += [(split, n, shuffled[start : start + shard_size])
                 for n, start in enumerate(range(0, len(shuffled), shard_size))]  # fmt: skip
    return jobs


def fingerprint(args: argparse.Namespace, source: object) -> dict:
    """What the output depends on; a folder is continued only with the same."""
    digest = hashlib.sha256()
    for split, samples in sorted(source.splits.items()):
        for sample, label in samples:
            digest.update(f"{split}\t{sample if isinstance(sample, str) else 'array'}\t{label}\n".encode())
    return {"from": args.kind, "source": str(args.source.resolve()), "size": args.size, "quality": args.quality,
            "shard_size": args.shard_size, "seed": args.seed, "mode": source.mode,
            "val_fraction": args.val_fraction if args.kind != "imagefolder" else None,
            "samples": {split: len(s) for split, s in source.splits.items()},
            "listing_sha256": digest.hexdigest()}  # fmt: skip


def claim_output(output: Path, settings: dict) -> None:
    """Refuse a folder this command did not start, or started with other settings; record the settings."""
    from cnnfleet.errors import DataError
    from cnnfleet.run.files import write_json_atomic

    state = output / STATE / "settings.json"
    if state.is_file():
        before = json.loads(state.read_text())
        changed = [f"{k}: {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v]
        if changed:
            raise DataError(f"{output} was prepared with other settings ({'; '.join(changed[:3])}); use another "
                            f"output folder, or delete {output} to start it over")  # fmt: skip
        return
    if output.exists() and any(p.name != ".cnnfleet-prepare.lock" for p in output.iterdir()):
        raise DataError(f"{output} already holds files that {PROG} did not write; choose a new or empty folder")
    write_json_atomic(state, settings)


def _write(job: tuple, output: str, encoding: object) -> tuple[str, int, dict]:
    from cnnfleet.data.shards.format import shard_name
    from cnnfleet.data.shards.writer import write_shard
    from cnnfleet.run.files import write_json_atomic

    split, number, samples = job
    entry = write_shard(Path(output) / split / shard_name(number), number, samples, encoding)
    write_json_atomic(Path(output) / STATE / split / f"{shard_name(number)}.json", entry)
    return split, number, entry


def _done(output: Path, split: str, number: int) -> dict | None:
    from cnnfleet.data.shards.format import shard_name

    record, shard = output / STATE / split / f"{shard_name(number)}.json", output / split / shard_name(number)
    if record.is_file() and shard.is_file():
        entry = json.loads(record.read_text())
        if shard.stat().st_size == entry["bytes"]:
            return entry
    return None


def prepare(args: argparse.Namespace) -> str:
    from tqdm import tqdm

    from cnnfleet.data.prepare_lock import preparing
    from cnnfleet.data.shards.format import INDEX, ShardIndex, shard_name
    from cnnfleet.data.shards.sources import read_source
    from cnnfleet.data.shards.writer import Encoding
    from cnnfleet.run.files import write_json_atomic

    source = read_source(args.kind, args.source, args.channels, args.val_fraction, args.seed)
    settings = fingerprint(args, source)
    jobs = plan_shards(source, args.shard_size, args.seed)
    output = args.output
    with preparing(output, "shards"):
        claim_output(output, settings)
        entries = {(split, n): _done(output, split, n) for split, n, _ in jobs}
        pending = [job for job in jobs if entries[job[:2]] is None]
        encoding = Encoding(args.size, args.quality, source.mode)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), unit="shard", disable=args.quiet or None,
                   desc=PROG)  # fmt: skip
        if pending:
            pool = ProcessPoolExecutor(max_workers=min(args.workers, len(pending)))
            try:
                futures = [pool.submit(_write, job, str(output), encoding) for job in pending]
                for future in futures:
                    split, number, entry = future.result()
                    entries[(split, number)] = entry
                    bar.update(1)
            finally:  # on an error or Ctrl-C: no new shard starts; finished ones are recorded
                pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        splits = {split: [] for split in source.splits}
        for split, number, _ in jobs:
            splits[split].append({"path": f"{split}/{shard_name(number)}", **entries[(split, number)]})
        index = ShardIndex(str(output), source.classes, {}, settings)
        document = {**index.to_json(), "splits": splits}
        index_path = output / INDEX
        fresh = not index_path.is_file() or json.loads(index_path.read_text()) != json.loads(json.dumps(document))
        if fresh:
            write_json_atomic(index_path, document)
    counts = ", ".join(f"{split} {sum(e['count'] for e in shards)}" for split, shards in splits.items())
    done = f"wrote {len(pending)} of {len(jobs)} shards" if pending else f"all {len(jobs)} shards were already there"
    return f"{output}: {len(source.classes)} classes, {counts} images; {done}"


def main(argv: list[str] | None = None) -> None:
    from cnnfleet.errors import CnnfleetError, user_message

    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        print(prepare(args))
    except CnnfleetError as exc:
        fail(PROG, user_message(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail(PROG, f"interrupted; the shards written so far are kept: run the same command again to finish "
                   f"{args.output}", 130)  # fmt: skip


if __name__ == "__main__":
    main()
