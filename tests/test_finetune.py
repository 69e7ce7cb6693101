"""Fine-tuning: model.init_from, model.freeze, optimizer.layer_decay and data.classes.

Pure parts in-process (key alignment, head re-initialisation, layer-decay groups, freezing, class
subsets); the real CLI for the acceptance test (a digits-trained network fine-tuned on three classes
beats training from scratch) and for the one-line errors, from the session's default_run checkpoint.
"""

import csv
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cnnfleet.config.compose import check_config, compose_config
from cnnfleet.config.schema import register_configs
from cnnfleet.data.in_memory import select_classes
from cnnfleet.errors import ConfigError, DataError
from cnnfleet.models import create_model
from cnnfleet.models.freeze import freeze
from cnnfleet.models.init_from import align_keys, init_from, match_head_classes, plan_load
from cnnfleet.training.builders import fine_tune
from cnnfleet.training.module import Classifier
from cnnfleet.training.optim import build_optimizer, layer_decay_groups, layer_of, layers
from cnnfleet.training.schedulers import one_cycle, warmup_cosine
from conftest import run_cli

SIMPLE = {"_target_": "cnnfleet.models.simple_cnn.SimpleCNN", "widths": [8, 16], "dropout": 0.0, "norm": "batch"}


def simple(num_classes: int = 3, widths: tuple = (8, 16)) -> nn.Module:
    return create_model("simple_cnn", in_channels=1, num_classes=num_classes, widths=list(widths))


def classifier(num_classes: int = 3, **optimizer) -> Classifier:
    opt = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1.0, "weight_decay": 0.05, **optimizer}
    return Classifier(
        model={**SIMPLE, "in_channels": 1, "num_classes": num_classes},
        optimizer=opt,
        scheduler=None,
        num_classes=num_classes,
    )


# ---------------------------------------------------------------- loading weights


def test_keys_are_aligned_by_the_prefix_change_that_matches_most() -> None:
    target = {"net.conv1.weight": torch.zeros(1), "net.fc.weight": torch.zeros(1)}  # cnnfleet's torchvision wrapper
    raw = {"conv1.weight": torch.ones(1), "fc.weight": torch.ones(1)}  # torchvision's own state dict
    assert set(align_keys(raw, target)) == set(target)
    lightning = {"net.features.0.weight": torch.ones(1), "net.head.weight": torch.ones(1)}
    assert set(align_keys(lightning, {"features.0.weight": 0, "head.weight": 0})) == {
        "features.0.weight",
        "head.weight",
    }
    ddp = {"module.features.0.weight": torch.ones(1)}
    assert set(align_keys(ddp, {"features.0.weight": 0})) == {"features.0.weight"}
    exported = {"net.conv1.weight": torch.ones(1)}  # cnnfleet-export of a torchvision model: already aligned
    assert set(align_keys(exported, target)) == {"net.conv1.weight"}


def test_a_head_of_another_class_count_is_skipped_and_anything_else_is_a_problem() -> None:
    ten, three = simple(10).state_dict(), simple(3).state_dict()
    load, skipped, problem = plan_load(ten, three, "head.3")
    assert skipped == ["head.3.bias", "head.3.weight"] and not problem
    assert set(load) == set(three) - set(skipped)
    wider = simple(3, widths=(16, 32)).state_dict()
    _, _, problem = plan_load(wider, three, "head.3")
    assert "of another shape (features.0.0.weight: [16, 1, 3, 3] in the file, [8, 1, 3, 3] here)" in problem
    deeper = simple(3, widths=(8, 16, 32)).state_dict()
    _, _, problem = plan_load(deeper, three, "head.3")
    assert "6 not in this network (features.3.0.weight" in problem


def test_an_exported_safetensors_file_loads_and_the_head_is_reinitialised(tmp_path: Path, caplog) -> None:
    trained = simple(10)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()
    path = tmp_path / "model.safetensors"
    save_file(
        {k: v.contiguous() for k, v in trained.state_dict().items()},
        str(path),
        metadata={"cnnfleet": json.dumps({"model": SIMPLE})},
    )
    net = simple(3)
    fresh_head = net.head[3].weight.clone()
    with caplog.at_level(logging.INFO, logger="cnnfleet.models.init_from"):
        init_from(net, str(path), SIMPLE, in_channels=1)
    assert torch.equal(net.features[0][0].weight, trained.features[0][0].weight)
    assert torch.equal(net.features[1][1].running_mean, trained.features[1][1].running_mean)
    assert torch.equal(net.head[3].weight, fresh_head)
    assert "model.init_from: head head.3 re-initialised: 10 -> 3 classes" in caplog.text


def test_a_head_of_the_same_count_is_matched_to_the_data_classes_by_name(tmp_path: Path, caplog) -> None:
    """Same classes in another order: rows reordered; other classes: the fresh head; no names: kept."""
    trained = simple(4)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()
    saved = ["cat", "dog", "fox", "owl"]
    ckpt = tmp_path / "trained.ckpt"  # a cnnfleet-train checkpoint records its classes
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()},
            "hyper_parameters": {"model": SIMPLE},
            "cnnfleet": {"class_names": saved},
        },
        ckpt,
    )
    head = trained.head[3]

    same = simple(4)
    match_head_classes(same, init_from(same, str(ckpt), SIMPLE, in_channels=1), saved)
    assert torch.equal(same.head[3].weight, head.weight)

    reordered = simple(4)
    loaded = init_from(reordered, str(ckpt), SIMPLE, in_channels=1)
    with caplog.at_level(logging.INFO, logger="cnnfleet.models.init_from"):
        match_head_classes(reordered, loaded, ["owl", "cat", "fox", "dog"])
    assert torch.equal(reordered.head[3].weight, head.weight[[3, 0, 2, 1]])
    assert torch.equal(reordered.head[3].bias, head.bias[[3, 0, 2, 1]])
    assert torch.equal(reordered.features[0][0].weight, trained.features[0][0].weight)
    assert "rows reordered to this data's class order (owl, cat, fox, ...)" in caplog.text

    other = simple(4)
    fresh = other.head[3].weight.clone()
    loaded = init_from(other, str(ckpt), SIMPLE, in_channels=1)
    with caplog.at_level(logging.INFO, logger="cnnfleet.models.init_from"):
        match_head_classes(other, loaded, ["cat", "dog", "fox", "bee"])
    assert torch.equal(other.head[3].weight, fresh)
    assert "trained on other classes (here: cat, dog, fox, ...; not in the file: bee)" in caplog.text

    unnamed = tmp_path / "bare.pth"  # a bare state dict says nothing of its classes: the head is kept
    torch.save(trained.state_dict(), unnamed)
    assert init_from(simple(4), str(unnamed), SIMPLE, in_channels=1) is None


def test_mismatched_weights_are_one_line_naming_the_settings_they_were_trained_with(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(
        dict(simple(10, widths=(16, 32)).state_dict()),
        str(path),
        metadata={"cnnfleet": json.dumps({"model": {**SIMPLE, "widths": [16, 32]}})},
    )
    with pytest.raises(ConfigError) as err:
        init_from(simple(3), str(path), SIMPLE, in_channels=1)
    assert "does not fit this SimpleCNN: 11 of another shape (features.0.0.weight: [16, 1, 3, 3]" in str(err.value)
    assert str(err.value).endswith("they were trained with model.widths=[16, 32]") and "\n" not in str(err.value)


def test_weights_of_another_channel_count_name_the_channels(tmp_path: Path) -> None:
    path = tmp_path / "rgb.safetensors"
    rgb = create_model("simple_cnn", in_channels=3, num_classes=3, widths=[8, 16])
    save_file(
        dict(rgb.state_dict()),
        str(path),
        metadata={"cnnfleet": json.dumps({"model": {**SIMPLE, "in_channels": 3, "num_classes": 3}})},
    )
    with pytest.raises(ConfigError, match=r"trained on 3-channel images and these data have 1 \(data.channels\)$"):
        init_from(simple(3), str(path), {**SIMPLE, "in_channels": 1, "num_classes": 3}, in_channels=1)


def test_a_cached_torchvision_weight_name_loads_from_the_hub_cache(tmp_path: Path, monkeypatch, caplog) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="are not on this machine"):
        init_from(nn.Linear(1, 1), "torchvision:resnet18.IMAGENET1K_V1", {}, in_channels=3)
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet17'; did you mean resnet18"):
        init_from(nn.Linear(1, 1), "torchvision:resnet17", {}, in_channels=3)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    imagenet = torchvision.models.resnet18()  # stands in for the download: same keys and shapes
    torch.save(imagenet.state_dict(), cached)
    net = create_model("torchvision", in_channels=1, num_classes=3, name="resnet18", weights=None)
    with caplog.at_level(logging.INFO, logger="cnnfleet.models.init_from"):
        init_from(net, "torchvision:resnet18", {}, in_channels=1)
    assert torch.equal(net.net.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert "head net.fc re-initialised: 1000 -> 3 classes" in caplog.text


def test_a_resumed_run_does_not_apply_init_from(tmp_path: Path, caplog) -> None:
    path = tmp_path / "w.safetensors"
    save_file(dict(simple(3).state_dict()), str(path))
    module = classifier()
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="cnnfleet.training.builders"):
        fine_tune(module, {"init_from": str(path), "freeze": []}, {"in_channels": 1}, resuming=True)
    assert all(torch.equal(before[k], v) for k, v in module.net.state_dict().items())
    assert "not applied: the run resumes from a checkpoint" in caplog.text
    fine_tune(module, {"init_from": str(path), "freeze": []}, {"in_channels": 1}, resuming=False)
    assert not torch.equal(before["head.3.weight"], module.net.head[3].weight)


# ---------------------------------------------------------------- freezing


def test_frozen_parameters_leave_the_optimizer_and_frozen_batchnorm_stays_in_eval_mode() -> None:
    module = classifier()
    frozen = freeze(module.net, ["features.0"])
    assert frozen == sum(p.numel() for p in module.net.features[0].parameters())
    module.train()  # what Lightning does after every validation
    assert not module.net.features[0][1].training and module.net.features[1][1].training
    optimizer = build_optimizer(module, module.net, module.hparams.optimizer)
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not ids & {id(p) for p in module.net.features[0].parameters()}
    assert {id(p) for p in module.net.features[1].parameters()} <= ids
    stats = module.net.features[0][1].running_mean.clone()
    module.net(torch.randn(4, 1, 8, 8) * 5 + 3)
    assert torch.equal(module.net.features[0][1].running_mean, stats)


def test_a_freeze_prefix_matching_nothing_names_the_top_level_modules() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'feature' matches no module of SimpleCNN; its top-level modules are "
        r"features, head",
    ):
        freeze(simple(), ["feature"])
    with pytest.raises(ConfigError, match="freezes every parameter"):
        freeze(simple(), ["features", "head"])


# ---------------------------------------------------------------- layer-wise learning-rate decay


def test_layers_are_top_level_children_with_sequential_stacks_counted_per_block() -> None:
    assert [name for name, _ in layers(simple(widths=(8, 16, 32)))] == [
        "features.0",
        "features.1",
        "features.3",
        "head.3",
    ]
    resnet = create_model("resnet_cifar", in_channels=1, num_classes=3, width=4)
    assert [name for name, _ in layers(resnet)][:3] == ["stem.0", "stem.1", "stages.0"]
    torchvision = create_model("torchvision", in_channels=1, num_classes=3, name="resnet18", weights=None)
    names = [name for name, _ in layers(torchvision)]  # the wrapper's `net` is looked through
    assert names[:3] == ["net.conv1", "net.bn1", "net.layer1.0"] and names[-1] == "net.fc"


def test_layer_decay_scales_each_layer_by_decay_to_its_distance_from_the_head() -> None:
    net = simple(widths=(8, 16, 32))  # 4 layers: lr x 0.125, 0.25, 0.5, 1
    groups = layer_decay_groups(list(net.named_parameters()), layer_of(net), lr=0.1, decay=0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.0125, 0.025, 0.05, 0.1])
    assert [len(g["params"]) for g in groups] == [3, 3, 3, 2]  # conv, BN weight and bias; linear weight and bias


@pytest.mark.parametrize("target", ["torch.optim.AdamW", "torch.optim.SGD"])
def test_layer_decay_works_with_the_optimizers_and_both_schedules(target: str) -> None:
    module = classifier(_target_=target, layer_decay=0.5)
    freeze(module.net, ["features.0"])  # frozen layers keep their depth: the head is still layer 1 of 0..1
    optimizer = build_optimizer(module, module.net, module.hparams.optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 1.0])
    assert all(g["weight_decay"] == 0.05 for g in optimizer.param_groups)  # untouched
    scheduler = one_cycle(optimizer, total_steps=100, pct_start=0.25)
    for _ in range(25):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 1.0], rel=1e-3)  # each group's peak
    optimizer = build_optimizer(module, module.net, module.hparams.optimizer)
    scheduler = warmup_cosine(optimizer, total_steps=10, warmup_fraction=0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.2])  # warm-up step 1 of 5


# ---------------------------------------------------------------- data.classes and the schema


def test_a_class_subset_is_relabelled_in_the_order_given() -> None:
    images = np.arange(6, dtype=np.float32)
    arrays = {"train": (images, np.array([0, 1, 2, 3, 2, 5])), "val": (images[:2], np.array([5, 0]))}
    out = select_classes(arrays, [5, 2])
    assert out["train"][1].tolist() == [1, 1, 0] and out["train"][0].tolist() == [2, 4, 5]
    assert out["val"][1].tolist() == [0]
    with pytest.raises(DataError, match=r"data.classes=\[7, 2\]: the data set has no class 7 \(its labels are 0..5\)"):
        select_classes(arrays, [7, 2])


def compose_cfg(*overrides: str):  # noqa: ANN201
    register_configs()
    return compose_config("train", list(overrides))


def test_schema_checks_class_subsets_and_init_from() -> None:
    cases = {
        "data.classes=[0,1,2]": "data.classes=[0, 1, 2]: selects 3 classes but data.num_classes=10; set "
        "data.num_classes=3",
        "data.classes=[0,1,1]": "lists a class twice",
        "model.init_from=/no/such.ckpt": "model.init_from='/no/such.ckpt': no such file; pass a checkpoint (.ckpt)",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError) as err:
            check_config(compose_cfg(override))
        assert expected in str(err.value), str(err.value)
    check_config(compose_cfg("data.classes=[0,1,2]", "data.num_classes=3", "model.init_from=torchvision:resnet18"))
    with pytest.raises(ConfigError, match=r"^model.init_from=<required>: this recipe fine-tunes trained weights: pass"):
        check_config(compose_cfg("experiment=finetune_digits"))


# ---------------------------------------------------------------- through the CLI

# the same three classes, batch and validation cadence for both runs: 2 steps per "epoch" (a validation
# every 2 steps), 12 epochs; only the start (and the recipe) differs
SUBSET = [
    "data.classes=[3,5,8]",
    "data.num_classes=3",
    "data.batch_size=16",
    "trainer.limit_train_batches=2",
    "trainer.max_epochs=12",
    "logger=csv",
    "test=false",
]
TARGET = 0.95  # val/acc (54 images); measured in README "Fine-tuning"


def steps_to(run: Path, target: float) -> int | None:
    """Optimizer steps until val/acc first reaches `target` (None: never)."""
    for row in csv.DictReader((run / "metrics.csv").open()):
        if row.get("val/acc") and float(row["val/acc"]) >= target:
            return int(row["step"]) + 1
    return None


@pytest.fixture(scope="module")
def finetune(tmp_path_factory: pytest.TempPathFactory, default_run) -> dict:
    """Fine-tune and scratch runs side by side, then a resume of the fine-tune and the error lines."""
    root = tmp_path_factory.mktemp("finetune")
    ckpt = next(default_run.run_dirs()[-1].glob("checkpoints/best.ckpt"))
    first = {
        "finetune": ["experiment=finetune_digits", f"model.init_from={ckpt}", *SUBSET, "task_name=finetune"],
        "scratch": [*SUBSET, "callbacks=none", "task_name=scratch"],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(zip(first, pool.map(lambda a: run_cli("cnnfleet-train", a, root), first.values()), strict=True))
    last = next((root / "logs" / "finetune" / "runs").glob("*/checkpoints/last.ckpt"))
    second = {
        "resume": [
            "experiment=finetune_digits",
            f"model.init_from={ckpt}",
            *SUBSET,
            "task_name=finetune",
            f"ckpt_path={last}",
            "trainer.max_epochs=13",
        ],
        "mismatch": ["--check", "experiment=finetune_digits", f"model.init_from={ckpt}", "model.widths=[16,32,64]"],
        "freeze": ["--check", "experiment=finetune_digits", f"model.init_from={ckpt}", "model.freeze=[feature]"],
        "missing": ["experiment=finetune_digits"],
        "bad_path": [f"model.init_from={root}/nope.ckpt"],
        # the checkpoint's ten classes in reverse order: its head is reordered, not kept as it is
        "reordered": [
            "experiment=finetune_digits",
            f"model.init_from={ckpt}",
            "data.classes=[9,8,7,6,5,4,3,2,1,0]",
            "data.num_classes=10",
            "trainer.max_steps=1",
            "logger=csv",
            "test=false",
            "task_name=reordered",
        ],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs.update(zip(second, pool.map(lambda a: run_cli("cnnfleet-train", a, root), second.values()), strict=True))
    return {"root": root, "runs": runs}


def test_finetuning_a_digits_network_on_three_classes_beats_training_from_scratch(finetune: dict) -> None:
    runs, root = finetune["runs"], finetune["root"]
    for name in ("finetune", "scratch"):
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    assert "model.init_from: head head.3 re-initialised: 10 -> 3 classes" in runs["finetune"].stdout
    tuned = sorted((root / "logs" / "finetune" / "runs").glob("*"))[0]  # [1]: the resumed run
    (scratch,) = (root / "logs" / "scratch" / "runs").glob("*")
    fast, slow = steps_to(tuned, TARGET), steps_to(scratch, TARGET)
    print(f"steps to val/acc >= {TARGET}: fine-tuned {fast}, from scratch {slow} (of 24)")  # pytest -rP shows it
    assert fast is not None and fast <= 6, fast
    assert slow is None or slow > fast, (fast, slow)
    summary = json.loads((tuned / "summary.json").read_text())
    assert summary["resumed_from"] is None and summary["fit"]["global_step"] == 24  # a new run from step 0


def test_a_resumed_finetune_continues_its_own_weights(finetune: dict) -> None:
    result = finetune["runs"]["resume"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not applied: the run resumes from a checkpoint" in result.stdout
    assert "model.init_from: loaded" not in result.stdout
    assert result.summary(result.run_dirs("finetune")[-1])["fit"]["global_step"] == 26


def test_a_checkpoint_of_the_same_classes_in_another_order_keeps_its_accuracy(finetune: dict) -> None:
    result = finetune["runs"]["reordered"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "head head.3 rows reordered to this data's class order (9, 8, 7, ...)" in result.stdout
    # one optimizer step of the head, then the validation at max_steps: the trained network's accuracy
    summary = result.summary(result.run_dirs("reordered")[-1])
    assert summary["fit"]["final_val"]["val/acc"] > 0.9, summary["fit"]


@pytest.mark.parametrize(
    ("case", "line"),
    [
        (
            "mismatch",
            "does not fit this SimpleCNN: 16 of another shape (features.0.0.weight: [32, 1, 3, 3] in the "
            "file, [16, 1, 3, 3] here); they were trained with model.widths=[32, 64, 128]",
        ),
        ("freeze", "model.freeze: 'feature' matches no module of SimpleCNN; its top-level modules are features, head"),
        ("missing", "model.init_from=<required>: this recipe fine-tunes trained weights: pass model.init_from="),
        ("bad_path", "/nope.ckpt': no such file; pass a checkpoint (.ckpt), a .safetensors or .pth state dict"),
    ],
)
def test_finetune_input_errors_are_one_line_and_exit_2(finetune: dict, case: str, line: str) -> None:
    result = finetune["runs"][case]
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("cnnfleet-train: error: ") and line in lines[0], lines[0]
