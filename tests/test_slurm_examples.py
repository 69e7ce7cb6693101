"""slurm/*.sbatch are exactly what cnnfleet-submit renders today (regenerate with the script)."""

import importlib.util
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
