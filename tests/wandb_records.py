"""Read an offline W&B run back: the .wandb file's history, config and summary records.

wandb 0.31 ships no reader. The file is a LevelDB-style log: a 7-byte header (":W&B", magic,
version), then 32 KiB blocks of records, each with a 7-byte header (crc32, length, type:
1 full, 2 first, 3 middle, 4 last); a block tail shorter than a header is zero padding. Each
payload is a `wandb_internal_pb2.Record`.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (FIRST, MIDDLE):
            pending += payload
        else:  # zero padding up to the block end
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: Path) -> dict:
    """{"config", "history", "summary" (JSON-decoded values), "group"} of one run."""
    run = {"config": {}, "history": [], "summary": {}, "group": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "config":
            run["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            run["group"] = record.run.run_group or None
        elif kind == "summary":
            run["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return run
