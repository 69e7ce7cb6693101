"""A team's own config folders: --config-dir, hydra.searchpath and CNNFLEET_CONFIG_PATH add options to
every group, for the command line's checks, --help and the run itself (one subprocess; the rest in-process)."""

from pathlib import Path

import pytest
import yaml

from cnnfleet.run.plan import original_overrides
from conftest import run_cli, run_in_process

MINE = """# a team's variant of the small CNN
defaults:
  - simple_cnn
  - _self_

widths: [8, 16]
"""


@pytest.fixture
def team(tmp_path: Path) -> Path:
    """model/mine.yaml, experiment/bad.yaml (outside a domain) and shared/experiment/quick.yaml."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(MINE)
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "bad.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: -3\n")
    (tmp_path / "shared" / "experiment").mkdir(parents=True)
    (tmp_path / "shared" / "experiment" / "quick.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 2\n")
    return tmp_path


def train(*argv: str) -> tuple[int, str, str]:
    return run_in_process("cnnfleet.cli.train", list(argv), "cnnfleet-train")


def job(stdout: str) -> dict:
    return yaml.safe_load(stdout)


def test_config_dir_adds_an_option_to_a_group(team: Path) -> None:
    code, out, err = train("--config-dir", str(team), "model=mine", "--cfg", "job")
    assert code == 0, err
    assert job(out)["model"]["widths"] == [8, 16] and job(out)["model"]["_target_"].endswith("SimpleCNN")


def test_an_unknown_option_lists_the_teams_options_too(team: Path) -> None:
    code, _, err = train("--config-dir", str(team), "model=mien")
    assert code == 2 and err.count("\n") == 1
    assert "unknown option 'mien' for group 'model'; did you mean 'mine'? Valid options: airbench, mine," in err


def test_hydra_searchpath_adds_an_option_to_a_group(team: Path) -> None:
    code, out, err = train(f"hydra.searchpath=[file://{team}]", "model=mine", "--cfg", "job")
    assert code == 0 and job(out)["model"]["widths"] == [8, 16], err


def test_a_shared_folder_from_the_environment_adds_options_and_help_lists_them(team: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNFLEET_CONFIG_PATH", f"{team}:{team / 'shared'}")
    code, out, err = train("model=mine", "experiment=quick", "--cfg", "job")
    assert code == 0 and job(out)["trainer"]["max_epochs"] == 2 and job(out)["model"]["widths"] == [8, 16], err
    code, out, _ = train("--help")
    listed = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    assert "mine" in listed["model"] and "quick" in listed["experiment"] and "digits_fast" in listed["experiment"]


def test_a_teams_values_meet_the_same_domain_checks(team: Path) -> None:
    code, _, err = train("--config-dir", str(team), "experiment=bad")
    assert code == 2 and err.count("\n") == 1 and "trainer.max_epochs" in err, err


def test_a_missing_config_dir_is_one_line(tmp_path: Path) -> None:
    code, _, err = train("--config-dir", str(tmp_path / "nothere"), "model=mine")
    assert (
        code == 2
        and err
        == f"cnnfleet-train: error: --config-dir {tmp_path / 'nothere'}: no such folder; "
        "give the folder that holds your config groups\n"
    )


def test_a_run_composed_with_config_dir_trains_it_and_its_stop_hint_repeats_it(team: Path, tmp_path: Path) -> None:
    result = run_cli(
        "cnnfleet-train",
        ["--config-dir", str(team), "model=mine", "trainer.max_steps=2", "logger=csv", "test=false"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["widths"] == [8, 16]
    assert original_overrides(run)[:2] == [f"--config-dir {team}", "model=mine"]
