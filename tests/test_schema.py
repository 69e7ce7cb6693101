"""Every config option composes and builds; the schema rejects typos and wrong types."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnfleet.cli import compose_config
from cnnfleet.conf_dir import conf_dir
from cnnfleet.config_errors import COMPOSE_ERRORS, explain, group_options
from cnnfleet.schema import register_configs
from cnnfleet.training.builders import build_callbacks, build_classifier, build_datamodule, build_loggers

GROUPS = ["data", "model", "optimizer", "scheduler", "device", "trainer", "logger", "callbacks", "experiment", "debug"]


def all_options() -> list[tuple[str, str]]:
    return [(group, option) for group in GROUPS for option in group_options(conf_dir(), group)]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert group_options(conf_dir(), group), f"conf/{group} is empty"


@pytest.mark.parametrize(("group", "option"), all_options(), ids=lambda v: str(v))
def test_every_option_composes_and_builds(compose_cfg, tmp_path: Path, group: str, option: str) -> None:
    cfg = compose_cfg(f"{group}={option}", f"paths.output_dir={tmp_path}")
    OmegaConf.resolve(cfg.data)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    loggers = build_loggers(cfg.logger)
    build_callbacks(cfg.callbacks, has_logger=bool(loggers))
    optimizer = instantiate(module.hparams.optimizer)(params=module.parameters())
    if cfg.scheduler is not None:
        instantiate(cfg.scheduler)(optimizer=optimizer, total_steps=100)
    assert datamodule.num_classes == cfg.data.num_classes


def explain_overrides(*overrides: str) -> str:
    register_configs()
    with pytest.raises(COMPOSE_ERRORS) as info:
        compose_config("train", list(overrides))
    return explain(info.value, conf_dir())


def test_misspelled_key_names_the_key_and_suggests_the_right_one() -> None:
    message = explain_overrides("trainer.max_epoch=3")
    assert "trainer.max_epoch" in message and "did you mean 'trainer.max_epochs'" in message
    assert "\n" not in message


def test_misspelled_top_level_key_suggests_the_group() -> None:
    assert "did you mean 'trainer'" in explain_overrides("trainr.max_epochs=3")


def test_wrong_type_names_the_key_and_the_expected_type() -> None:
    message = explain_overrides("trainer.max_epochs=abc")
    assert "trainer.max_epochs" in message and "Integer" in message


def test_unknown_option_lists_the_valid_options() -> None:
    message = explain_overrides("model=resnet")
    assert "unknown option 'resnet' for group 'model'" in message
    assert "resnet_cifar, simple_cnn" in message


def test_schema_types_the_option_specific_keys() -> None:
    message = explain_overrides("optimizer=sgd", "optimizer.nesterov=maybe")
    assert "optimizer.nesterov" in message


def test_eval_config_requires_ckpt_path(compose_cfg) -> None:
    cfg = compose_cfg(config_name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")
