"""slurm/*.sbatch are exactly what cnnfleet-submit renders today (regenerate with the script)."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("render_slurm_examples", REPO / "scripts" / "render_slurm_examples.py")
examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(examples)


@pytest.mark.parametrize("name", sorted(examples.EXAMPLES))
def test_example_script_is_up_to_date(name: str) -> None:
    expected = examples.render_example(examples.EXAMPLES[name])
    assert (REPO / "slurm" / name).read_text() == expected, "run scripts/render_slurm_examples.py"


def test_examples_launch_one_task_per_gpu() -> None:
    text = (REPO / "slurm" / "multi_node_gpus.sbatch").read_text()
    assert "#SBATCH --nodes=4" in text and "#SBATCH --ntasks-per-node=8" in text and "--gpus-per-node=8" in text
    assert "device.devices=8 device.num_nodes=4" in text


@pytest.mark.parametrize("name", sorted(examples.EXAMPLES))
def test_example_scripts_are_valid_bash(name: str) -> None:
    proc = subprocess.run(["bash", "-n", str(REPO / "slurm" / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_container_jobs_run_the_images_cnnfleet_with_the_project_mounted() -> None:
    pyxis = (REPO / "slurm" / "multi_node_pyxis.sbatch").read_text()
    srun = next(line for line in pyxis.splitlines() if line.startswith("srun --kill-on-bad-exit=1"))
    assert "--container-image=/path/to/cnnfleet.sqsh" in srun and "--container-workdir=/path/to/project" in srun
    assert "--container-mounts=/datasets:/datasets:ro,/path/to/project:/path/to/project" in srun
    assert " cnnfleet-train cluster=multi_node" in srun and ".venv/bin/cnnfleet-train" not in srun
    assert "python3 -m cnnfleet.cluster.job_end" in pyxis  # the epilogue runs where cnnfleet is installed
    apptainer = (REPO / "slurm" / "single_node_apptainer.sbatch").read_text()
    srun = next(line for line in apptainer.splitlines() if line.startswith("srun --kill-on-bad-exit=1"))
    assert (
        "apptainer exec --nv --bind /datasets,/path/to/project --pwd /path/to/project /path/to/cnnfleet.sif "
        "cnnfleet-train" in srun
    )
    host = (REPO / "slurm" / "single_node_gpus.sbatch").read_text()
    assert "srun --kill-on-bad-exit=1 /path/to/project/.venv/bin/cnnfleet-train" in host
    assert "/path/to/project/.venv/bin/python -m cnnfleet.cluster.job_end" in host


@pytest.mark.parametrize("name", ["Dockerfile", "cnnfleet.def"])
def test_container_recipes_pin_the_projects_torch_on_its_cuda_build(name: str) -> None:
    import re

    import torch

    recipe = (REPO / "container" / name).read_text()
    pins = dict(re.findall(r'"(torch|torchvision)==([\d.]+)"', (REPO / "pyproject.toml").read_text()))
    assert f"torch=={pins['torch']} torchvision=={pins['torchvision']}" in recipe
    cuda = torch.version.cuda or "13.0"  # the CUDA build pip installs here (a CPU build reports None)
    assert f"nvidia/cuda:{cuda}.0-base" in recipe and f"whl/cu{cuda.replace('.', '')}" in recipe
