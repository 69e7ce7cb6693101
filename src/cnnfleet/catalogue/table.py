"""Filter, sort and print catalogue rows.

Keys, for --filter and --sort: the columns run, status, task, date, device, world, wall, and any
metric a run recorded (test/acc, val/loss, ...). Filters: `key=glob` and `key!=glob` on the shown
text (`status=completed`, `run=*optuna*`), `key>=x`, `<=`, `>`, `<` on numbers (`val/acc>=0.9`);
several filters must all hold. Sorting puts the best first: metrics ascending when their name
holds "loss", else descending; date newest first; wall time shortest first; text in order.
Rows without the key always come last.
"""

import fnmatch
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cnnfleet.catalogue.records import RunRecord
from cnnfleet.errors import ConfigError

DEFAULT_METRICS = ("test/acc", "val/acc")
TEXT_KEYS = ("run", "status", "task", "device")
NUMBER_KEYS = ("date", "wall", "world")
FILTER = re.compile(r"^(?P<key>[\w/.@-]+?)(?P<op>!=|>=|<=|=|>|<)(?P<value>.*)$")
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: str


def number(record: RunRecord, key: str) -> float | None:
    if key == "date":
        return record.started.timestamp() if record.started else None
    if key == "wall":
        return record.wall_seconds
    if key == "world":
        return record.world_size
    value = record.metrics.get(key)
    return value if value is not None and math.isfinite(value) else None


def text(record: RunRecord, key: str) -> str:
    if key == "run":
        return record.name
    if key in ("status", "task", "device"):
        return str(getattr(record, key) or "-")
    if key == "date":
        return f"{record.started.astimezone():%Y-%m-%d %H:%M}" if record.started else "-"
    if key == "wall":
        return duration(record.wall_seconds)
    if key == "world":
        return str(record.world_size) if record.world_size is not None else "-"
    value = number(record, key)
    return f"{value:.4f}" if value is not None else "-"


def duration(seconds: float | None) -> str:
    """'42s', '3m05s', '2h07m'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def known_keys(records: list[RunRecord]) -> list[str]:
    metrics = sorted({key for record in records for key in record.metrics} | set(DEFAULT_METRICS))
    return [*TEXT_KEYS, *NUMBER_KEYS, *metrics]


def _check_key(key: str, records: list[RunRecord], what: str) -> None:
    keys = known_keys(records)
    if key not in keys:
        raise ConfigError(f"unknown {what} key {key!r}; one of: {', '.join(keys)}")


def check_metric(key: str, records: list[RunRecord]) -> None:
    """A --metric column: a metric some run recorded (or a default one); ConfigError listing them otherwise."""
    metrics = known_keys(records)[len(TEXT_KEYS) + len(NUMBER_KEYS) :]
    if key not in metrics:
        raise ConfigError(f"unknown metric {key!r}; the runs recorded: {', '.join(metrics)}")


def apply_filters(records: list[RunRecord], expressions: list[str]) -> list[RunRecord]:
    """The records every --filter keeps (each expression checked against every record's keys first)."""
    rules = [parse_filter(expression, records) for expression in expressions]
    return [record for record in records if all(keep(record, rule) for rule in rules)]


def parse_filter(expression: str, records: list[RunRecord]) -> Filter:
    """`status=completed`, `val/acc>=0.9`; ConfigError naming what is wrong."""
    match = FILTER.match(expression)
    if match is None:
        raise ConfigError(
            f"--filter {expression!r} is not key=value (or key!=, >=, <=, >, < value), e.g. status=completed"
        )
    parsed = Filter(match["key"], match["op"], match["value"])
    _check_key(parsed.key, records, "filter")
    if parsed.op in COMPARE:
        if parsed.key in TEXT_KEYS:
            raise ConfigError(f"--filter {expression!r}: {parsed.key} is text; compare it with = or != (globs allowed)")
        if parsed.key == "date":
            raise ConfigError(f"--filter {expression!r}: compare dates as text, e.g. 'date=2026-11-27*'")
        try:
            float(parsed.value)
        except ValueError:
            raise ConfigError(f"--filter {expression!r}: {parsed.value!r} is not a number") from None
    return parsed


def keep(record: RunRecord, rule: Filter) -> bool:
    if rule.op in COMPARE:
        value = number(record, rule.key)
        return value is not None and COMPARE[rule.op](value, float(rule.value))
    matched = fnmatch.fnmatchcase(text(record, rule.key), rule.value)
    return matched if rule.op == "=" else not matched


def sort_records(records: list[RunRecord], key: str, reverse: bool = False) -> list[RunRecord]:
    """Best first (see the module's docstring); `reverse` flips the order, rows without the key stay last."""
    _check_key(key, records, "sort")
    if key in TEXT_KEYS:
        return sorted(records, key=lambda r: text(r, key), reverse=reverse)
    descending = key == "date" or (key not in NUMBER_KEYS and "loss" not in key)
    present = [r for r in records if number(r, key) is not None]
    present.sort(key=lambda r: number(r, key), reverse=descending != reverse)
    return present + [r for r in records if number(r, key) is None]


def columns(metrics: list[str]) -> list[str]:
    return ["run", "status", "task", *metrics, "date", "device", "world", "wall", "note"]


def render(records: list[RunRecord], metrics: list[str]) -> str:
    """A plain aligned table (grep- and awk-friendly: no box characters); notes are cut at 70 characters."""
    header = columns(metrics)
    rows = [[text(r, k) if k != "note" else _cut(r.note or "", 70) for k in header] for r in records]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def as_json(records: list[RunRecord]) -> str:
    def row(r: RunRecord) -> dict[str, Any]:
        started = r.started.isoformat() if isinstance(r.started, datetime) else None
        return {
            "run": r.name,
            "path": str(r.path),
            "status": r.status,
            "task": r.task,
            "started": started,
            "device": r.device,
            "world_size": r.world_size,
            "wall_seconds": r.wall_seconds,
            "metrics": r.metrics,
            "note": r.note,
        }

    return json.dumps([row(r) for r in records], indent=2)


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."
