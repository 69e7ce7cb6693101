"""Each data set option through the real CLI, on small files written in the real format (no download)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnfleet.data.augment import auto_augment, mix
from cnnfleet.errors import ConfigError
from conftest import CliResult, run_cli
from dataset_files import write_cifar10, write_cifar100, write_image_folder, write_mnist

QUICK = ["trainer.max_epochs=1", "logger=csv", "data.batch_size=32"]
IMAGEFOLDER = ["data=imagefolder", "data.num_classes=3", "data.image_size=32", "data.resize_size=36",
               "data.batch_size=8", "data.num_workers=1", "trainer.max_epochs=1", "logger=csv"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every data set in its real on-disk format."""
    root = tmp_path_factory.mktemp("datasets")
    data = root / "data"
    write_mnist(data, "MNIST")
    write_mnist(data, "FashionMNIST")
    write_cifar10(data)
    write_cifar100(data, n_train=1000, n_test=200)
    write_image_folder(data / "pets")
    return root


def train(root: Path, *args: str) -> CliResult:
    result = run_cli("cnnfleet-train", list(args), root)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_folder(result: CliResult) -> Path:
    return result.run_dirs()[-1]


@pytest.mark.parametrize(
    ("option", "sizes", "classes", "first_class"),
    [
        ("mnist", {"train": 270, "val": 30, "test": 100}, 10, "0 - zero"),
        ("fashion_mnist", {"train": 270, "val": 30, "test": 100}, 10, "T-shirt/top"),
        ("cifar10", {"train": 270, "val": 30, "test": 100}, 10, "airplane"),
        ("cifar100", {"train": 900, "val": 100, "test": 200}, 100, "class00"),
    ],
)
def test_torchvision_data_sets_train_from_their_real_files(root, option, sizes, classes, first_class) -> None:
    result = train(root, f"data={option}", "data.verify_checksums=false", *QUICK)
    run = run_folder(result)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split_sizes"] == sizes
    names = json.loads((run / "classes.json").read_text())
    assert len(names) == classes and names[0] == first_class
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0 and "val/acc" in summary["fit"]["final_val"]
    header = (run / "confusion_matrix.csv").read_text().splitlines()[0]
    assert header == "# " + ",".join(names)  # the confusion matrix is labelled with the class names
    if option == "mnist":  # the gzipped IDX files were unpacked next to themselves, as torchvision expects
        assert (root / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_mnist_learns_from_the_idx_files(root) -> None:
    summary = json.loads((run_folder(train(root, "data=mnist", "trainer.max_epochs=3", "logger=csv",
                                           "data.batch_size=32")) / "summary.json").read_text())  # fmt: skip
    assert summary["test"]["test/acc"] >= 0.9  # class prototypes + noise: easy once the files are read right


def test_image_folder_trains_predicts_and_exports(root) -> None:
    result = train(root, *IMAGEFOLDER, f"data.root={root / 'data' / 'pets'}", "trainer.max_epochs=3")
    run = run_folder(result)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 24, "val": 24, "test": 24}  # no test/ folder: test = val
    assert json.loads((run / "classes.json").read_text()) == ["cat", "dog", "fox"]
    ckpt = run / "checkpoints" / "best.ckpt"

    predicted = run_cli("cnnfleet-predict", [f"ckpt_path={ckpt}", f"inputs={root / 'data' / 'pets' / 'val'}",
                                             "top_k=2"], root)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (pred_dir,) = (root / "logs" / "predict" / "runs").iterdir()
    rows = list(csv.DictReader((pred_dir / "predictions.csv").open()))
    assert len(rows) == 24 and all(len(r["top_k"].split("; ")) == 2 for r in rows)
    correct = sum(Path(r["file"]).parent.name == r["class"] for r in rows)
    # the same images through the same eval transform: predict agrees with the run's test accuracy
    assert correct / len(rows) == pytest.approx(summary["test"]["test/acc"], abs=1e-6)
    assert "dog" in predicted.stdout or "cat" in predicted.stdout or "fox" in predicted.stdout

    exported = run_cli("cnnfleet-export", [f"ckpt_path={ckpt}"], root)
    assert exported.returncode == 0, exported.stderr[-3000:]
    (export_dir,) = (root / "logs" / "export" / "runs").iterdir()
    check_export_matches_checkpoint(export_dir, ckpt)


def check_export_matches_checkpoint(export_dir: Path, ckpt: Path) -> None:
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from cnnfleet.inference import load_trained

    trained = load_trained(ckpt)
    x = torch.randn(5, *trained.input_shape())  # another batch size than the export's example
    with torch.no_grad():
        expected = trained.module.net(x)
        program = torch.export.load(str(export_dir / "model.pt2")).module()
        assert torch.allclose(program(x), expected, atol=1e-5)
        net = instantiate(trained.module.hparams.model).eval()
        net.load_state_dict(load_file(str(export_dir / "model.safetensors")))
        assert torch.equal(net(x), expected)
    report = json.loads((export_dir / "export.json").read_text())
    assert report["class_names"] == trained.class_names and max(report["max_abs_logit_diff"].values()) <= 1e-4


def test_augmentations_compose_with_an_in_memory_data_set(root) -> None:
    result = train(root, "data=cifar10", "data.verify_checksums=false", *QUICK, "data.auto_augment=randaugment",
                   "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0", "label_smoothing=0.1")  # fmt: skip
    assert json.loads((run_folder(result) / "summary.json").read_text())["status"] == "completed"


def bad(root: Path, *args: str, command: str = "cnnfleet-train") -> str:
    result = run_cli(command, list(args), root)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{command}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_cifar_files_that_fail_the_official_checksums_are_refused(root) -> None:
    # the other bad data inputs (missing root, no images, undecodable image, val-only class, files
    # missing offline, wrong class count) are rows of docs/errors.md, run by test_error_catalogue.py
    assert "official MD5s" in bad(root, "data=cifar10", "data.download=false", *QUICK)


def test_mix_makes_soft_labels_and_auto_augment_keeps_the_batch() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    mixed, soft = mix(images, labels, 4, mixup_alpha=0.2, cutmix_alpha=1.0)
    assert mixed.shape == images.shape and soft.shape == (8, 4)
    assert torch.allclose(soft.sum(dim=1), torch.ones(8))
    assert mix(images, labels, 4, 0.0, 0.0)[1] is labels  # off: untouched
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    out = auto_augment(images.clamp(-2, 2), "trivialaugment", mean, std)
    assert out.shape == images.shape and out.dtype == torch.float32
    with pytest.raises(ConfigError, match="valid: none, randaugment, trivialaugment"):
        auto_augment(images, "autoaugment", mean, std)
    assert np.isfinite(out.numpy()).all()
