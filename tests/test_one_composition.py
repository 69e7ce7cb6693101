"""A single run's config is composed once, checked once and run as Hydra's app would run it; Hydra's
flags keep their meanings (read by cnnfleet, not by Hydra's private parser). In-process."""

import ast
import shutil
from pathlib import Path

import pytest
import yaml

import cnnfleet.config.compose as compose_module
from cnnfleet.cli.flags import FlagError, parse
from conftest import run_in_process

PACKAGE = Path(__file__).resolve().parents[1] / "src"


def train(*argv: str) -> tuple[int, str, str]:
    return run_in_process("cnnfleet.cli.train", list(argv), "cnnfleet-train")


def test_a_training_run_is_composed_once_and_its_folder_records_the_decided_command(
    tmp_path: Path, monkeypatch
) -> None:
    calls = []
    real = compose_module.compose

    def counting(*args, **kwargs):
        calls.append(kwargs.get("overrides"))
        return real(*args, **kwargs)

    monkeypatch.setattr(compose_module, "compose", counting)
    monkeypatch.chdir(tmp_path)
    argv = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "test=false", "logger=csv", "seed=3"]
    code, out, err = train(*argv)
    assert code == 0, err[-3000:]
    assert len(calls) == 1, calls  # the check, the plan and the job share one composition
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert saved == [*argv, "ckpt_path=null"]
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["run"]["dir"] == str(run) and hydra["job"]["name"] == "train" and hydra["mode"] == "RUN"
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == 3
    assert "hydra" not in yaml.safe_load((run / "config.yaml").read_text())
    assert (run / "train.log").is_file() and "run folder" in (run / "train.log").read_text()


def test_config_path_replaces_the_primary_folder_for_the_run_and_for_hydras_app(tmp_path: Path) -> None:
    conf = Path(compose_module.conf_dir())
    mine = tmp_path / "conf"
    shutil.copytree(conf, mine)
    text = (mine / "train.yaml").read_text()
    assert "\nseed: 42 " in text
    (mine / "train.yaml").write_text(text.replace("\nseed: 42 ", "\nseed: 7 "))
    code, out, err = train("--config-path", str(mine), "--cfg", "job")
    assert code == 0 and yaml.safe_load(out)["seed"] == 7, err
    code, out, err = train("--config-path", str(mine), "--check", "trainer.max_epochs=1")
    assert code == 0, err
    code, _, err = train("--config-path", str(tmp_path / "nowhere"), "--check")
    assert code == 2 and "--config-path" in err and "no such folder" in err and err.count("\n") == 1


def test_hydras_flags_are_read_without_hydras_private_parser() -> None:
    line = parse(["-m", "--config-dir", "/x", "-cn", "other", "a=1", "--check"])
    assert line.multirun and line.config_dir == "/x" and line.config_name == "other" and line.check
    assert line.overrides == ["a=1"] and not line.shows
    assert parse(["a=1", "--check", "b=2"]).overrides == ["a=1", "b=2"]  # overrides on both sides of a flag
    assert parse(["--cfg", "job", "--resolve"]).prints_config and parse(["--info"]).shows
    with pytest.raises(FlagError, match="unrecognized arguments: --chek"):
        parse(["--chek"])
    with pytest.raises(FlagError, match="invalid choice"):
        parse(["--cfg", "jobs"])
    private = [
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "cnnfleet").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if any(name.startswith("hydra._internal") for name in imported(node))
    ]
    assert private == [], "cnnfleet imports Hydra's private modules"


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names] if isinstance(node, ast.Import) else []


def test_submit_refuses_a_sweep_in_one_line() -> None:
    code, _, err = run_in_process("cnnfleet.cli.submit", ["-m", "seed=1,2"], "cnnfleet-submit")
    assert code == 2 and "cnnfleet-train -m launcher=slurm" in err and err.count("\n") == 1
