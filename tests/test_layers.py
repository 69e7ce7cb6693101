"""Imports point down the layers: a module never imports from a layer above its own.

    cli (the commands) -> tasks -> sweeps -> training, cluster,
    catalogue, bench, serving -> data, models, tracking -> run -> config -> launch -> errors

Every `cnnfleet` import counts, also those inside functions (a lazy import is still a dependency).
KNOWN lists today's upward imports, each to be removed as the layout moves (issue 28); the test
fails on a new one, and on a KNOWN one that is gone (so the list only shrinks).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cnnfleet"
LAYERS = [  # lowest first; a top-level module or package of cnnfleet per entry
    {"errors"},
    {"launch"},
    {"config"},
    {"run"},
    {"data", "models", "tracking"},
    {"training", "cluster", "catalogue", "bench", "serving"},
    {"sweeps"},
    {"tasks"},
    {"cli"},
]
KNOWN = {
    ("cnnfleet.sweeps.slots", "cnnfleet.tasks.submit"),
    ("cnnfleet.sweeps.slots", "cnnfleet.tasks.train"),
    ("cnnfleet.sweeps.slots", "cnnfleet.cli.train"),
}


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnfleet"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("cnnfleet"))
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def upward_imports(package: Path = PACKAGE) -> set[tuple[str, str]]:
    edges = {(module_name(p, package), target) for p in package.rglob("*.py") for target in imports(p)}
    return {(a, b) for a, b in edges if None not in (layer(a), layer(b)) and layer(b) > layer(a)}


def test_every_module_has_a_layer() -> None:
    tops = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(t for t in tops - {"__init__"} if layer(f"cnnfleet.{t}") is None) == []


def test_imports_point_down_the_layers() -> None:
    upward = upward_imports()
    assert upward - KNOWN == set(), "new imports from a layer above (move the code down instead)"
    assert KNOWN - upward == set(), "these are gone: remove them from KNOWN"


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "cnnfleet"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / "run" / "state.py"
    planted.write_text(planted.read_text() + "\n\ndef _late():\n    from cnnfleet.tasks.train import train\n")
    assert upward_imports(copy) - KNOWN == {("cnnfleet.run.state", "cnnfleet.tasks.train")}
