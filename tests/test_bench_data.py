"""cnnfleet-bench mode=data through the real CLI: every input path at every worker count, over the same images."""

import csv
from pathlib import Path

import pytest
import torch

from conftest import run_cli

TINY = ["mode=data", "epochs=2", "data_images=40", "data_batch_size=8", "data_image_size=32", "data_workers=[0,1]"]


def test_bench_data_measures_each_input_path_at_each_worker_count(tmp_path: Path) -> None:
    result = run_cli("cnnfleet-bench", TINY, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "bench" / "runs").iterdir()
    for name in ("bench.csv", "bench.md", "bench.png", "env.json", "config.yaml"):
        assert (folder / name).is_file(), name
    rows = list(csv.DictReader((folder / "bench.csv").open()))
    paths = ["imagefolder", "shards-cpu"] + (["shards-gpu"] if torch.cuda.is_available() else [])
    assert [(r["path"], int(r["workers"])) for r in rows] == [(p, n) for n in (0, 1) for p in paths]
    for row in rows:
        speed = float(row["images_per_s"])
        assert speed > 0
        assert float(row["images_per_s_per_process"]) == pytest.approx(speed / max(1, int(row["workers"])))
    assert rows[0]["configuration"] == "PIL ImageFolder, 0 workers"
    if torch.cuda.is_available():
        assert all(bool(r["images_per_s_per_gpu"]) == (r["path"] == "shards-gpu") for r in rows)
    else:
        assert "images_per_s_per_gpu" not in rows[0]  # an empty column is left out
        assert "No CUDA device" in (folder / "bench.md").read_text()
    # the synthetic images were made and prepared into the run folder: the same 40 for every path
    assert len(list((folder / "data" / "images" / "train").rglob("*.jpg"))) == 40
    assert (folder / "data" / "shards" / "index.json").is_file()
    assert "40 training images" in result.stdout


def test_bench_data_refuses_too_few_images_for_two_batches(tmp_path: Path) -> None:
    bad = run_cli(
        "cnnfleet-bench",
        ["mode=data", "data_images=100", "data_batch_size=64", "data_workers=[0,1]"],
        tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "data_batch_size=64: the 100 training images make 1 whole batch a pass, fewer than 2 x 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    (folder,) = (tmp_path / "logs" / "bench" / "runs").iterdir()
    assert not (folder / "data").exists()  # refused before any image was made
