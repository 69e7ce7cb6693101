"""Sharding, rank detection, launcher checks and LR scaling, with hand-computed expectations."""

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from cnnfleet.data.sharding import even_eval_batches, per_device_batch
from cnnfleet.errors import ConfigError
from cnnfleet.launch.checks import check_launcher
from cnnfleet.launch.env import first_node, global_rank, intra_op_threads, launcher, slurm_port, slurm_rendezvous
from cnnfleet.run.plan import argv_overrides, follow, keyed_folder
from cnnfleet.run.state import RunState
from cnnfleet.training.device import DevicePlan, plan_devices
from cnnfleet.training.optim import resolve_optimizer


@pytest.mark.parametrize(("n", "world", "batch"), [(359, 2, 32), (65, 2, 32), (10, 3, 4), (7, 1, 64), (64, 4, 16)])
def test_eval_shards_cover_every_sample_once_in_equal_batch_counts(n: int, world: int, batch: int) -> None:
    shards = [even_eval_batches(n, world, rank, batch) for rank in range(world)]
    flat = [i for shard in shards for b in shard for i in b]
    assert sorted(flat) == list(range(n))  # no duplicates, nothing dropped
    assert len({len(shard) for shard in shards}) == 1  # same number of forward passes on every rank
    assert max(len(b) for shard in shards for b in shard) <= batch


def test_two_rank_training_batches_are_the_one_rank_batch_split_in_two() -> None:
    data, global_batch = list(range(1259)), 60
    single = list(DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=7))
    ranks = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=7)) for r in (0, 1)]
    half = global_batch // 2
    for step in range(20):
        union = ranks[0][step * half : (step + 1) * half] + ranks[1][step * half : (step + 1) * half]
        assert sorted(union) == sorted(single[step * global_batch : (step + 1) * global_batch])


def test_per_device_batch_divides_or_explains() -> None:
    assert per_device_batch(64, 4) == 16
    with pytest.raises(ConfigError, match="not divisible by the world size 3"):
        per_device_batch(64, 3)


def test_linear_lr_scaling_rule() -> None:
    cfg = {"_target_": "torch.optim.SGD", "lr": 0.1, "scale_lr_with_batch": True, "base_batch_size": 256}
    resolved = resolve_optimizer(cfg, global_batch=1024)
    assert resolved == {"_target_": "torch.optim.SGD", "lr": pytest.approx(0.4)}
    assert resolve_optimizer({**cfg, "scale_lr_with_batch": False}, 1024)["lr"] == 0.1


def device(**kw) -> OmegaConf:
    base = dict(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", precision="auto", timeout_s=60)
    return OmegaConf.create({**base, **kw})


def test_more_than_one_process_means_plain_ddp() -> None:
    plan = plan_devices(device(devices=2), env={})
    assert plan.strategy == "ddp" and plan.world_size == 2
    assert plan_devices(device(), env={}).strategy == "auto"


def test_ddp_strategy_carries_the_timeout() -> None:
    strategy = plan_devices(device(devices=2, timeout_s=42), env={}).strategy_arg()
    assert strategy._timeout.total_seconds() == 42


def test_torchrun_world_size_must_match_the_config() -> None:
    plan = DevicePlan("cpu", 2, 2, "ddp", "32-true")
    check_launcher(
        plan.devices, plan.num_nodes, {"TORCHELASTIC_RUN_ID": "r", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    )
    with pytest.raises(ConfigError, match="torchrun started 2 processes"):
        check_launcher(
            plan.devices, plan.num_nodes, {"TORCHELASTIC_RUN_ID": "r", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}
        )


def test_global_rank_from_each_launcher() -> None:
    assert global_rank({"RANK": "3"}) == 3
    assert global_rank({"SLURM_PROCID": "5", "SLURM_JOB_ID": "1"}) == 5
    assert global_rank({"NODE_RANK": "1", "LOCAL_RANK": "1"}, devices_per_node=4) == 5
    assert global_rank({}) == 0


def test_torchrun_ranks_share_a_folder_named_by_the_run_id(compose_cfg, tmp_path) -> None:
    cfg = compose_cfg(f"paths.log_dir={tmp_path}")
    env = {"TORCHELASTIC_RUN_ID": "job/7", "RANK": "1", "WORLD_SIZE": "2"}
    plan = follow(cfg, [], env, rank=1)
    assert plan.run_dir == tmp_path / "train" / "runs" / "torchrun-job_7"
    assert argv_overrides(plan, cfg, []) == [
        f"hydra.run.dir={plan.run_dir}",
        "ckpt_path=null",
        "hydra.output_subdir=null",
        "hydra.job.name=train_rank1",
    ]


def test_a_resubmitted_slurm_job_id_gets_its_own_folder_by_token(tmp_path) -> None:
    runs = tmp_path / "runs"
    first = launcher({"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "0", "CNNFLEET_RUN_TOKEN": "aaa"})
    assert keyed_folder(runs, first) == runs / "slurm-12"
    RunState(identity={"kind": "slurm", "job_id": "12", "token": "aaa"}, status="completed").write(runs / "slurm-12")
    again = launcher({"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "0", "CNNFLEET_RUN_TOKEN": "bbb"})
    assert keyed_folder(runs, first) == runs / "slurm-12"  # a requeue of the same submission
    assert keyed_folder(runs, again) == runs / "slurm-12-bbb"  # SLURM reused the id


def test_lightning_relaunched_rank_keeps_lightnings_overrides(compose_cfg) -> None:
    cfg = compose_cfg()
    given = ["hydra.run.dir=/x", "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    plan = follow(cfg, given, {"LOCAL_RANK": "1", "NODE_RANK": "0"}, rank=1)
    assert plan.run_dir == Path("/x") and argv_overrides(plan, cfg, given) == [
        *given[1:],
        "hydra.run.dir=/x",
        "ckpt_path=null",
    ]


def test_more_gpus_than_visible_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the message without GPUs")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        plan_devices(device(accelerator="gpu", devices=8), env={})


def test_bf16_on_cpu_only_when_asked() -> None:
    assert plan_devices(device(), env={}).precision == "32-true"
    assert plan_devices(device(precision="bf16-mixed"), env={}).precision == "bf16-mixed"


def test_fp16_on_cpu_is_refused_instead_of_silently_becoming_bf16() -> None:
    with pytest.raises(ConfigError, match="bf16-mixed or 32-true"):
        plan_devices(device(precision="16-mixed"), env={})


SLURM_TASK = {"SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "cnnfleet"}


def test_slurm_ports_of_jobs_10000_apart_differ_and_stay_below_the_ephemeral_range() -> None:
    assert slurm_port("1234") != slurm_port("11234")  # Lightning's rule gives both 16234
    ports = {slurm_port(str(job)) for job in range(100_000, 120_000)}
    assert len(ports) == 20_000 and max(ports) < 32768 and min(ports) >= 10000


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("node1", "node1"), ("node[3-5,9]", "node3"), ("a[07],b1", "a07"), ("gpu-a1,gpu-b2", "gpu-a1")],
)
def test_first_node_of_a_slurm_nodelist(nodelist: str, first: str) -> None:
    assert first_node(nodelist) == first


def test_a_slurm_task_computes_its_rendezvous_and_ignores_inherited_values() -> None:
    env = {**SLURM_TASK, "SLURM_JOB_NODELIST": "node[2-3]", "MASTER_ADDR": "10.255.255.1", "MASTER_PORT": "1"}
    assert slurm_rendezvous(env) == {"MASTER_ADDR": "node2", "MASTER_PORT": str(slurm_port("1234"))}
    assert slurm_rendezvous({"MASTER_ADDR": "x"}) is None  # outside SLURM the user's values stand


def test_threads_follow_the_allocation() -> None:
    assert intra_op_threads(8, {**SLURM_TASK, "SLURM_CPUS_PER_TASK": "3"}) == (3, "SLURM_CPUS_PER_TASK")
    assert intra_op_threads(2, {"OMP_NUM_THREADS": "5"}) == (5, "OMP_NUM_THREADS")  # the user's (or torchrun's)
    cores = len(os.sched_getaffinity(0))
    assert intra_op_threads(2, {})[0] == max(1, cores // 2)  # Lightning's launcher: the node's cores shared


EXIT_AFTER_STOP = """
import os, signal, subprocess, sys, time
from datetime import timedelta
from torch.distributed import TCPStore
from cnnfleet.launch.heartbeat import Heartbeat
port = int(sys.argv[1])
serve = f"from torch.distributed import TCPStore; import time; s = TCPStore('127.0.0.1', {port}, is_master=True, " \
        "wait_for_workers=False); time.sleep(600)"
host = subprocess.Popen([sys.executable, "-c", serve])
deadline = time.monotonic() + 60
while True:
    try:
        TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False, timeout=timedelta(seconds=1))
        break
    except Exception:
        assert time.monotonic() < deadline, "the store host did not start"
beat = Heartbeat(1, 1, 3.0, lambda peer, what: None, interval_s=0.0, address=("127.0.0.1", port))
beat.start()
os.kill(host.pid, signal.SIGSTOP)  # the store's host stops answering: the beat thread waits inside a store call
time.sleep(0.3)
beat.stop()  # what a stop, a failure or teardown does
host.kill()
from cnnfleet.launch.shutdown import end_distributed
end_distributed(exit_code=0, timeout_s=2.0)  # every exit of cnnfleet-train passes here (tasks/train.py)
sys.exit(0)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_process_exits_cleanly_while_its_heartbeat_thread_is_stuck_in_a_store_call() -> None:
    """A heartbeat thread still inside a store call when the interpreter exits aborts the process
    ("terminate called without an active exception", exit 134, what srun reported as "task 0: Aborted"
    after a preemption). The store's host is frozen here, so the thread is inside a call that outlasts
    its timeout: the exit path must leave without finalising, with the status it had (0)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_STOP, str(free_port())], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "terminate called" not in done.stderr, (done.returncode, done.stderr[-2000:])


def test_end_distributed_destroys_the_process_group_and_leaves_a_hung_one_with_the_exit_status(tmp_path) -> None:
    import subprocess
    import sys

    script = """
import sys, torch.distributed as dist
from datetime import timedelta
from cnnfleet.launch.shutdown import end_distributed
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
if sys.argv[1] == "hung":  # a destroy that never returns stands for a group whose peer is gone
    import threading
    dist.destroy_process_group = lambda: threading.Event().wait()
end_distributed(exit_code=143, timeout_s=1.0)
print("initialized after end:", dist.is_initialized())
sys.exit(0)
"""
    for mode, code, says in (("clean", 0, "initialized after end: False"), ("hung", 143, "did not shut down")):
        done = subprocess.run(
            [sys.executable, "-c", script.replace("{port}", str(free_port())), mode],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code and says in done.stdout + done.stderr, (mode, done.stdout, done.stderr)
