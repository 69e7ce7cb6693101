"""Fast paths and cnnfleet-bench: on-device data, channels_last, EMA, compile; every bench mode at tiny size."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cnnfleet.data.on_device import DeviceBatches
from cnnfleet.data.sharding import TrainingSampler, even_eval_batches
from conftest import run_cli

TINY = [
    "data=synthetic",
    "data.num_samples=300",
    "data.image_size=8",
    "data.channels=3",
    "data.batch_size=32",
    "model=simple_cnn",
    "model.widths=[8,16]",
]


@pytest.mark.parametrize(("n", "world"), [(100, 1), (100, 2), (101, 2), (64, 4)])
def test_on_device_batches_are_the_dataloader_batches(n: int, world: int) -> None:
    images, labels = torch.randn(n, 1, 4, 4), torch.arange(n)
    dataset = TensorDataset(images, labels)
    for rank in range(world):
        loader_sampler = TrainingSampler(dataset, num_replicas=world, rank=rank, seed=3, global_batch=8 * world)
        loader = DataLoader(dataset, batch_size=8, sampler=loader_sampler)
        device_sampler = TrainingSampler(range(n), num_replicas=world, rank=rank, seed=3, global_batch=8 * world)
        batches = DeviceBatches(images, labels, sampler=device_sampler, batch_size=8)
        assert len(batches) == len(loader) == n // (8 * world)  # whole global batches only
        for epoch in range(2):
            loader_sampler.set_epoch(epoch)
            batches.sampler.set_epoch(epoch)  # what Lightning calls through `.sampler`
            for (x1, y1), (x2, y2) in zip(loader, batches, strict=True):
                assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_an_epoch_visits_every_sample_once_across_ranks() -> None:
    n, world = 100, 2  # 5 global batches of 20: training drops no sample
    labels = torch.arange(n)
    seen = []
    for rank in range(world):
        sampler = TrainingSampler(range(n), num_replicas=world, rank=rank, seed=0, global_batch=20)
        seen += [int(i) for _, y in DeviceBatches(torch.zeros(n, 1), labels, sampler=sampler, batch_size=10) for i in y]
        evaluated = DeviceBatches(torch.zeros(n, 1), labels, batches=even_eval_batches(n, world, rank, 10))
        assert sum(len(y) for _, y in evaluated) == n // world
    assert sorted(seen) == list(range(n))


def test_on_device_and_dataloader_paths_give_identical_runs(tmp_path: Path) -> None:
    results = []
    for on_device in ("true", "false"):
        root = tmp_path / on_device
        root.mkdir()
        result = run_cli("cnnfleet-train", ["trainer.max_epochs=2", "logger=csv", f"data.on_device={on_device}"], root)
        assert result.returncode == 0, result.stderr[-3000:]
        results.append(result.summary())
    assert results[0]["test"] == results[1]["test"]  # bit-identical on CPU
    assert results[0]["fit"]["final_val"] == results[1]["fit"]["final_val"]


def test_ema_and_channels_last_train_and_ema_is_what_is_evaluated(tmp_path: Path) -> None:
    result = run_cli(
        "cnnfleet-train",
        [*TINY, "trainer.max_epochs=2", "logger=csv", "trainer.ema_decay=0.9", "trainer.channels_last=true"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = result.run_dirs()[-1]
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    ema = {k.removeprefix("ema_net."): v for k, v in state.items() if k.startswith("ema_net.")}
    live = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    assert ema.keys() == live.keys()
    assert any(not torch.equal(ema[k], live[k]) for k in ema if ema[k].is_floating_point())
    # channels_last: the trained convolution weights are NHWC in memory (torch.save keeps the strides)
    convs = [v for v in live.values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in convs)
    # evaluation uses the EMA weights: the exported network is the EMA one
    exported = run_cli("cnnfleet-export", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}"], tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    (export_dir,) = (tmp_path / "logs" / "export" / "runs").iterdir()
    from safetensors.torch import load_file

    weights = load_file(str(export_dir / "model.safetensors"))
    assert all(torch.equal(weights[k], ema[k]) for k in weights)


@pytest.mark.slow
def test_compile_trains_a_tiny_net_on_cpu() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        message = "torch.compile on CPU needs a C compiler (cc/gcc) and none is installed"
        if os.environ.get("CI") == "true":  # in CI a missing dependency fails, never skips
            pytest.fail(message)
        pytest.skip(message)
    from cnnfleet.models import create_model

    torch.manual_seed(0)
    net = create_model("simple_cnn", in_channels=1, num_classes=3, widths=[4, 8])
    eager = create_model("simple_cnn", in_channels=1, num_classes=3, widths=[4, 8])
    eager.load_state_dict(net.state_dict())
    net.compile()
    x = torch.randn(4, 1, 8, 8)
    out = net(x)
    out.sum().backward()
    assert torch.allclose(out, eager(x), atol=1e-5)
    assert set(net.state_dict()) == set(eager.state_dict())  # checkpoints keep their keys


def bench_folder(root: Path) -> Path:
    (folder,) = (root / "logs" / "bench" / "runs").iterdir()
    for name in ("bench.csv", "bench.md", "bench.png", "env.json", "config.yaml"):
        assert (folder / name).is_file(), name
    return folder


def rows(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "bench.csv").open()))


WORKLOAD = (
    'workload=["data=synthetic","data.num_samples=300","data.image_size=8","data.channels=3",'
    '"data.batch_size=32","model=simple_cnn","model.widths=[8,16]"]'
)


def test_bench_overhead_compares_against_the_hand_written_loop(tmp_path: Path) -> None:
    result = run_cli("cnnfleet-bench", ["mode=overhead", "epochs=2", "repeats=1", WORKLOAD], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = bench_folder(tmp_path)
    loops = rows(folder)
    assert [r["loop"].split()[0] for r in loops] == ["cnnfleet", "bare", "hand-written"]
    assert all(float(r["images_per_s"]) > 0 for r in loops)
    report = (folder / "bench.md").read_text()
    assert "ratio cnnfleet / hand-written" in report and "+ Lightning's loop" in report
    assert json.loads((folder / "env.json").read_text())["hardware"]["cpus"] >= 1
    assert "runs" not in loops[0]  # one repeat: no column repeating the median
    console = result.stdout + result.stderr
    assert "Tip" not in console  # Lightning's product tips
    assert console.count("GPU available:") == 2, console  # once per Trainer (cnnfleet's, bare Lightning's)


def test_bench_devices_reports_cpu_and_says_when_no_gpu(tmp_path: Path) -> None:
    result = run_cli("cnnfleet-bench", ["mode=devices", "epochs=2", "target_accuracy=0.1", WORKLOAD], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = bench_folder(tmp_path)
    table = rows(folder)
    assert table[0]["configuration"].startswith("CPU") and float(table[0]["speedup_over_cpu"]) == 1.0
    if not torch.cuda.is_available():
        assert len(table) == 1 and "No GPU present" in (folder / "bench.md").read_text()
    # the time to a reached target is reported: 12 steps (2 epochs of 210 // 32 whole batches) beat chance
    # (10 classes, 4 of 30 val images right); 20% took the 14 steps the partial batches used to add
    assert table[0]["time_to_target_s"]


@pytest.mark.slow
def test_bench_scaling_measures_ddp_efficiency(tmp_path: Path) -> None:
    result = run_cli(
        "cnnfleet-bench",
        ["mode=scaling", "epochs=2", "repeats=1", "processes=[1,2]", "accelerator=cpu", WORKLOAD],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(bench_folder(tmp_path))
    assert [int(r["processes"]) for r in table] == [1, 2]
    assert float(table[0]["efficiency"]) == 1.0 and float(table[1]["efficiency"]) > 0


def test_bench_rejects_a_bad_mode_and_a_bad_workload(tmp_path: Path) -> None:
    bad = run_cli("cnnfleet-bench", ["mode=fastest"], tmp_path)
    assert bad.returncode == 2 and "mode='fastest': is not one of the choices" in bad.stderr
    bad = run_cli("cnnfleet-bench", ['workload=["model=resnet"]'], tmp_path)
    assert bad.returncode == 2 and "workload: unknown option 'resnet' for group 'model'" in bad.stderr
    assert "Traceback" not in bad.stderr
