"""`make gpu-check` on a machine without a GPU: it says so and exits 0 after the CPU part (the GPU
machine runs the same script for the GPU tests and figures; see README "GPU figures")."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine `make gpu-check` itself is the check")
def test_gpu_check_without_a_gpu_says_so_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(out), "--budget-s", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no CUDA GPU on this machine" in proc.stdout
    env = json.loads((out / "env.json").read_text())
    assert env["gpu"] is None and env["torch"] == torch.__version__ and env["cpus"] >= 1
    report = (out / "gpu.md").read_text()
    assert "| pytest -m gpu |" in report and "skipped" in report  # the GPU tests were collected and skipped
    assert "deselected" in (out / "pytest.log").read_text()
