"""`--check` through each command's main() (in-process: no interpreter start-up per case): every command
builds its parts, reports, writes nothing."""

from pathlib import Path

import pytest
from PIL import Image

from conftest import run_main


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory, default_run) -> dict:
    """Each command with --check (and two refusals), one after the other, in one scratch root."""
    root = tmp_path_factory.mktemp("check")
    ckpt = str(next(default_run.run_dirs()[-1].glob("checkpoints/best.ckpt")))
    Image.new("L", (8, 8), 200).save(root / "digit.png")
    adagrad = ["optimizer=sgd", "optimizer._target_=torch.optim.Adagrad"]  # SGD's keys: Adagrad refuses momentum
    cases = {
        "train": ("cnnfleet-train", ["--check", "model=resnet_cifar", "model.width=8"]),
        "eval": ("cnnfleet-eval", ["--check", f"ckpt_path={ckpt}", "split=val"]),
        "predict": ("cnnfleet-predict", ["--check", f"ckpt_path={ckpt}", f"inputs={root / 'digit.png'}"]),
        "export": ("cnnfleet-export", ["--check", f"ckpt_path={ckpt}"]),
        "submit": ("cnnfleet-submit", ["--check", "device=cpu", "cluster.cpus_per_task=1"]),
        "bench": ("cnnfleet-bench", ["--check"]),
        "resume": ("cnnfleet-train", ["--check", f"ckpt_path={ckpt}"]),
        "refused": ("cnnfleet-train", ["--check", *adagrad]),
        "submit-refused": ("cnnfleet-submit", ["dry_run=true", *adagrad]),
    }
    results = {name: run_main(cmd, args, root) for name, (cmd, args) in cases.items()}
    return {"root": root, "results": results, "files": sorted(p.name for p in root.iterdir())}


@pytest.mark.parametrize("name", ["train", "eval", "predict", "export", "submit", "bench", "resume"])
def test_check_builds_everything_and_exits_0(checks: dict, name: str) -> None:
    result = checks["results"][name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--check: ok" in result.stdout
    assert not result.stderr.strip(), result.stderr[-3000:]


def test_check_reports_what_it_built(checks: dict) -> None:
    report = checks["results"]["train"].stdout
    for part in (
        "run folder:",
        "devices:",
        "data: train 1258",
        "model: cnnfleet.models.resnet_cifar.ResNetCifar",
        "one training step, loss",
        "optimizer: torch.optim.AdamW",
        "loggers:",
        "trainer:",
    ):
        assert part in report, report
    assert "resume: " in checks["results"]["resume"].stdout
    assert "workload " in checks["results"]["bench"].stdout


def test_check_writes_nothing(checks: dict) -> None:
    assert checks["files"] == ["digit.png"]  # no logs/, no run folder, no data/


def test_check_refuses_with_the_builder_guard_line(checks: dict) -> None:
    for name, prog in (("refused", "cnnfleet-train"), ("submit-refused", "cnnfleet-submit")):
        result = checks["results"][name]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert lines[0].startswith(f"{prog}: error: cannot build optimizer torch.optim.Adagrad from optimizer.*: ")
    assert "#SBATCH" not in checks["results"]["submit-refused"].stdout  # refused before any script was made


def test_check_with_multirun_is_refused(tmp_path: Path) -> None:
    result = run_main("cnnfleet-train", ["--check", "-m", "seed=1,2"], tmp_path)
    assert result.returncode == 2 and "--check checks one run" in result.stderr
