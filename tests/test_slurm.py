"""cnnfleet-submit against a REAL SLURM cluster (scripts/slurm/start-slurm.sh: 2 emulated nodes)."""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cnnfleet.cluster.resources import gpu_count, memory_mb
from cnnfleet.launch.env import slurm_port
from conftest import CliResult, wait_until
from sweep_helpers import attempts, enqueue, load_study, start_cli, study_states, wait_for
from test_lifecycle import fingerprint

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
CPU_JOB = ["cluster.cpus_per_task=1"]  # the emulated nodes advertise 2 cores each


def job_info(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for_job(job_id: str, timeout: float = 400) -> dict[str, str]:
    """Wait until the job ends; a requeued job passes through PENDING again, so only final states count."""
    info = wait_until(lambda: (i := job_info(job_id)).get("JobState") in TERMINAL and i, timeout, interval=1)
    if not info:
        subprocess.run(["scancel", job_id])
        pytest.fail(f"job {job_id} still {job_info(job_id).get('JobState')} after {timeout} s")
    return info


def submitted_job(result: CliResult) -> tuple[str, Path]:
    assert result.returncode == 0, result.stderr[-3000:]
    job_id = re.search(r"submitted job (\d+)", result.stdout).group(1)
    return job_id, result.root / "logs" / "train" / "runs" / f"slurm-{job_id}"


def slurm_log(result: CliResult, job_id: str) -> str:
    return (result.root / "logs" / "train" / "slurm" / f"{job_id}.out").read_text()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "tasks"), [(1, 2), (2, 1)], ids=["1node-2tasks", "2nodes-1task"])
def test_submitted_ddp_job_trains_into_one_folder_keyed_by_job_id(slurm, cli, nodes: int, tasks: int) -> None:
    # a rendezvous exported in the submitting shell reaches the job (sbatch exports the environment):
    # the job computes its own from the allocation instead of waiting device.timeout_s for this address
    bogus = {"MASTER_ADDR": "10.255.255.1", "MASTER_PORT": "1"}
    result = cli(
        *CPU_JOB,
        f"cluster.nodes={nodes}",
        f"cluster.tasks_per_node={tasks}",
        "device.timeout_s=60",
        command="cnnfleet-submit",
        env=bogus,
    )
    job_id, run = submitted_job(result)
    info = wait_for_job(job_id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", slurm_log(result, job_id)[-3000:]
    assert sorted(p.name for p in run.parent.iterdir()) == [f"slurm-{job_id}"]
    summary = result.summary(run)
    assert summary["device"]["world_size"] == 2 and summary["test"]["test/acc"] >= 0.985
    assert summary["device"]["threads_per_process"] == 1  # --cpus-per-task=1, not every core of the node
    log = (run / "train.log").read_text()
    assert "ignored MASTER_ADDR=10.255.255.1, MASTER_PORT=1" in log and f"node1:{slurm_port(job_id)}" in log
    assert (f"x {nodes} nodes" in summary["device"]["description"]) == (nodes > 1)
    assert (run / "job.sbatch").is_file() and (run / ".hydra").is_dir()
    assert len((run / "command.txt").read_text().splitlines()) == 1  # rank 0 alone keeps the record


def saved_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"]


def hidden_scontrol(folder: Path) -> str:
    """A cluster.setup line that hides scontrol from the job's tasks, as in a container without SLURM's
    tools (a stand-in that fails like a missing command: the batch shell keeps sbatch)."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "scontrol"
    fake.write_text("#!/bin/sh\necho 'scontrol: command not found' >&2\nexit 127\n")
    fake.chmod(0o755)
    return f"cluster.setup=['export PATH={folder}:$PATH']"


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_job_without_scontrol_continues_in_a_follow_up_job_from_its_hpc_checkpoint(
    slurm, cli, tmp_path: Path
) -> None:
    """Preempted twice (two follow-up jobs); every task of every job exits 0: a rank that aborted at exit
    ("terminate called without an active exception", a heartbeat thread inside a store call during the
    interpreter's finalisation) made srun report "task 0: Aborted" and the job FAILED."""
    epochs = 20
    result = cli(
        *CPU_JOB,
        "cluster.nodes=2",
        f"trainer.max_epochs={epochs}",
        hidden_scontrol(tmp_path / "bin"),
        command="cnnfleet-submit",
    )
    job_id, run = submitted_job(result)
    jobs = [job_id, str(int(job_id) + 1), str(int(job_id) + 2)]
    for preempted, follow_up in zip(jobs, jobs[1:], strict=False):
        # training is under way once this job's attempt has written an epoch's last.ckpt past its start
        def training(job: str = preempted) -> bool:
            if job_info(job)["JobState"] in TERMINAL:
                return True
            if not (run / "state.json").is_file():
                return False
            mine = [a for a in json.loads((run / "state.json").read_text())["attempts"] if a["job_id"] == job]
            last = run / "checkpoints" / "last.ckpt"
            return bool(mine) and last.is_file() and saved_step(last) > (mine[-1]["resumed_from_step"] or 0)

        assert wait_until(training, 180), slurm_log(result, preempted)[-3000:]
        assert job_info(preempted)["JobState"] not in TERMINAL, slurm_log(result, preempted)[-3000:]
        subprocess.run(["scancel", "--signal=USR1", preempted], check=True)  # what --signal=SIGUSR1@90 does
        info = wait_for_job(preempted)
        log = slurm_log(result, preempted)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
        assert "srun: error" not in log and "terminate called" not in log, log[-3000:]  # every task exited 0
        assert "scontrol requeue" in log and "failed" in log, log[-3000:]
        assert f"Submitted batch job {follow_up}" in log, log[-3000:]
    info = wait_for_job(jobs[-1])
    log = slurm_log(result, jobs[-1])
    assert info["JobState"] == "COMPLETED" and "srun: error" not in log, log[-3000:]
    summary = result.summary(run)
    state = json.loads((run / "state.json").read_text())
    attempts = state["attempts"]
    assert [a["exit"] for a in attempts] == ["requeued after SIGUSR1 during training"] * 2 + ["completed"]
    assert [a["job_id"] for a in attempts] == jobs and state["identity"]["job_id"] == job_id
    assert summary["resumed_from"]["path"].endswith("hpc_ckpt_1.ckpt")  # the first was pruned after its resume
    for before, after in zip(attempts, attempts[1:], strict=False):
        assert after["resumed_from_step"] == before["step"] > 0, attempts
    assert summary["resumed_from"]["global_step"] == attempts[2]["resumed_from_step"]
    assert summary["fit"]["global_step"] == epochs * 19  # the full run: 19 full global batches of 64 per epoch
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # pruned once a newer complete checkpoint was written
    assert len((run / "command.txt").read_text().splitlines()) == 3  # three attempts, one folder
    assert sorted(p.name for p in run.parent.iterdir()) == [f"slurm-{job_id}"]


@pytest.mark.slurm
def test_unknown_partition_is_one_clear_line(slurm, cli) -> None:
    result = cli("cluster.partition=no_such_partition", command="cnnfleet-submit")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "cluster.partition=no_such_partition: no such partition; partitions: debug" in lines[0]
    listed = cli("cluster.partition='no_such_partition,debug'", "--check", command="cnnfleet-submit")
    assert listed.returncode == 0, listed.stderr  # sbatch runs a job in the first listed partition that can
    refused = cli("cluster.extra_sbatch=['--nodelist=nosuchnode']", command="cnnfleet-submit")  # only sbatch knows
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "sbatch refused the job" in lines[0], lines[0]


@pytest.mark.slurm
def test_sweep_that_sbatch_refuses_is_one_clear_line(slurm, cli) -> None:
    """launcher=slurm: sbatch refusing the jobs (a node SLURM does not know) is one line and exit 2."""
    result = cli(
        "-m",
        "launcher=slurm",
        "+hydra.launcher.additional_parameters.nodelist=nosuchnode",
        "trainer.max_epochs=1",
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("cnnfleet-train: error: sbatch refused the sweep's jobs: "), lines


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "cluster.cpus_per_task=4",
            "= 4 CPUs per node, but the largest node of partition debug has 2; use cluster.cpus_per_task<=2",
        ),
        ("cluster.gpus_per_node=1", "cluster.gpus_per_node=1 but the nodes of partition debug have at most 0 GPUs"),
        ("cluster.nodes=3", "cluster.nodes=3 but partition debug has 2 node(s)"),
        ("cluster.mem=900G", "cluster.mem=900G per node, but the largest node of partition debug has"),
        ("cluster.constraint=a100", "cluster.constraint=a100: no node of partition debug has it"),
        (
            "cluster.tasks_per_node=3",
            "cluster.tasks_per_node=3 needs at least 3 CPUs per node, but the largest node "
            "of partition debug has 2; lower cluster.tasks_per_node",
        ),
    ],
)
def test_a_request_no_node_can_hold_is_one_line_before_sbatch(slurm, cli, override: str, expected: str) -> None:
    """Measured before: sbatch accepted cpus_per_task=4 on 2-core nodes and the job stayed PENDING forever."""
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    submit = cli(override, command="cnnfleet-submit", timeout=120)
    sweep = cli("-m", "launcher=slurm", override, "optimizer.lr=0.01,0.02", timeout=120)
    for result, who in ((submit, "this job"), (sweep, "the sweep's jobs")):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"error: {who} could never start: " in lines[0] and expected in lines[0], lines[0]
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == before


def test_a_time_limit_within_the_stop_signal_is_refused(cli) -> None:
    """cluster.time=1 with the 90 s signal queued fine and then saved and requeued itself every 30 s."""
    result = cli("dry_run=true", "cluster.time=1", command="cnnfleet-submit")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cluster.time=1: 60 s leaves no training time before the stop signal" in result.stderr


def test_partition_limits_are_read_from_scontrol_output() -> None:
    assert gpu_count("gpu:a100:4(S:0-1),gpu:v100:2") == 6 and gpu_count("(null)") == 0 and gpu_count("gpu:8") == 8
    assert memory_mb("64G") == 65536 and memory_mb("4096") == 4096 and memory_mb("1T") == 1048576


@pytest.mark.slurm
def test_tasks_per_node_different_from_devices_stops_every_task_with_a_message(slurm, tmp_path: Path) -> None:
    env = {**os.environ, "CNNFLEET_ROOT": str(tmp_path)}
    train = str(Path(sys.executable).parent / "cnnfleet-train")
    proc = subprocess.run(
        [
            "srun",
            "--nodes=1",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--job-name=mismatch",
            train,
            "device.accelerator=cpu",
            "device.devices=1",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("cnnfleet-train: error:")]
    assert len(ours) == 2 and "2 task(s) per node but device.devices=1" in ours[0]  # one line per task


def test_submit_without_sbatch_is_one_clear_line(cli) -> None:
    result = cli("cluster.partition=x", command="cnnfleet-submit", env={"PATH": "/nonexistent"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "sbatch not found" in result.stderr


def test_device_override_contradicting_the_cluster_is_refused(cli) -> None:
    result = cli("dry_run=true", "cluster.tasks_per_node=2", "device.devices=4", command="cnnfleet-submit")
    assert result.returncode == 2 and "contradicts cluster.tasks_per_node=2" in result.stderr


def test_training_in_the_batch_shell_of_a_multi_task_job_is_refused(cli) -> None:
    result = cli("device.accelerator=cpu", env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "j"})
    assert result.returncode == 2 and "start it with `srun cnnfleet-train" in result.stderr


def test_dry_run_prints_a_script_with_one_task_per_device(cli) -> None:
    result = cli("dry_run=true", "cluster=gpu_node", "trainer.max_epochs=3", command="cnnfleet-submit")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in (
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "srun --kill-on-bad-exit=1",
        "export CNNFLEET_REQUEUE=1",
    ):
        assert line in script
    assert "device.devices=8 device.num_nodes=1 device.strategy=ddp" in script
    assert "trainer.max_epochs=3" in script and "dry_run=" not in script
    assert not list((result.root / "logs" / "train" / "runs").glob("*"))  # nothing submitted


@pytest.mark.slurm
@pytest.mark.slow
def test_multirun_on_slurm_runs_every_trial_as_its_own_ddp_job(slurm, cli) -> None:
    result = cli(
        "-m",
        "launcher=slurm",
        *CPU_JOB,
        "cluster.tasks_per_node=2",
        "trainer.max_epochs=3",
        "optimizer.lr=0.003,0.01",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (result.root / "logs" / "train" / "multiruns").iterdir()
    summaries = sorted(sweep.glob("[0-9]*/summary.json"))
    assert len(summaries) == 2, sorted(p.name for p in sweep.rglob("*"))[:50]
    lrs = set()
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["device"]["world_size"] == 2  # SLURM started 2 tasks for the trial
        lrs.add(yaml.safe_load((path.parent / "config.yaml").read_text())["optimizer"]["lr"])
    assert lrs == {0.003, 0.01}
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name]
    assert len(jobs) == 2  # two SLURM (array) jobs, one per trial


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_trial_of_a_slurm_grid_sweep_is_reported_and_the_sweep_ends(slurm, tmp_path) -> None:
    """This cluster has no accounting (sacct fails): submitit alone read every state as UNKNOWN and
    waited forever for a trial cancelled before its result. Now squeue says it ended; the other trial
    completes, and the table lists the cancelled one as its folder records it."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "launcher=slurm",
        *CPU_JOB,
        "trainer.max_epochs=15",
        "logger=csv",
        "test=false",
        "optimizer.lr=0.003,0.01",
        f"hydra.sweep.dir={sweep}",
    ]
    driver = start_cli(args, tmp_path, tmp_path / "driver.log")
    wait_for(lambda: (sweep / "0" / "checkpoints" / "last.ckpt").is_file(), "trial 0 training", driver, 300)
    (job,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.endswith("_0")]
    subprocess.run(["scancel", job], check=True)
    assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    log = (tmp_path / "driver.log").read_text()
    assert f"trial job {job} ended" in log and "1 of 2 trials failed or did not finish" in log, log[-3000:]
    rows = {r["trial"]: r["status"] for r in csv.DictReader((sweep / "sweep_summary.csv").open())}
    assert rows == {"0": "stopped", "1": "completed"}, rows
    assert json.loads((sweep / "0" / "state.json").read_text())["status"] == "stopped"


@pytest.mark.slurm
@pytest.mark.slow
def test_optuna_on_slurm_prunes_a_ddp_trial_through_the_shared_journal(slurm, cli, tmp_path) -> None:
    """Each trial a 2-task DDP job; rank 0 reports through the journal file, the pruner stops lr 1e-7."""
    sweep = tmp_path / "sweep"
    enqueue(sweep, "prune", "minimize", [{"optimizer.lr": 0.01}, {"optimizer.lr": 1e-7}])
    result = cli(
        "-m",
        "hydra/sweeper=cnnfleet_optuna",
        "launcher=slurm",
        *CPU_JOB,
        "cluster.tasks_per_node=2",
        "optimized_metric=val/loss",
        "optimized_direction=minimize",
        "logger=csv",
        "trainer.max_epochs=3",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.study_name=prune",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner_settings={n_startup_trials:1,n_warmup_steps:1}",
        "hydra.sweeper.poll_seconds=1",
        "optimizer.lr=choice(1e-7,1e-2)",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert study_states(sweep, "prune") == ["COMPLETE", "PRUNED"]
    assert "export CNNFLEET_TRIAL=" in (sweep / "submissions" / "1" / "job.sbatch").read_text()
    rows = {r["trial"]: r for r in csv.DictReader((sweep / "sweep_summary.csv").open())}
    assert rows["0"]["status"] == "completed" and rows["1"]["status"] == "pruned"
    for n in ("0", "1"):
        trial = sweep / n
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["device"]["world_size"] == 2
        logged = {}
        for line in (line for f in trial.glob("*.log") for line in f.read_text().splitlines()):
            if " hyperparameters: " in line:
                logged[line.split("rank ")[1].split(" of ")[0]] = line.split(" hyperparameters: ")[1]
        assert set(logged) == {"0", "1"} and logged["0"] == logged["1"]  # both ranks train the trial's values
        assert json.loads(logged["0"])["optimizer"]["lr"] == pytest.approx(float(rows[n]["optimizer.lr"]))
    assert json.loads((sweep / "1" / "summary.json").read_text())["reason"].startswith("pruned at epoch 1")


def job_ids(submission: Path) -> list[str]:
    return sorted(p.stem for p in submission.glob("*.out"))


@pytest.mark.slurm
@pytest.mark.slow
def test_optuna_on_slurm_reattaches_after_the_driver_dies_and_retries_a_cancelled_trial(slurm, tmp_path) -> None:
    """kill -9 of the driver while two trial jobs run: started again, it waits for both (no new job);
    then a trial's job is cancelled (SIGTERM: stopped without a requeue): it runs again as a new job
    that resumes in the trial's folder; the third trial takes the first free slot."""
    sweep = tmp_path / "sweep"
    enqueue(sweep, "reattach", "maximize", [{"trainer.max_epochs": e} for e in (30, 30, 1)])
    args = [
        "-m",
        "hydra/sweeper=cnnfleet_optuna",
        "launcher=slurm",
        *CPU_JOB,
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.study_name=reattach",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.poll_seconds=1",
        "trainer.max_epochs=choice(30,1)",
    ]
    first = start_cli(args, tmp_path, tmp_path / "first.log")
    both = lambda: all((sweep / n / "checkpoints" / "last.ckpt").is_file() for n in "01")  # noqa: E731
    wait_for(both, "both trial jobs training", first, timeout=300)
    first.kill()
    first.wait()
    before = {n: job_ids(sweep / "submissions" / n) for n in "01"}
    assert all(len(ids) == 1 for ids in before.values()), before

    second = start_cli(args, tmp_path, tmp_path / "second.log")
    log = tmp_path / "second.log"
    wait_for(lambda: log.read_text().count("still runs (SLURM job") == 2, "the jobs re-attached", second)
    cancelled = load_study(sweep, "reattach").trials[1].user_attrs["slot"]["job_id"]
    subprocess.run(["scancel", cancelled], check=True)
    assert second.wait(timeout=600) == 0, log.read_text()[-3000:]

    assert study_states(sweep, "reattach") == ["COMPLETE"] * 3
    assert job_ids(sweep / "submissions" / "0") == before["0"]  # waited for, never submitted again
    retried = job_ids(sweep / "submissions" / "1")
    assert len(retried) == 2 and cancelled in retried, retried
    assert load_study(sweep, "reattach").trials[1].user_attrs["retries"] == 1
    assert "retry 1 of 2 in its folder" in log.read_text()
    runs = attempts(sweep / "1")
    assert [a["job_id"] for a in runs] == retried and runs[0]["exit"].startswith("stopped by SIGTERM"), runs
    assert runs[1]["resumed_from_step"] == runs[0]["step"] > 0
    summary = json.loads((sweep / "1" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["fit"]["global_step"] == 30 * 19


def next_job_id() -> int:
    """The id SLURM gives the next job (ids are sequential on one controller)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"NEXT_JOB_ID\s*=\s*(\d+)", out).group(1))


@pytest.mark.slurm
@pytest.mark.slow
def test_a_reused_job_id_never_takes_over_a_run_and_scancel_leaves_a_stopped_status(slurm, cli, tmp_path) -> None:
    runs = tmp_path / "logs" / "train" / "runs"
    done = cli("device.accelerator=cpu", "trainer.max_epochs=1", "logger=none", "test=false")
    assert done.returncode == 0, done.stderr[-3000:]
    # a finished run sits in the folders the next two job ids name (as after a controller reinstall)
    plain_id = next_job_id()
    submitted_id = plain_id + 1
    for job in (plain_id, submitted_id):
        shutil.copytree(done.run_dirs()[0], runs / f"slurm-{job}")
    before = {path: fingerprint(path) for path in runs.iterdir()}

    # a hand-written script (no identity token) whose job got a reused id: one line, nothing touched
    script = tmp_path / "plain.sbatch"
    train = Path(sys.executable).parent / "cnnfleet-train"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --output={tmp_path}/plain.out\nexport CNNFLEET_ROOT={tmp_path}\n"
        f"srun {train} device.accelerator=cpu logger=none\n"
    )
    out = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", str(script)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == str(plain_id), "another job was submitted meanwhile"
    assert wait_for_job(str(plain_id))["JobState"] == "FAILED"
    ours = [line for line in (tmp_path / "plain.out").read_text().splitlines() if "cnnfleet-train: error:" in line]
    assert len(ours) == 1 and f"SLURM job id {plain_id} was reused" in ours[0], ours

    # cnnfleet-submit gives each submission an identity: the job trains in a folder of its own
    result = cli(*CPU_JOB, "trainer.max_epochs=50", "logger=csv", command="cnnfleet-submit")
    job_id, _ = submitted_job(result)
    assert job_id == str(submitted_id), "another job was submitted meanwhile"
    own = wait_until(lambda: next(iter(runs.glob(f"slurm-{job_id}-*/checkpoints/last.ckpt")), None), 180)
    assert own, slurm_log(result, job_id)[-3000:]
    subprocess.run(["scancel", job_id], check=True)  # SIGTERM to every task, SIGKILL after KillWait (5 s)
    wait_for_job(job_id)
    run = own.parent.parent
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "stopped" and state["identity"]["job_id"] == job_id, slurm_log(result, job_id)[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    assert f"continue with: cnnfleet-submit hydra.run.dir={run}" in slurm_log(result, job_id)  # not cnnfleet-train
    assert (run / "job.sbatch").is_file()
    assert {path: fingerprint(path) for path in before} == before  # the other runs are untouched

    # a new job continues the stopped run in its own folder; the run's identity stays the first job's
    again = cli(
        *CPU_JOB,
        "trainer.max_epochs=50",
        "logger=csv",
        "ckpt_path=last",
        "cluster.extra_sbatch=['--hold']",
        command="cnnfleet-submit",
    )
    second, _ = submitted_job(again)
    assert f"run folder: {run} (ckpt_path=last: the newest unfinished run (stopped)" in again.stdout, again.stdout
    # while that job waits in the queue, a second continuation of the same run is refused
    twice = cli(*CPU_JOB, "trainer.max_epochs=50", "logger=csv", "ckpt_path=last", command="cnnfleet-submit")
    assert twice.returncode == 2 and f"belongs to job {second}, which SLURM still holds (PENDING)" in twice.stderr
    subprocess.run(["scontrol", "release", second], check=True)
    assert wait_until(lambda: len(json.loads((run / "state.json").read_text())["attempts"]) == 2, 120)
    # a task killed outright (the OOM killer, kill -9) records nothing; the batch shell records the end
    os.kill(json.loads((run / ".lock").read_text())["pid"], signal.SIGKILL)
    wait_for_job(second)
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and state["identity"]["job_id"] == job_id, state
    assert [a["job_id"] for a in state["attempts"]] == [job_id, second]
    assert state["attempts"][1]["resumed_from_step"] == state["attempts"][0]["step"] > 0
    assert "ended without a record (srun exit status 137)" in state["attempts"][1]["exit"]
    assert f"continue with: cnnfleet-submit hydra.run.dir={run}" in slurm_log(again, second)


@pytest.mark.slurm
@pytest.mark.slow
def test_sigusr1_during_start_up_requeues_and_the_job_completes(slurm, cli) -> None:
    result = cli(*CPU_JOB, "trainer.max_epochs=1", "logger=none", command="cnnfleet-submit")
    job_id, run = submitted_job(result)
    # state.json is written before torch is imported: the signal lands in start-up
    assert wait_until(lambda: (run / "state.json").is_file() or job_info(job_id)["JobState"] in TERMINAL, 120)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True)  # what --signal=SIGUSR1@90 does
    info = wait_for_job(job_id)
    log = slurm_log(result, job_id)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log[-3000:]
    assert "preempted by SIGUSR1 during start-up" in log
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "completed" and [a["restarts"] for a in state["attempts"]] == [0, 1]
    assert state["attempts"][0]["exit"] == "requeued after SIGUSR1 during start-up"


def task_pid(job_id: str, rank: int) -> int | None:
    """The cnnfleet-train process of one task of a job (its environment names the job and the rank)."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and b"cnnfleet-train" in (entry / "cmdline").read_bytes()
            if ours and wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.slurm
@pytest.mark.slow
def test_a_frozen_rank_ends_a_two_node_job_within_the_timeout_naming_the_rank(slurm, cli) -> None:
    """A rank that stops without a TCP reset (SIGSTOP: a hung node looks the same) ends the job within
    device.timeout_s + 30 s, with one line naming it and a failed status in the run's state."""
    timeout_s = 20
    result = cli(
        *CPU_JOB,
        "cluster.nodes=2",
        "trainer.max_epochs=100",
        f"device.timeout_s={timeout_s}",
        "logger=none",
        command="cnnfleet-submit",
    )
    job_id, run = submitted_job(result)
    assert wait_until(lambda: (run / "checkpoints" / "last.ckpt").is_file(), 180), slurm_log(result, job_id)[-3000:]
    pid = task_pid(job_id, 1)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    info = wait_for_job(job_id, timeout=timeout_s + 30)  # the job ends within the timeout + 30 s, or this fails
    log = slurm_log(result, job_id)
    assert info["JobState"] == "FAILED", log[-3000:]
    ours = [line for line in log.splitlines() if "cnnfleet-train: error:" in line]
    assert len(ours) == 1 and f"rank 1 (host {socket.gethostname()}, pid {pid}) stopped answering" in ours[0], log
    assert f"continue with: cnnfleet-submit hydra.run.dir={run}" in ours[0]
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "rank 1" in state["attempts"][-1]["exit"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_trial_at_its_real_time_limit_is_requeued_and_resumes_in_its_own_folder(slurm, cli) -> None:
    """launcher=slurm: before, the trial got submitit's USR2 and no requeue, FAILED at its limit and was
    reported as a lost rank. Now: SIGUSR1 before the limit (2 min; SLURM may signal up to 60 s early),
    hpc checkpoint, requeue, resume at the stop step in the trial's folder; the sweep waits for it."""
    # by construction, not by machine speed: 90 s of training (trainer.max_time, whose clock travels in the
    # checkpoint) is more than one allocation can give (its signal comes at most 60 s after it starts), so
    # at least one requeue happens on any machine. An epoch count failed on a faster CI machine: 150 epochs
    # finished inside the first allocation.
    result = cli(
        "-m",
        "launcher=slurm",
        *CPU_JOB,
        "cluster.time=00:02:00",
        "cluster.signal_seconds=60",
        "trainer.max_epochs=100000",
        "trainer.max_time=00:00:01:30",
        "logger=csv",
        "optimizer.lr=0.003",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (result.root / "logs" / "train" / "multiruns").iterdir()
    (submission,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --signal=USR1@60" in submission.read_text() and "#SBATCH --requeue" in submission.read_text()
    trial = sweep / "0"
    state = json.loads((trial / "state.json").read_text())
    attempts = state["attempts"]
    assert state["status"] == "completed" and attempts[-1]["exit"] == "completed", attempts
    assert len(attempts) >= 2, attempts
    for before, after in zip(attempts, attempts[1:], strict=False):  # each resumes exactly where the last stopped
        assert before["exit"].startswith("requeued after SIGUSR1 during "), attempts
        assert after["resumed_from_step"] == before["step"] > 0, attempts
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["fit"]["global_step"] == attempts[-1]["step"], summary
    assert summary["fit"].get("stopped_by") == "trainer.max_time", summary["fit"]
    steps = [row["step"] for row in csv.DictReader((trial / "metrics.csv").open()) if row.get("train/loss")]
    assert len(steps) == len(set(steps)), "metrics rows of a resumed stretch were written twice"
    assert not list(trial.glob("hpc_ckpt_*.ckpt"))
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".") and p.is_dir()) == ["0"]
