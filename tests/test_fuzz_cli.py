"""Property-based fuzzing of every config key of every command, through the CLI's `--check`.

For each leaf key of each command's composed config, hypothesis draws values from the boundary and
wrong-type space (negative, zero, huge, NaN, inf, empty and wrong-length lists, long strings,
unicode, paths to files / folders / missing / special filesystems) and runs the command's real
entry point with `--check <key>=<value>` in this process (a subprocess per example would cost ~8 s
of imports each; `test_check_every_command` runs the console scripts themselves). Asserted for
every example: exit code 0 or 2, no traceback (any exception fails the test), at most one line on
stderr, `<prog>: error: ...` on refusal, and nothing created or changed in the scratch folder.

The example count is fixed and the search derandomized (seeded), so CI runs the same examples
every time; README "Bad input" quotes the count.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from cnnfleet.config.compose import compose_config
from cnnfleet.config.schema import register_configs
from conftest import run_in_process

EXAMPLES_PER_COMMAND = 45  # x 6 commands = 270 examples in CI
COMMANDS = {  # command -> (entry module, config name, required overrides)
    "cnnfleet-train": ("cnnfleet.cli.train", "train", []),
    "cnnfleet-submit": ("cnnfleet.cli.submit", "train", []),
    "cnnfleet-eval": ("cnnfleet.cli.evaluate", "eval", ["ckpt_path={ckpt}"]),
    "cnnfleet-predict": ("cnnfleet.cli.predict", "predict", ["ckpt_path={ckpt}", "inputs={image}"]),
    "cnnfleet-export": ("cnnfleet.cli.export", "export", ["ckpt_path={ckpt}"]),
    "cnnfleet-bench": ("cnnfleet.cli.bench", "bench", []),
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, default_run) -> dict:
    """A folder with a checkpoint, an image, a file and a folder for path values; cwd for every example."""
    root = tmp_path_factory.mktemp("fuzz")
    (ckpt,) = default_run.run_dirs()[-1].glob("checkpoints/best.ckpt")
    Image.new("L", (8, 8), 128).save(root / "digit.png")
    (root / "a_file.txt").write_text("not a checkpoint, not a folder\n")
    (root / "a_folder").mkdir()
    return {"root": root, "ckpt": str(ckpt), "image": str(root / "digit.png")}


def leaves(node: DictConfig, prefix: str = "") -> list[str]:
    """Every leaf key of a composed config (lists are leaves), Hydra's own node excluded."""
    keys = []
    for name in node:
        if prefix == "" and name == "hydra":
            continue
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not child._is_none() and len(child):
            keys.extend(leaves(child, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def values(scratch: dict) -> st.SearchStrategy[str]:
    """Override values (Hydra syntax) from the boundary and wrong-type space."""
    root = scratch["root"]
    fixed = [
        "0",
        "-1",
        "1",
        "2",
        "3",
        "-0.0",
        "0.5",
        "1.0",
        "1.5",
        "nan",
        "inf",
        "-inf",
        "1e308",
        "-1e-300",
        "999999999999",
        "9223372036854775808",
        "null",
        "true",
        "false",
        "[]",
        "[1]",
        "[0,0]",
        "[-1,-1]",
        "[1,2,3,4,5,6,7,8,9]",
        "[a,b]",
        "[null]",
        "[0.5,nan]",
        "''",
        "' '",
        "auto",
        "abc",
        "ünïcødé☃",
        "'a/b'",
        "'%?#:'",
        "'" + "x" * 300 + "'",
        "'" + "y" * 5000 + "'",
        f"'{root}/a_file.txt'",
        f"'{root}/a_folder'",
        f"'{root}/missing/deeper'",
        "/proc/x",
        "/sys/x",
        "/dev/null",
        f"'{root}/{'z' * 300}'",
        "last",
        "'val/acc'",
        "maximize",
        "bf16-mixed",
        "cpu",
        "gpu",
        "ddp",
    ]
    drawn = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.lists(st.integers(-5, 100_000), max_size=6).map(lambda xs: "[" + ",".join(map(str, xs)) + "]"),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="'\\\x00"), max_size=40).map(
            lambda s: f"'{s}'"
        ),
    )
    return st.one_of(st.sampled_from(fixed), drawn)


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_fuzz_every_key_with_check(prog: str, scratch: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    module, config_name, required = COMMANDS[prog]
    required = [r.format(**scratch) for r in required]
    root = scratch["root"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("CNNFLEET_ROOT", str(root))
    monkeypatch.setenv("WANDB_MODE", "offline")
    register_configs()
    keys = leaves(compose_config(config_name, required))
    before = snapshot(root)
    seen: list[tuple[str, str, int]] = []

    @settings(
        max_examples=EXAMPLES_PER_COMMAND,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(key=st.sampled_from(keys), value=values(scratch))
    def one(key: str, value: str) -> None:
        code, _, err = run_in_process(module, ["--check", *required, f"{key}={value}"], prog)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code in (0, 2), f"{key}={value}: exit {code}: {err[-2000:]}"
        assert len(lines) <= 1, f"{key}={value}: more than one line on stderr:\n{err[-3000:]}"
        if code == 2:
            assert lines and lines[0].startswith(f"{prog}: error: "), f"{key}={value}: {err}"
        assert snapshot(root) == before, f"{key}={value}: files were created or changed in {root}"
        seen.append((key, value, code))

    one()
    assert len(seen) >= EXAMPLES_PER_COMMAND * 0.9
    assert {code for *_, code in seen} >= {2}  # the space is mostly outside the domains


def test_leaves_cover_the_schema(compose_cfg) -> None:
    """The fuzzed keys are the config's real leaves (a nested group is walked, lists are leaves)."""
    cfg = compose_cfg()
    keys = leaves(cfg)
    assert {"optimizer.lr", "data.batch_size", "trainer.max_epochs", "logger.wandb.project", "seed"} <= set(keys)
    assert not [k for k in keys if k.startswith("hydra.")]
    assert isinstance(OmegaConf.select(cfg, "data.mean"), ListConfig)
