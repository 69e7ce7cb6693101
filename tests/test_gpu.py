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

    plan = plan_devices(OmegaConf.create(dict(
        accelerator="gpu", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=60
    )))  # fmt: skip
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
