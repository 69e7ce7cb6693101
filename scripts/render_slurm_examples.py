"""Write slurm/*.sbatch: the scripts cnnfleet-submit renders, with placeholder paths.

.venv/bin/python scripts/render_slurm_examples.py          # rewrite the examples
tests/test_slurm_examples.py                               # fails when they are out of date
"""

from pathlib import Path

from hydra import compose, initialize_config_dir

from cnnfleet.cluster.sbatch import job_layout, render
from cnnfleet.config.schema import register_configs
from cnnfleet.config.search_path import conf_dir

REPO = Path(__file__).resolve().parents[1]
PROJECT = "/path/to/project"  # where the user runs cnnfleet-submit (shared file system)
EXAMPLES = {
    "single_node_gpus.sbatch": ["cluster=gpu_node"],
    "multi_node_gpus.sbatch": ["cluster=multi_node", "optimizer.scale_lr_with_batch=true", "data.batch_size=2048"],
    "multi_node_pyxis.sbatch": [
        "cluster=multi_node",
        "cluster.container=/path/to/cnnfleet.sqsh",
        "cluster.container_mounts=[/datasets:/datasets:ro]",
    ],
    "single_node_apptainer.sbatch": [
        "cluster=gpu_node",
        "cluster.container=/path/to/cnnfleet.sif",
        "cluster.container_runtime=apptainer",
        "cluster.container_mounts=[/datasets]",
    ],
}


def render_example(overrides: list[str]) -> str:
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    layout = job_layout(cfg.cluster, overrides)
    return render(
        cfg.cluster,
        layout,
        [*overrides, *layout.device_overrides],
        workdir=PROJECT,
        root=PROJECT,
        task="train",
        output=f"{PROJECT}/logs/train/slurm/%j.out",
        token="0123456789ab",
        script=f"{PROJECT}/logs/train/submissions/<time>/job.sbatch",
        python=f"{PROJECT}/.venv/bin/python",
    )


def main() -> None:
    for name, overrides in EXAMPLES.items():
        (REPO / "slurm" / name).write_text(render_example(overrides))
        print(f"wrote slurm/{name}")


if __name__ == "__main__":
    main()
