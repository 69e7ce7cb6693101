"""Each config key's domain, declared beside the key in schema.py and checked right after composition.

A schema field is written `key(default, *rules)`: the rules are annotated_types constraints
(Gt, Ge, Lt, Le, Len, MaxLen; the vocabulary pydantic reads) plus a few of ours (OneOf, PathRule,
Pattern, Each, Typed). `check_config` turns the composed config into one ConfigError line naming the
first key whose value is outside its domain; `describe` writes the same rules as text for `--help`
and docs/config.md, so the docs cannot drift from the check.

Why pydantic: OmegaConf's structured configs check types but have no value constraints, and
Hydra cannot compose pydantic models. Keeping OmegaConf dataclasses for composition and putting
the constraints in each field's metadata lets pydantic's TypeAdapter check them (numbers, lengths,
unions, strictness) without a second schema; pydantic is already installed with wandb.
Floats must be finite everywhere (NaN and inf are never a sensible setting).
"""

import dataclasses
import math
import os
import re
from dataclasses import MISSING as DC_MISSING
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import AfterValidator, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticError

from cnnfleet.errors import ConfigError

NAME_MAX = 255  # bytes in one path component (ext4, xfs, Lustre, NFS)
PATH_MAX = 4096
OBJECT_URL = r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s'\"\\]{0,1000})?"  # S3 bucket naming rules


# ---------------------------------------------------------------- our rules


@dataclass(frozen=True)
class OneOf:
    """The value is one of these (strings compared as written)."""

    choices: tuple

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", choices)

    def check(self, value: Any) -> str | None:
        return None if value in self.choices else "is not one of the choices"

    def text(self) -> str:
        return "one of " + " | ".join(map(str, self.choices))


@dataclass(frozen=True)
class Pattern:
    """A regular expression the whole string matches; `what` says it in words."""

    regex: str
    what: str

    def check(self, value: Any) -> str | None:
        return None if re.fullmatch(self.regex, str(value)) else "is not allowed"

    def text(self) -> str:
        return self.what


SPECIAL_FILESYSTEMS = {
    *("proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs"),
    *("tracefs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "efivarfs", "binfmt_misc"),
}


def mount_type(path: Path) -> str | None:
    """The filesystem type of the mount holding `path` (longest mount point prefix), from /proc/self/mounts."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    target = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def path_text_problem(value: str) -> str | None:
    """What makes a string unusable as a path on Linux, before any file is touched."""
    if "\x00" in value:
        return "contains a NUL character"
    if len(value.encode()) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    long = next((part for part in value.split("/") if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        return f"has a component longer than {NAME_MAX} bytes ({long[:20]}...)"
    return None


def expand_user(text: str) -> Path:
    """`~/x` as the home folder; `~name` of an unknown user stays as written (expanduser would raise)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def creatable_problem(path: Path) -> str | None:
    """Why a folder could not be created at `path` (None: it exists as a folder or could be made)."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            return "is a file, not a folder"
        ancestor = path
    else:
        ancestor = nearest_existing(path)
        if not ancestor.is_dir():
            return f"cannot be created: {ancestor} is a file, not a folder"
    kind = mount_type(ancestor)
    if kind in SPECIAL_FILESYSTEMS:
        return f"is on a {kind} filesystem, which holds no user files"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is not writable"
    return None


@dataclass(frozen=True)
class PathRule:
    """A path of a kind: text (any path-shaped string), dir (an existing folder), file (an
    existing file), dir_or_new (an existing or creatable folder), dir_or_url (an existing folder or
    an object-store URL s3://bucket/prefix). `also` are words taken as they are (e.g. `last`)."""

    kind: str
    also: tuple = ()
    hint: str = ""  # what the path should hold, for the message

    def check(self, value: Any) -> str | None:
        text = str(value)
        if text in self.also:
            return None
        if not text:
            return "is empty; give a path"
        if self.kind == "dir_or_url" and "://" in text:
            return None if re.fullmatch(OBJECT_URL, text) else "is not an object-store URL s3://<bucket>/<prefix>"
        problem = path_text_problem(text)
        if problem or self.kind == "text":
            return problem
        path = expand_user(text)
        if self.kind in ("dir", "dir_or_url"):
            return None if path.is_dir() else ("is a file, not a folder" if path.exists() else "does not exist")
        if self.kind == "file":
            if path.is_dir():
                return "is a folder, not a file"
            if path.exists() and not path.is_file():
                return "is not a regular file (a device, a pipe or a socket)"
            return None if path.is_file() else "does not exist"
        return creatable_problem(path)

    def text(self) -> str:
        words = {
            "text": "a path",
            "dir": "an existing folder",
            "file": "an existing file",
            "dir_or_new": "a folder that exists or can be created",
            "dir_or_url": "an existing folder or an s3://<bucket>/<prefix> URL",
        }[self.kind]
        return words + (f" {self.hint}" if self.hint else "") + "".join(f" or `{word}`" for word in self.also)


@dataclass(frozen=True)
class Each:
    """Rules for every item of a list."""

    rules: tuple

    def __init__(self, *rules: Any) -> None:
        object.__setattr__(self, "rules", rules)


@dataclass(frozen=True)
class Typed:
    """The accepted type when the field's annotation is wider (Any: an int or a word, ...)."""

    type: Any
    words: str


# ---------------------------------------------------------------- declaring a key


def key(default: Any = DC_MISSING, *domain: Any, factory: Any = None, rules: tuple = ()) -> Any:
    """A schema field with its domain: key(0.1, Ge(0), Lt(1)); key(factory=list, rules=(...)) for lists."""
    meta = {"domain": (*domain, *rules)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def rules_of(f: dataclasses.Field) -> tuple:
    return f.metadata.get("domain", ())


# ---------------------------------------------------------------- checking


def _ours(rule: Any) -> bool:
    return hasattr(rule, "check")


def _validator(rule: Any) -> AfterValidator:
    def run(value: Any) -> Any:
        problem = rule.check(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(run)


def _finite(value: float) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _constrain(base: Any, rules: tuple) -> Any:
    """`Annotated[base, ...]` for pydantic: numeric/length constraints, our rules as validators."""
    extra: list[Any] = []
    for rule in rules:
        if isinstance(rule, Each) and get_origin(base) is list:
            (item,) = get_args(base) or (Any,)
            base = list[_constrain(item, rule.rules)]
        elif isinstance(rule, Typed):
            continue
        else:
            extra.append(_validator(rule) if _ours(rule) else rule)
    if base is float:
        extra.insert(0, AfterValidator(_finite))
    return Annotated[tuple([base, *extra])] if extra else base  # type: ignore[valid-type]


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    args = get_args(annotation)
    if get_origin(annotation) in (Union, type(int | None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


@cache
def _adapter(owner: type, name: str) -> tuple[TypeAdapter, bool]:
    f = next(f for f in fields(owner) if f.name == name)
    rules = rules_of(f)
    typed = next((r for r in rules if isinstance(r, Typed)), None)
    base, nullable = _strip_none(typed.type if typed else f.type)
    nullable = nullable or f.default is None  # a key whose default is null accepts null
    strict = ConfigDict(strict=True)
    return TypeAdapter(_constrain(base, rules), config=strict), nullable


def _message(error: PydanticError) -> str:
    if error.error_count() > 1:  # a union: every branch failed, the expected domain says it best
        return "is not accepted"
    first = error.errors()[0]
    text = str(first["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(prefix)
    where = [str(p) for p in first["loc"] if isinstance(p, int)]
    return (f"item {where[0]} " if where else "") + text[0].lower() + text[1:]


def check_value(owner: type, name: str, value: Any) -> str | None:
    """Why `value` is outside the domain of `owner.name` (None: inside)."""
    adapter, nullable = _adapter(owner, name)
    if value is None:
        return None if nullable else "must be set (null is not allowed here)"
    try:
        adapter.validate_python(value)
    except PydanticError as error:
        return _message(error)
    return None


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked(f: dataclasses.Field) -> bool:
    return bool(rules_of(f)) or _strip_none(f.type)[0] is float


# schemas of untyped nodes (the logger and callbacks groups are dicts of named parts), by _target_
TARGET_SCHEMAS: dict[str, type] = {}


def problems(node: DictConfig, prefix: str = "", skip: tuple = ()) -> list[str]:
    """Every domain violation under `node`, as `key=value: why (expected domain)` lines, in key order."""
    found: list[str] = []
    owner = OmegaConf.get_type(node)
    if (owner is None or owner is dict) and isinstance(node.get("_target_"), str):
        owner = TARGET_SCHEMAS.get(node._target_, owner)
    if owner is not None and is_dataclass(owner):
        for f in fields(owner):
            if f.name not in node or OmegaConf.is_missing(node, f.name) or not _checked(f):
                continue
            value = _plain(node[f.name])
            why = check_value(owner, f.name, value)
            if why:
                found.append(f"{prefix}{f.name}={_show(value)}: {why} (expected {describe_field(f)})")
        cross = getattr(owner, "cross_check", None)
        if cross is not None and not found:
            found.extend(f"{prefix}{line}" for line in cross(node))
    for name in node:
        child = node._get_node(name)
        if name in skip or not isinstance(child, DictConfig) or child._is_none() or child._is_missing():
            continue
        found.extend(problems(child, f"{prefix}{name}."))
    return found


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key outside its domain (Hydra's own node is not ours)."""
    found = problems(cfg, skip=("hydra",))
    if found:
        raise ConfigError(found[0])


# ---------------------------------------------------------------- describing


_SYMBOL = {at.Gt: ">", at.Ge: ">=", at.Lt: "<", at.Le: "<="}


def _rule_text(rule: Any) -> str:
    for kind, symbol in _SYMBOL.items():
        if isinstance(rule, kind):
            bound = next(iter(dataclasses.asdict(rule).values()))
            return f"{symbol} {bound:g}" if isinstance(bound, float) else f"{symbol} {bound}"
    if isinstance(rule, at.Len):
        if rule.min_length == rule.max_length:
            return f"length {rule.min_length}"
        return f"length {rule.min_length}..{rule.max_length}"
    if isinstance(rule, at.MinLen):
        return f"length >= {rule.min_length}"
    if isinstance(rule, at.MaxLen):
        return f"length <= {rule.max_length}"
    if isinstance(rule, Each):
        return "each " + ", ".join(_rule_text(r) for r in rule.rules)
    if isinstance(rule, Typed):
        return rule.words
    return rule.text()


def _type_text(annotation: Any) -> str:
    base, nullable = _strip_none(annotation)
    names = {int: "int", float: "float", str: "string", bool: "bool"}
    if get_origin(base) is list:
        (item,) = get_args(base) or (Any,)
        text = f"list of {names.get(item, 'values')}"
    elif get_origin(base) is Literal:
        text = " | ".join(map(str, get_args(base)))
    else:
        text = names.get(base, "value")
    return text + (" or null" if nullable else "")


def describe_field(f: dataclasses.Field) -> str:
    rules = rules_of(f)
    typed = next((r for r in rules if isinstance(r, Typed)), None)
    head = typed.words if typed else _type_text(f.type)
    if typed and (type(None) in get_args(f.type) or f.default is None):
        head += " or null"
    parts = [_rule_text(r) for r in rules if not isinstance(r, Typed)]
    if f.type is float or _strip_none(f.type)[0] is float:
        parts.append("finite")
    if head.startswith("string") and len(rules) == 1 and _ours(rules[0]):  # the rule's words say it all
        return parts[0] + (" or null" if head.endswith("or null") and "null" not in parts[0] else "")
    return head + (": " + ", ".join(parts) if parts else "")
