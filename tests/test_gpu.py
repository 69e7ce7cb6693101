"""GPU-only checks (marker `gpu`): run where CUDA GPUs exist, skipped elsewhere."""

import pytest
import torch

from cnnfleet.training.device import plan_devices

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_one_gpu_run_uses_mixed_precision_and_learns(cli) -> None:
    result = cli("device=gpu")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.summary()
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert summary["device"]["precision"] == expected
    assert summary["test"]["test/acc"] >= 0.985


def test_autocast_is_active_inside_the_training_step() -> None:
    from omegaconf import OmegaConf

    plan = plan_devices(
        OmegaConf.create(
            dict(accelerator="gpu", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=60)
        )
    )
    dtype = torch.bfloat16 if plan.precision == "bf16-mixed" else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        out = torch.nn.Linear(8, 8).cuda()(torch.randn(4, 8, device="cuda"))
    assert out.dtype == dtype


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_uses_nccl(cli) -> None:
    result = cli("device=ddp", "device.devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.summary()["device"]["world_size"] == 2
    assert "nccl" in result.stdout.lower() + result.stderr.lower()


def test_out_of_memory_is_one_line_with_the_batch_per_device(cli) -> None:
    # 600 images of 384 px: generating 1024 of 512 px took most of this test's 62 s on an H100 machine
    result = cli(
        "device=gpu",
        "data=synthetic",
        "data.image_size=384",
        "data.num_samples=600",
        "data.val_fraction=0.05",
        "data.test_fraction=0.05",
        "data.batch_size=512",
        "model=resnet_cifar",
        "model.width=256",
        "trainer.max_epochs=1",
        "logger=csv",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cnnfleet-train: error: out of GPU memory with 512 images per device")
    assert "accumulate_grad_batches" in line and "Traceback" not in result.stderr


def test_gpu_bench_modes_run(cli, tmp_path) -> None:
    from conftest import run_cli

    for mode in ("overhead", "devices"):
        result = run_cli(
            "cnnfleet-bench",
            [f"mode={mode}", "epochs=2", "repeats=1", "precisions=[bf16-mixed]", "channels_last=[true]"],
            tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]


def test_shards_decode_on_the_gpu_like_the_workers_and_train(tmp_path) -> None:
    """data.decode=gpu: nvJPEG batches on the device, the same crops as the CPU workers' (up to the decoders'
    rounding), and a short real run that decodes every batch on the GPU."""
    from cnnfleet.cli.prepare import parse, prepare
    from cnnfleet.data.shards.loader import decode_raw
    from conftest import run_cli
    from dataset_files import write_image_folder
    from test_shards import batches, data_module

    write_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=16, size=64)
    prepare(parse([str(tmp_path / "images"), str(tmp_path / "shards"), "--shard-size", "8", "--quiet"]))
    dm = data_module(tmp_path / "shards")
    on_cpu = batches(dm.train_dataloader(), epoch=0)
    loader = dm.train_dataloader()
    loader.dataset.decode_on_device = True
    on_gpu = [decode_raw(batch, dm.spec, torch.device("cuda")) for batch in batches(loader, epoch=0)]
    assert on_gpu[0][0].is_cuda and on_gpu[0][0].dtype == torch.uint8
    for (cpu_images, cpu_labels), (gpu_images, gpu_labels) in zip(on_cpu, on_gpu, strict=True):
        assert torch.equal(cpu_labels, gpu_labels)
        assert (cpu_images.float() - gpu_images.cpu().float()).abs().mean() < 3  # IDCT rounding only
    result = run_cli(
        "cnnfleet-train",
        [
            "device=gpu",
            "data=shards",
            f"data.root={tmp_path / 'shards'}",
            "data.decode=gpu",
            "data.image_size=32",
            "data.resize_size=36",
            "data.batch_size=16",
            "model=resnet_cifar",
            "trainer.max_epochs=2",
            "logger=csv",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
