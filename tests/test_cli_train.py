"""The real cnnfleet-train / cnnfleet-eval in a subprocess, as a user runs them."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_cli, run_main

DIGITS_STEPS_PER_EPOCH = 19  # 1258 // 64: the last partial global batch is dropped (data/sharding.py)


def test_default_run_reaches_99_percent_on_digits(default_run) -> None:
    summary = default_run.summary()
    assert summary["test"]["test/acc"] >= 0.99
    assert summary["split_sizes"] == {"train": 1258, "val": 180, "test": 359}
    assert summary["fit"]["epochs"] == 20 and summary["fit"]["global_step"] == 20 * DIGITS_STEPS_PER_EPOCH
    assert summary["device"]["precision"] == "32-true" and summary["device"]["world_size"] == 1
    assert "test accuracy" in default_run.stdout and "images/s" in default_run.stdout
    # FLOPs of one training image counted before fit (training/flops.py); no MFU on a CPU (no peak)
    assert summary["fit"]["flops_per_image"] == pytest.approx(14.24e6, rel=0.01) and summary["fit"]["mfu"] is None
    assert summary["fit"]["tflops_per_device"] > 0


def test_run_folder_explains_itself(default_run) -> None:
    (run,) = default_run.run_dirs()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["_target_"].endswith("SimpleCNN") and "hydra" not in config
    assert "cnnfleet-train" in (run / "command.txt").read_text()
    env = yaml.safe_load((run / "env.json").read_text())
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] and "git" in env
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val_acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(val_acc) == 20
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"]  # no temporary files left behind


def test_checkpoints_load_with_weights_only_and_carry_the_model_arguments(default_run) -> None:
    (run,) = default_run.run_dirs()
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert checkpoint["hyper_parameters"]["model"]["widths"] == [32, 64, 128]
        assert checkpoint["cnnfleet"]["config"]["data"]["batch_size"] == 64


def test_eval_of_best_checkpoint_reproduces_the_test_accuracy(default_run) -> None:
    (run,) = default_run.run_dirs()
    before = set(default_run.run_dirs("eval"))  # the shared run's root may hold other tests' evaluations
    result = run_cli("cnnfleet-eval", [f"ckpt_path={run}/checkpoints/best.ckpt"], default_run.root)
    assert result.returncode == 0, result.stderr[-2000:]
    (eval_dir,) = set(result.run_dirs("eval")) - before
    report = yaml.safe_load((eval_dir / "metrics.json").read_text())
    assert report["metrics"]["test/acc"] == pytest.approx(default_run.summary()["test"]["test/acc"], abs=1e-7)
    assert report["samples"] == 359 and "test/acc" in result.stdout


def test_eval_on_the_validation_split(default_run) -> None:
    (run,) = default_run.run_dirs()
    before = set(default_run.run_dirs("eval"))  # the shared run's root may hold other tests' evaluations
    result = run_cli("cnnfleet-eval", [f"ckpt_path={run}/checkpoints/last.ckpt", "split=val"], default_run.root)
    assert result.returncode == 0, result.stderr[-2000:]
    (eval_dir,) = set(result.run_dirs("eval")) - before
    report = yaml.safe_load((eval_dir / "metrics.json").read_text())
    assert report["samples"] == 180 and "val/acc" in result.stdout  # the validation split, not the test split
    # last.ckpt holds the final weights: the same accuracy as the run's own last validation
    final = default_run.summary()["fit"]["final_val"]["val/acc"]
    assert report["metrics"]["val/acc"] == pytest.approx(final, abs=1e-7)


def test_same_seed_gives_the_same_result_and_the_recipe_learns(cli) -> None:
    first, second = cli("experiment=digits_fast"), cli("experiment=digits_fast")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    a, b = (first.summary(d) for d in first.run_dirs())
    assert a["test"] == b["test"]  # bit-identical metrics on CPU
    assert a["fit"]["epochs"] == 6 and a["test"]["test/acc"] >= 0.97


def test_override_set_a_user_types(cli) -> None:
    result = cli("optimizer=adamw", "optimizer.lr=3e-3", "trainer.max_epochs=3", "model=resnet_cifar", "model.width=16")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.summary()
    assert summary["fit"]["epochs"] == 3 and summary["test"]["test/acc"] > 0.5
    (run,) = result.run_dirs()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["_target_"].endswith("ResNetCifar") and config["optimizer"]["lr"] == 3e-3


@pytest.mark.parametrize(
    "overrides",
    [
        ["debug=fast_dev_run"],
        ["data=synthetic", "model=resnet_cifar", "model.width=8", "trainer.max_epochs=1", "scheduler=cosine"],
        ["logger=none", "callbacks=none", "optimizer=sgd", "scheduler=none", "trainer.max_epochs=1"],
        ["debug=overfit", "trainer.max_epochs=2"],
    ],
    ids=["fast_dev_run", "synthetic-resnet-cosine", "no-logger-no-callbacks-sgd", "overfit"],
)
def test_config_combinations_run_end_to_end(cli, overrides: list[str]) -> None:
    result = cli(*overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc" in result.summary()["test"]
    if overrides[0].startswith("debug="):  # smoke runs: labelled, and no checkpoint ckpt_path=last could pick
        (run,) = result.run_dirs()
        assert not list(run.rglob("*.ckpt")), list(run.rglob("*.ckpt"))
        assert result.summary()["smoke"].startswith(("trainer.fast_dev_run=", "trainer.overfit_batches="))
        assert "smoke run: not a result" in result.stdout


BAD_INPUT = {
    "misspelled-key": (["trainer.max_epoch=3"], "trainer.max_epochs"),
    "wrong-type": (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    "unknown-option": (["model=resnet"], "resnet_cifar, simple_cnn"),
    "missing-ckpt-file": (["ckpt_path=/no/such/file.ckpt"], "/no/such/file.ckpt"),
    "resume-without-runs": (["ckpt_path=last"], "no run of this task"),
    "ckpt-is-a-folder": (["ckpt_path=."], "is a folder"),
    "bad-override-syntax": (["data.batch_size=[1"], "cannot parse override"),
    "gpu-without-gpu": (["device=gpu"], "no CUDA GPU"),
    "zero-batch": (["data.batch_size=0"], "data.batch_size=0: input should be greater than or equal to 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_gets_one_clear_line_and_exit_2(tmp_path: Path, case: str) -> None:
    if case == "gpu-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args, expected = BAD_INPUT[case]
    result = run_main("cnnfleet-train", args, tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("cnnfleet-train: error:"), result.stderr
    assert expected in lines[0]


def test_eval_without_a_checkpoint_file_is_one_line(tmp_path: Path) -> None:
    result = run_main("cnnfleet-eval", ["ckpt_path=/no/such.ckpt"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("cnnfleet-eval: error:")


def test_help_lists_groups_and_options_without_schemas(tmp_path: Path) -> None:
    result = run_main("cnnfleet-train", ["--help"], tmp_path)
    assert result.returncode == 0
    assert "model: airbench, resnet_cifar, simple_cnn, timm, torchvision" in result.stdout
    assert "_schema" not in result.stdout
    lrs = [line.split(None, 1)[1] for line in result.stdout.splitlines() if line.strip().startswith("optimizer.lr ")]
    assert "float: > 0, <= 1e+06, finite; default 0.003" in lrs  # every key's domain and default (AdamW's)


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_main("cnnfleet-train", ["--cfg", "job", "model=resnet_cifar"], tmp_path)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["model"]["depth"] == 18


def test_config_errors_are_reported_before_torch_is_imported(tmp_path: Path) -> None:
    code = (
        "import sys; sys.argv = ['cnnfleet-train', 'trainer.max_epoch=3']\n"
        "from cnnfleet.cli.train import main\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
