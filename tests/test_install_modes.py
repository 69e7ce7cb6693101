"""A wheel (non-editable install) carries conf/ and runs like the editable checkout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_uses_the_top_level_conf() -> None:
    from cnnfleet.config.search_path import conf_dir

    assert Path(conf_dir()) == REPO / "conf"


@pytest.mark.slow
def test_wheel_carries_conf_and_trains(tmp_path: Path) -> None:
    dist, target = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)], check=True)
    (wheel,) = dist.glob("cnnfleet-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    # PYTHONPATH entries come before site-packages (and the editable path), so the wheel wins
    env = {**os.environ, "PYTHONPATH": str(target), "CNNFLEET_ROOT": str(tmp_path)}
    probe = "from cnnfleet.config.search_path import conf_dir; print(conf_dir())"
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == str(target / "cnnfleet" / "conf")
    run = subprocess.run(
        [sys.executable, "-m", "cnnfleet.cli.train", "debug=fast_dev_run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/summary.json"))
