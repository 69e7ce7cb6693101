"""Every config option composes and builds; the schema rejects typos and wrong types."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnfleet.config.compose import compose_config
from cnnfleet.config.errors import COMPOSE_ERRORS, explain, group_options
from cnnfleet.config.schema import register_configs
from cnnfleet.config.search_path import conf_dir
from cnnfleet.training.builders import build_callbacks, build_classifier, build_datamodule, build_loggers

GROUPS = [
    "data",
    "model",
    "optimizer",
    "scheduler",
    "device",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
    "hparams_search",
]


def all_options() -> list[tuple[str, str]]:
    return [(group, option) for group in GROUPS for option in group_options(conf_dir(), group)]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert group_options(conf_dir(), group), f"conf/{group} is empty"


@pytest.mark.parametrize(("group", "option"), all_options(), ids=lambda v: str(v))
def test_every_option_composes_and_builds(compose_cfg, tmp_path: Path, group: str, option: str) -> None:
    # a fine-tuning recipe needs the user's checkpoint (tests/test_finetune.py runs it with one)
    weights = ["model.init_from=null"] if option.startswith("finetune_") else []
    # an image folder's (shards': index.json's) class count is read at launch (cli.complete_from_data)
    counted = ["data.num_classes=1000"] if option in ("imagefolder", "shards", "imagenet_resnet50") else []
    cfg = compose_cfg(f"{group}={option}", f"paths.output_dir={tmp_path}", *weights, *counted)
    OmegaConf.resolve(cfg.data)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    module = build_classifier(cfg.model, cfg.data, cfg)
    build_loggers(cfg.logger)
    build_callbacks(cfg.callbacks)
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
    assert message == "wrong type for 'optimizer.nesterov': Value 'maybe' is not a valid bool (type str)"
    # a key of another option: named with the option that has it, not only "unknown"
    message = explain_overrides("optimizer=adamw", "optimizer.nesterov=true")
    assert "'nesterov' is set as optimizer.nesterov (with optimizer=sgd)" in message


def test_eval_config_requires_ckpt_path(compose_cfg) -> None:
    cfg = compose_cfg(config_name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")


def test_experiment_recipes_compose_to_what_they_promise(compose_cfg) -> None:
    from cnnfleet.training.optim import resolve_optimizer

    cfg = compose_cfg("experiment=imagenet_resnet50")
    assert cfg.model.name == "resnet50" and cfg.data._target_.endswith("ShardsDataModule")
    assert cfg.data.decode == "auto" and cfg.data.root.endswith("imagenet-shards")
    assert cfg.data.num_classes is None and cfg.label_smoothing == 0.1 and cfg.trainer.max_epochs == 90
    assert cfg.device.devices * cfg.device.num_nodes == cfg.cluster.nodes * cfg.cluster.tasks_per_node == 32
    assert cfg.device.precision == "bf16-mixed"
    lr = resolve_optimizer(OmegaConf.to_container(cfg.optimizer, resolve=True), cfg.data.batch_size)["lr"]
    assert lr == pytest.approx(0.4)  # linear rule: 0.1 x 1024 / 256
    assert cfg.scheduler.warmup_fraction * cfg.trainer.max_epochs == pytest.approx(5, abs=0.01)  # 5 warm-up epochs

    cfg = compose_cfg("experiment=cifar10_resnet18")
    assert (cfg.data.name, cfg.model.depth, cfg.data.crop_padding, cfg.data.horizontal_flip) == ("cifar10", 18, 4, True)
    cfg = compose_cfg("experiment=mnist_cnn")
    assert (cfg.data.name, cfg.data.channels, cfg.data.image_size) == ("mnist", 1, 28)


def test_a_model_too_big_for_the_images_fails_at_build_time(compose_cfg, tmp_path: Path) -> None:
    from cnnfleet.errors import ConfigError

    cfg = compose_cfg("model=torchvision", "model.name=convnext_tiny", f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"model convnext_tiny cannot take 1x8x8 images .* larger data.image_size"):
        build_classifier(cfg.model, cfg.data, cfg)
