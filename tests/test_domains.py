"""Domains in the schema, the builder guard and the internal-fault pointer (in process: fast)."""

import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch
import yaml

from cnnfleet.cli.app import Command, call_task
from cnnfleet.config.compose import check_config, compose_config
from cnnfleet.config.domains import check_value, describe_field
from cnnfleet.config.errors import COMPOSE_ERRORS, explain
from cnnfleet.config.guard import building
from cnnfleet.config.reference import docs_path, markdown
from cnnfleet.config.schema import GROUP_SCHEMAS, AdamWConfig, TrainConfig, register_configs, slurm_time_minutes
from cnnfleet.config.search_path import conf_dir
from cnnfleet.errors import ConfigError


def composed(*overrides: str):  # noqa: ANN201
    """As the CLI composes (the run folder's runtime path set, so paths.* resolve)."""
    register_configs()
    return compose_config("train", list(overrides))


def test_docs_config_md_is_generated_from_the_schema() -> None:
    assert docs_path().read_text() == markdown(), "run: python -m cnnfleet.config.reference > docs/config.md"


def test_every_domain_is_in_the_docs() -> None:
    text = docs_path().read_text()
    for schemas in GROUP_SCHEMAS.values():
        for cls in schemas.values():
            for f in fields(cls):
                if not f.name.startswith("_"):
                    assert describe_field(f).replace("|", "&#124;") in text, f"{cls.__name__}.{f.name}"


def test_option_files_do_not_restate_schema_defaults() -> None:
    """Defaults live in one place (the schema): an option YAML sets only what differs."""
    restated = []
    for group, schemas in GROUP_SCHEMAS.items():
        for path in sorted((Path(conf_dir()) / group).glob("*.yaml")):
            found = re.search(r"^\s*-\s*(\w+_schema)\s*$", path.read_text(), re.M)
            if found is None:  # `scheduler: null`, or an option built on another option (cluster/gpu_node)
                continue
            values = yaml.safe_load(path.read_text()) or {}
            for f in fields(schemas[found.group(1)]):
                default = (
                    f.default
                    if f.default is not MISSING
                    else (f.default_factory() if f.default_factory is not MISSING else MISSING)
                )
                if f.name in values and values[f.name] == default and default is not MISSING:
                    restated.append(f"{path.name}: {f.name}")
    assert not restated


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1.0: input should be greater than 0"),
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number"),
        (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5]: item 1 input should be less than 1"),
        (["data.mean=[0.1,0.2]"], "data.mean=[0.1, 0.2]: has 2 values but data.channels=1"),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], "leaves no training samples"),
        (["device.devices=0"], "device.devices=0: is not accepted (expected a count >= 1 or auto)"),
        (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5: is not accepted"),
        (["task_name=.."], "task_name='..': is not allowed"),
        (["cluster.time=abc"], "cluster.time='abc': is not allowed (expected a SLURM time"),
        (["tags=[a,'']"], "tags=['a', '']: item 1 string should have at least 1 character"),
        (["optimizer=sgd", "optimizer.momentum=0"], "Nesterov momentum needs optimizer.momentum > 0"),
        (["paths.root_dir=/proc/x"], "paths.root_dir='/proc/x': is on a proc filesystem"),
        (["paths.output_dir=/proc/x"], "cannot create the run folder /proc/x: is on a proc filesystem"),
        (["data=synthetic", "data.num_samples=10000000", "data.image_size=512"], "GiB, more than a quarter"),
    ],
)
def test_values_outside_their_domain_are_one_line(overrides: list[str], message: str) -> None:
    cfg = composed(*overrides)
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["data=synthetic"],
        ["optimizer=sgd"],
        ["device.devices=auto"],
        ["trainer.fast_dev_run=3"],
        ["trainer.limit_train_batches=0.5"],
        ["cluster.time=1-02"],
        ["data.on_device=false"],
        ["ckpt_path=last"],
    ],
)
def test_values_inside_their_domain_pass(overrides: list[str]) -> None:
    check_config(composed(*overrides))


def test_null_only_where_the_key_allows_it() -> None:
    assert check_value(TrainConfig, "ckpt_path", None) is None
    assert check_value(AdamWConfig, "lr", None) == "must be set (null is not allowed here)"


def test_slurm_time_formats() -> None:
    assert [slurm_time_minutes(t) for t in ("30", "30:10", "01:00:00", "1-02", "1-02:30", "1-00:00:01")] == [
        30,
        31,
        60,
        1560,
        1590,
        1441,
    ]


def test_keys_typed_in_another_group_name_their_home(compose_cfg) -> None:
    def message(*overrides: str) -> str:
        with pytest.raises(COMPOSE_ERRORS) as info:
            compose_cfg(*overrides)
        return explain(info.value, conf_dir())

    assert message("trainer.precision=16-mixed") == (
        "unknown config key 'trainer.precision'; 'precision' is set as device.precision"
    )
    assert "+" not in message("trainer.precision=16-mixed")
    assert "data.root (with data=cifar10, data=cifar100" in message("data.root=/x")
    assert "did you mean 'trainer.max_epochs'" in message("trainer.max_epoch=3")


def test_the_guard_names_the_group_for_a_library_error() -> None:
    with pytest.raises(ConfigError) as info, building("optimizer", "torch.optim.AdamW"):
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=-1.0)
    assert str(info.value) == "cannot build optimizer torch.optim.AdamW from optimizer.*: Invalid learning rate: -1.0"


def test_the_guard_lets_a_cnnfleet_bug_through() -> None:
    from cnnfleet.training.optim import resolve_optimizer

    with pytest.raises(AttributeError), building("optimizer", "x"):
        resolve_optimizer(None, 64)  # a bug raised inside cnnfleet's own code is not an input error


def test_a_bug_leaves_traceback_txt_and_one_line(tmp_path: Path, capsys) -> None:
    cfg = composed(f"hydra.run.dir={tmp_path}")

    def task(_cfg) -> None:
        {}["missing"]  # noqa: B018 (a bug)

    command = Command(prog="cnnfleet-train", config_name="train", job_name="train", task=task, check="")
    with pytest.raises(SystemExit) as exit_info:
        call_task(command, cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnfleet-train: error: internal error (KeyError: 'missing')")
    assert str(tmp_path / "traceback.txt") in err[0]
    assert "Traceback" in (tmp_path / "traceback.txt").read_text()


def test_what_hydra_lets_through_is_refused_in_one_line() -> None:
    from cnnfleet.config.compose import check_group_options, check_missing

    with pytest.raises(ConfigError, match="did you mean 'digits_fast'"):
        check_group_options(["experiment=digit_fast"])  # an optional group: Hydra would skip it silently
    with pytest.raises(ConfigError, match="data=null: the group takes one of its options"):
        check_group_options(["data=null"])
    check_group_options(["logger=[wandb,csv]", "hydra/sweeper=basic", "+data.x=1", "model=simple_cnn"])
    with pytest.raises(ConfigError, match="data has no value"):
        check_missing(composed("~data"))


def test_a_sweep_is_checked_value_by_value_before_it_starts() -> None:
    from cnnfleet.config.compose import check_sweep, sweep_variants

    assert sweep_variants(["a=1,2", "b=x,y", "c=3"]) == [
        ["c=3", "a=1", "b=x"],
        ["c=3", "a=2", "b=x"],
        ["c=3", "a=1", "b=y"],
    ]
    with pytest.raises(ConfigError, match=r"in the sweep \(optimizer.lr=-1 seed=1\): optimizer.lr=-1.0"):
        check_sweep("train", ["optimizer.lr=0.1,-1", "seed=1,2"])
    check_sweep("train", ["optimizer.lr=0.1,0.01", "model=simple_cnn,airbench"])


def test_an_unknown_flag_is_one_line(capsys) -> None:
    from cnnfleet.cli.app import read_command_line

    with pytest.raises(SystemExit) as info:
        read_command_line("cnnfleet-train", ["--chek"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err == [
        "cnnfleet-train: error: unrecognized arguments: --chek (overrides are key=value; flags: --help, --cfg job, "
        "--check, -m)"
    ]


def test_checkpoints_that_do_not_describe_a_model_are_refused(tmp_path: Path) -> None:
    from cnnfleet.errors import CheckpointError
    from cnnfleet.training.checkpoint_io import read_checkpoint

    base = {"state_dict": {}, "global_step": 1, "epoch": 0}
    for name, hparams in {"empty": {}, "text": "hello", "no-optimizer": {"model": {"_target_": "x"}}}.items():
        torch.save({**base, "hyper_parameters": hparams}, tmp_path / f"{name}.ckpt")
        with pytest.raises(CheckpointError, match="its hyper_parameters do not describe a model"):
            read_checkpoint(tmp_path / f"{name}.ckpt")


def test_a_heading_message_keeps_its_first_detail() -> None:
    from cnnfleet.config.guard import first_line

    error = RuntimeError("Error(s) in loading state_dict for Classifier:\n\tsize mismatch for net.0.weight: ...")
    assert first_line(error) == "Error(s) in loading state_dict for Classifier: size mismatch for net.0.weight: ..."
