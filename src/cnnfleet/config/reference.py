"""Every config key with its domain, default and meaning, written from the schema itself.

One source feeds `--help` (`${cnnfleet_keys:<job>}` in conf/hydra/default.yaml) and
docs/config.md (`python -m cnnfleet.config.reference > docs/config.md`; a test keeps the file
current), so neither can drift from what `domains.check_config` enforces.
"""

import inspect
import re
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from pathlib import Path

from cnnfleet.config.domains import describe_field

JOB_SCHEMAS = {
    "train": "train_schema",
    "submit": "train_schema",
    "evaluate": "eval_schema",
    "eval": "eval_schema",
    "predict": "predict_schema",
    "export": "export_schema",
    "benchmark": "bench_schema",
    "bench": "bench_schema",
}


@cache
def field_comments(cls: type) -> dict[str, str]:
    """`name: type = ...  # comment` and the `# ...` lines right above a field, per field name."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass) or klass is object:
            continue
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("# ").strip())
                continue
            found = re.match(r"\s+(\w+):\s*[^=]+=.*?(?:#\s*(.*))?$", line)
            if found and not stripped.startswith(("def ", "@")):
                text = " ".join([*pending, found.group(2) or ""]).strip()
                text = re.sub(r"\s*(fmt: skip|noqa: \w+)\s*$", "", text)
                if text or found.group(1) not in comments:
                    comments[found.group(1)] = text
            pending = []
    return comments


def _default(f) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if value == "???":
        return "required"
    return str(value).lower() if isinstance(value, bool) else str(value)


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, domain, default, meaning) for each field of a schema that a user sets."""
    comments = field_comments(cls)
    out = []
    for f in fields(cls):
        if f.name.startswith("_") or is_dataclass(f.type) or f.type is object:
            continue
        if f.name in ("data", "model", "optimizer", "scheduler", "logger", "callbacks") and prefix == "":
            continue  # groups: listed with their own schemas
        out.append((f"{prefix}{f.name}", describe_field(f), _default(f), comments.get(f.name, "")))
    return out


def sections(primary: str) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """(title, rows) for a primary config and every group schema it composes."""
    from cnnfleet.config.schema import GROUP_SCHEMAS, PRIMARY_SCHEMAS, TARGET_SCHEMAS

    cls = PRIMARY_SCHEMAS[primary]
    out = [(f"{primary.removesuffix('_schema')} (top level)", rows(cls))]
    groups = {f.name for f in fields(cls)}
    for group, schemas in GROUP_SCHEMAS.items():
        if group not in groups:
            continue
        for name, schema in schemas.items():
            title = group if len(schemas) == 1 else f"{group} ({name.removesuffix('_schema')} options)"
            out.append((title, rows(schema, f"{group}.")))
    if primary == "train_schema":
        for schema in TARGET_SCHEMAS.values():
            out.append((schema.NODE, rows(schema, f"{schema.NODE}.")))
    return out


def help_text(job: str) -> str:
    """Plain lines for --help: key, domain, default."""
    lines = []
    for title, table in sections(JOB_SCHEMAS.get(job, "train_schema")):
        lines.append(f"  [{title}]")
        width = max(len(key) for key, *_ in table) if table else 0
        lines.extend(f"    {key:<{width}}  {domain}; default {default}" for key, domain, default, _ in table)
    # Hydra fills its help template with string.Template: a default such as logger.mlflow's
    # "file:${paths.log_dir}/mlruns" must reach it as "$${...}" to print as written
    return "\n".join(lines).replace("$", "$$")


def markdown() -> str:
    out = [
        "# Config keys: domains and defaults",
        "",
        "Generated from src/cnnfleet/config/schema.py by `python -m cnnfleet.config.reference > docs/config.md`",
        "(tests/test_domains.py fails when this file is out of date). Every value is checked against its",
        "domain right after composition, before torch is imported: outside it, the command prints one",
        "line naming the key, the value and the domain, and exits with code 2 (docs/errors.md).",
        "Floats must be finite everywhere. `required` keys have no default.",
        "",
    ]
    for primary in ("train_schema", "eval_schema", "predict_schema", "export_schema", "bench_schema"):
        out.append(f"## {primary.removesuffix('_schema')}")
        out.append("")
        for title, table in sections(primary):
            if primary != "train_schema" and not title.endswith("(top level)"):
                continue  # device/paths: as in train
            out += [f"### {title}", "", "| key | domain | default | meaning |", "|---|---|---|---|"]
            out += [f"| `{k}` | {_cell(d)} | `{v}` | {_cell(m)} |" for k, d, v, m in table]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")  # a pipe inside a Markdown table cell


def docs_path() -> Path:
    return Path(__file__).resolve().parents[3] / "docs" / "config.md"


if __name__ == "__main__":
    print(markdown(), end="")
