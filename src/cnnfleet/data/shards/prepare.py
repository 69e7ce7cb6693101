"""Turn an ImageFolder tree (or MNIST / CIFAR files) into tar shards for `data=shards` (cnnfleet-prepare).

Images are resized (short side, never enlarged) and re-encoded as JPEG, shuffled once, and written
as WebDataset tar shards with index.json (classes, per-shard counts, sizes and SHA-256). Shards are
written in parallel, each atomically and reproducibly: an interrupted preparation continues where it
stopped when run again, and a finished one is left as it is. Settings are fixed per output folder.
"""

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PROG = "cnnfleet-prepare"
STATE = ".prepare"  # per-shard records and the settings, while and after preparing
log = logging.getLogger(PROG)


@dataclass
class PrepareSettings:
    """cnnfleet-prepare's flags: the command line's defaults are these."""

    source: Path
    output: Path
    kind: str = "imagefolder"  # --from: imagefolder, mnist, cifar10, ...
    size: int = 256  # resize the short side down to this many pixels (0: keep)
    quality: int = 90  # JPEG quality 1..100
    shard_size: int = 1000  # samples per shard
    channels: int = 3  # ImageFolder: RGB (3) or grayscale (1)
    val_fraction: float = 0.1  # MNIST/CIFAR: share of the training split held out for validation
    seed: int = 0  # the shuffle before sharding (and the MNIST/CIFAR split)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # encoding processes
    verify: bool = False  # check existing shards' SHA-256; write again the ones that differ
    quiet: bool = False  # no progress bar


def plan_shards(source: object, shard_size: int, seed: int) -> list[tuple[str, int, list]]:
    """(split, shard number, samples) for every shard: each split shuffled once, then cut in order."""
    import numpy as np

    jobs = []
    for split, samples in source.splits.items():
        order = np.random.default_rng([seed, len(samples)]).permutation(len(samples))
        shuffled = [samples[i] for i in order]
        jobs += [
            (split, n, shuffled[start : start + shard_size])
            for n, start in enumerate(range(0, len(shuffled), shard_size))
        ]
    return jobs


def fingerprint(args: "PrepareSettings", source: object) -> dict:
    """What the output depends on; a folder is continued only with the same."""
    digest = hashlib.sha256()
    for split, samples in sorted(source.splits.items()):
        for sample, label in samples:
            digest.update(f"{split}\t{sample if isinstance(sample, str) else 'array'}\t{label}\n".encode())
    return {
        "from": args.kind,
        "source": str(args.source.resolve()),
        "size": args.size,
        "quality": args.quality,
        "shard_size": args.shard_size,
        "seed": args.seed,
        "mode": source.mode,
        "val_fraction": args.val_fraction if args.kind != "imagefolder" else None,
        "samples": {split: len(s) for split, s in source.splits.items()},
        "listing_sha256": digest.hexdigest(),
    }


def claim_output(output: Path, settings: dict) -> None:
    """Refuse a folder this command did not start, or finished with other settings; record the settings.
    An unfinished preparation whose source listing changed (a bad image removed) starts over."""
    from cnnfleet.errors import DataError
    from cnnfleet.run.files import write_json_atomic

    state = output / STATE / "settings.json"
    if state.is_file():
        before = json.loads(state.read_text())
        flags = [
            f"{k}: {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v and k not in SOURCE_KEYS
        ]
        source = [k for k in SOURCE_KEYS if before.get(k) != settings.get(k)]
        finished = (output / "index.json").is_file()
        if flags:
            raise DataError(
                f"{output} was prepared with other settings ({'; '.join(flags[:3])}); use another "
                f"output folder, or delete {output} to start it over"
            )
        if source and finished:
            raise DataError(
                f"the images in {settings['source']} changed since {output} was prepared from them "
                f"({_count_change(before, settings)}); prepare into another folder, or delete "
                f"{output}"
            )
        if not source:
            return
        log.warning(
            "the source changed since this unfinished preparation started (%s): starting it over",
            _count_change(before, settings),
        )
        for split in before.get("samples", {}):
            shutil.rmtree(output / split, ignore_errors=True)
        shutil.rmtree(output / STATE, ignore_errors=True)
    elif output.exists() and any(p.name != ".cnnfleet-prepare.lock" for p in output.iterdir()):
        raise DataError(f"{output} already holds files that {PROG} did not write; choose a new or empty folder")
    write_json_atomic(state, settings)


SOURCE_KEYS = ("samples", "listing_sha256")  # what the source's files decide, not the flags


def _count_change(before: dict, now: dict) -> str:
    old, new = before.get("samples", {}), now.get("samples", {})
    changed = [
        f"{split} {old.get(split, 0)} -> {new.get(split, 0)} images"
        for split in sorted(old | new)
        if old.get(split) != new.get(split)
    ]
    return ", ".join(changed) or "the same counts, other files"


def _write(job: tuple, output: str, encoding: object) -> tuple[str, int, dict]:
    from cnnfleet.data.shards.format import shard_name
    from cnnfleet.data.shards.writer import write_shard
    from cnnfleet.run.files import write_json_atomic

    split, number, samples = job
    entry = write_shard(Path(output) / split / shard_name(number), number, samples, encoding)
    write_json_atomic(Path(output) / STATE / split / f"{shard_name(number)}.json", entry)
    return split, number, entry


def _done(output: Path, split: str, number: int, verify: bool) -> dict | None:
    """The shard's record when it is there whole (size; with --verify, its SHA-256 too), else None."""
    from cnnfleet.data.shards.format import shard_name

    record, shard = output / STATE / split / f"{shard_name(number)}.json", output / split / shard_name(number)
    if record.is_file() and shard.is_file():
        entry = json.loads(record.read_text())
        if shard.stat().st_size == entry["bytes"] and (not verify or _sha256(shard) == entry["sha256"]):
            return entry
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(args: PrepareSettings) -> str:
    from tqdm import tqdm

    from cnnfleet.data.prepare_lock import preparing
    from cnnfleet.data.shards.format import INDEX, Shard, ShardIndex, shard_name
    from cnnfleet.data.shards.sources import read_source
    from cnnfleet.data.shards.writer import Encoding
    from cnnfleet.errors import DataError
    from cnnfleet.launch.orphans import exit_with_parent
    from cnnfleet.run.files import write_json_atomic

    source = read_source(args.kind, args.source, args.channels, args.val_fraction, args.seed, args.output)
    settings = fingerprint(args, source)
    jobs = plan_shards(source, args.shard_size, args.seed)
    output = args.output
    if output.exists() and not output.is_dir():
        raise DataError(f"output {output} is not a folder; give a new or empty folder")
    with preparing(output, "shards"):
        claim_output(output, settings)
        entries = {(split, n): _done(output, split, n, args.verify) for split, n, _ in jobs}
        pending = [job for job in jobs if entries[job[:2]] is None]
        encoding = Encoding(args.size, args.quality, source.mode)
        bar = tqdm(
            total=len(jobs), initial=len(jobs) - len(pending), unit="shard", disable=args.quiet or None, desc=PROG
        )
        if pending:
            pool = ProcessPoolExecutor(max_workers=min(args.workers, len(pending)), initializer=exit_with_parent)
            try:
                futures = [pool.submit(_write, job, str(output), encoding) for job in pending]
                for future in futures:
                    split, number, entry = future.result()
                    entries[(split, number)] = entry
                    bar.update(1)
            finally:  # on an error or Ctrl-C: no new shard starts; finished ones are recorded
                pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        splits: dict[str, list[Shard]] = {split: [] for split in source.splits}
        for split, number, _ in jobs:
            splits[split].append(Shard(path=f"{split}/{shard_name(number)}", **entries[(split, number)]))
        document = ShardIndex(str(output), source.classes, splits, settings).to_json()
        index_path = output / INDEX
        fresh = not index_path.is_file() or json.loads(index_path.read_text()) != json.loads(json.dumps(document))
        if fresh:
            write_json_atomic(index_path, document)
    counts = ", ".join(f"{split} {sum(s.count for s in shards)}" for split, shards in splits.items())
    done = f"wrote {len(pending)} of {len(jobs)} shards" if pending else f"all {len(jobs)} shards were already there"
    return f"{output}: {len(source.classes)} classes, {counts} images; {done}"
