"""Real DDP on CPU (gloo): Lightning's plain ddp through the CLI, torchrun across two 'nodes'
on 127.0.0.1, and the proof that the result does not depend on how the batch is split."""

import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import BIN, CliResult, run_cli

# 20 optimizer steps on a net without BatchNorm (torch has no CPU SyncBatchNorm), fp32, no dropout.
# B=60: the first 20 steps are full batches in both layouts (1258 samples, 2 ranks x 30).
# SGD, not Adam: Adam's first updates are ~lr * sign(g), so the 1e-8 differences of a different
# summation order flip near-zero gradients and show up as 1e-3 in the weights (measured).
# SGD at a constant, moderate learning rate, no BatchNorm: 1 and 2 ranks differ only in the order of a
# gradient's sum. Measured on this machine (relative, largest tensor): 5e-9 after 20 steps and 1.5e-8 after
# 3 epochs at lr 0.01; the same pair at the one-cycle schedule (peak 0.05) differed by 8e-5 after 3 epochs,
# and at a constant 0.05 by 3.9e-4 (rounding amplified; it passed on an earlier machine's kernels), while a
# sample-order mistake shows as ~1e-2. So 1e-5 holds with a margin of ~1000.
EQUIVALENCE = [
    "model.norm=none",
    "data.batch_size=60",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=1",
    "test=false",
    "logger=none",
    "device.accelerator=cpu",
    "optimizer=sgd",
    "scheduler=none",
    "optimizer.lr=0.01",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def final_weights(result: CliResult) -> dict[str, torch.Tensor]:
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name].double() - b[name].double()).norm() / a[name].double().norm().clamp_min(1e-12)
        assert diff <= rel, f"{name}: relative difference {diff:.2e}"


# The same comparison over 3 whole epochs: each epoch ends with 58 of the 1258 images left over, which
# neither layout trains on (the sampler keeps whole global batches only: data/sharding.py).
FULL_EPOCHS = [
    *(arg for arg in EQUIVALENCE if not arg.startswith(("trainer.max_epochs", "trainer.limit_train"))),
    "trainer.max_epochs=3",
]


@pytest.fixture(scope="module")
def ddp_two_processes(tmp_path_factory) -> CliResult:
    root = tmp_path_factory.mktemp("ddp2")
    return run_cli("cnnfleet-train", [*EQUIVALENCE, "device=ddp", "device.devices=2"], root)


@pytest.fixture(scope="module")
def ddp_two_processes_full_epochs(tmp_path_factory) -> CliResult:
    root = tmp_path_factory.mktemp("ddp2_epochs")
    return run_cli("cnnfleet-train", [*FULL_EPOCHS, "device=ddp", "device.devices=2"], root)


def test_ddp_through_the_cli_trains_two_processes_into_one_run_folder(cli) -> None:
    result = cli("device=ddp", "device.accelerator=cpu", "device.devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = result.run_dirs()  # ONE run folder for both ranks
    summary = result.summary()
    assert summary["device"]["world_size"] == 2 and summary["batch"] == {"global": 64, "per_device": 32}
    assert "ddp" in summary["device"]["description"]
    assert summary["test"]["test/acc"] >= 0.985
    assert summary["split_sizes"]["test"] == 359  # every test image counted once
    files = sorted(p.name for p in run.iterdir())
    assert files.count(".hydra") == 1 and "train_ddp_process_1.log" in files
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len((run / "command.txt").read_text().splitlines()) == 1  # rank 1 wrote no record
    assert result.stdout.count("cnnfleet run summary") == 1  # rank 0 alone prints it


@pytest.mark.slow
def test_two_ranks_train_the_same_weights_as_one_rank(tmp_path: Path, ddp_two_processes: CliResult) -> None:
    single = run_cli("cnnfleet-train", [*EQUIVALENCE, "device=cpu"], tmp_path)
    assert_same_weights(final_weights(single), final_weights(ddp_two_processes))


@pytest.mark.slow
def test_two_ranks_train_the_same_weights_as_one_rank_over_whole_epochs(
    tmp_path: Path, ddp_two_processes_full_epochs: CliResult
) -> None:
    single = run_cli("cnnfleet-train", [*FULL_EPOCHS, "device=cpu"], tmp_path)
    weights = final_weights(single)
    assert single.summary()["fit"]["global_step"] == 3 * 20  # 1258 // 60 whole batches an epoch
    assert ddp_two_processes_full_epochs.summary()["fit"]["global_step"] == 3 * 20
    assert_same_weights(weights, final_weights(ddp_two_processes_full_epochs))


@pytest.mark.slow
def test_two_torchrun_nodes_train_the_same_weights_as_one_node_with_two_processes(
    tmp_path: Path, ddp_two_processes: CliResult
) -> None:
    port = free_port()
    env = {**os.environ, "CNNFLEET_ROOT": str(tmp_path)}
    args = [*EQUIVALENCE, "device=multinode", "device.num_nodes=2", "device.devices=1"]
    nodes = [
        subprocess.Popen(
            [
                str(BIN / "torchrun"),
                "--nnodes=2",
                f"--node-rank={rank}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--rdzv-id=equiv",
                "-m",
                "cnnfleet.cli.train",
                *args,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert [r.name for r in runs] == ["torchrun-equiv"]  # both nodes agreed on one folder
    files = sorted(p.name for p in runs[0].iterdir())
    assert "train_rank1.log" in files and files.count(".hydra") == 1
    two_nodes = CliResult(0, outputs[0], "", tmp_path)
    assert_same_weights(final_weights(two_nodes), final_weights(ddp_two_processes))

    # the same --rdzv-id again: rank 0 refuses to take over the completed run before any rendezvous
    before = sorted((p.name, p.stat().st_mtime_ns) for p in runs[0].rglob("*"))
    again = run_cli(
        "cnnfleet-train",
        args,
        tmp_path,
        env={"TORCHELASTIC_RUN_ID": "equiv", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"},
    )
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr[-3000:]
    assert "holds a completed run" in again.stderr and "torchrun-equiv" in again.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in runs[0].rglob("*")) == before


TORCHRUN_4x2 = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}
BAD_DISTRIBUTED_INPUT = {
    "more-processes-than-cores": (
        ["device.accelerator=cpu", f"device.devices={(os.cpu_count() or 1) + 1}"],
        {},
        "CPU cores exist",
    ),
    "batch-not-divisible": (
        ["device=ddp", "device.accelerator=cpu", "device.devices=2", "data.batch_size=63"],
        {},
        "not divisible by the world size 2",
    ),
    "launcher-world-size-mismatch": (["device.accelerator=cpu"], TORCHRUN_4x2, "torchrun started 4 processes"),
    "torchrun-without-rdzv-id": (
        ["device.accelerator=cpu"],
        {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "RANK": "0"},
        "--rdzv-id",
    ),
    "rank-1-without-run-folder": (["device=multinode", "device.accelerator=cpu"], {"NODE_RANK": "1"}, "hydra.run.dir"),
    "sync-batchnorm-on-cpu": (
        ["device=ddp", "device.accelerator=cpu", "device.devices=2", "trainer.sync_batchnorm=true"],
        {},
        "sync_batchnorm",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DISTRIBUTED_INPUT))
def test_bad_distributed_input_gets_one_clear_line(cli, case: str) -> None:
    args, env, expected = BAD_DISTRIBUTED_INPUT[case]
    result = cli(*args, env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-3000:]


def test_unreachable_master_times_out_with_a_message(cli, tmp_path: Path) -> None:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "NODE_RANK": "1"}
    args = ["device=multinode", "device.accelerator=cpu", "device.timeout_s=5", f"hydra.run.dir={tmp_path}/run"]
    result = cli(*args, env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1 and "could not reach the other ranks" in lines[0] and "MASTER_ADDR" in lines[0]
