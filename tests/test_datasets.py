"""Each data set option through the real CLI, on small files written in the real format (no download)."""

import csv
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnfleet.data.augment import auto_augment, mix
from cnnfleet.errors import ConfigError
from conftest import CliResult, run_cli, wait_until
from dataset_files import write_cifar10, write_cifar100, write_image_folder, write_mnist

QUICK = ["trainer.max_epochs=1", "logger=csv", "data.batch_size=32"]
IMAGEFOLDER = [
    "data=imagefolder",
    "data.image_size=32",
    "data.resize_size=36",
    "data.batch_size=8",
    "data.num_workers=1",
    "trainer.max_epochs=1",
    "logger=csv",
]


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
    assert "val/acc" in summary["fit"]["final_val"]
    header, *rows = (run / "confusion_matrix.csv").read_text().splitlines()
    assert header == "# " + ",".join(names)  # the confusion matrix is labelled with the class names
    # the test accuracy is the matrix's diagonal over every test image (the data's real labels were read)
    counts = np.array([[int(float(x)) for x in row.split(",")] for row in rows])
    assert counts.shape == (classes, classes) and counts.sum() == sizes["test"]
    assert summary["test"]["test/acc"] == pytest.approx(np.trace(counts) / counts.sum(), abs=1e-6)
    if option == "mnist":  # the gzipped IDX files were unpacked next to themselves, as torchvision expects
        assert (root / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_mnist_learns_from_the_idx_files(root) -> None:
    summary = json.loads(
        (
            run_folder(train(root, "data=mnist", "trainer.max_epochs=3", "logger=csv", "data.batch_size=32"))
            / "summary.json"
        ).read_text()
    )
    assert summary["test"]["test/acc"] >= 0.9  # class prototypes + noise: easy once the files are read right


def test_image_folder_trains_predicts_and_exports(root) -> None:
    result = train(root, *IMAGEFOLDER, f"data.root={root / 'data' / 'pets'}", "trainer.max_epochs=3")
    run = run_folder(result)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 24, "val": 24, "test": 24}  # no test/ folder: test = val
    assert json.loads((run / "classes.json").read_text()) == ["cat", "dog", "fox"]
    # data.num_classes left unset: counted from train/'s folders at launch, recorded like a given value
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["num_classes"] == 3
    assert "data.num_classes=3" in (run / "command.txt").read_text()
    ckpt = run / "checkpoints" / "best.ckpt"

    predicted = run_cli(
        "cnnfleet-predict", [f"ckpt_path={ckpt}", f"inputs={root / 'data' / 'pets' / 'val'}", "top_k=2"], root
    )
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

    from cnnfleet.serving.inference import load_trained

    trained = load_trained(ckpt)
    pixels = torch.rand(5, *trained.input_shape())  # another batch size than the export's example
    mean = torch.tensor(trained.data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(trained.data["std"]).view(1, -1, 1, 1)
    x = (pixels - mean) / std
    with torch.no_grad():
        expected = trained.module.net(x)
        program = torch.export.load(str(export_dir / "model.pt2")).module()  # raw pixels in: normalises inside
        assert torch.allclose(program(pixels), expected, atol=1e-5)
        net = instantiate(trained.module.hparams.model).eval()  # the bare network takes normalised images
        net.load_state_dict(load_file(str(export_dir / "model.safetensors")))
        assert torch.equal(net(x), expected)
    report = json.loads((export_dir / "export.json").read_text())
    assert report["class_names"] == trained.class_names and max(report["max_abs_logit_diff"].values()) <= 1e-4
    assert report["input"]["mean"] == trained.data["mean"] and report["input"]["resize_size"] == trained.data.get(
        "resize_size"
    )


def test_augmentations_compose_with_an_in_memory_data_set(root) -> None:
    result = train(
        root,
        "data=cifar10",
        "data.verify_checksums=false",
        *QUICK,
        "data.auto_augment=randaugment",
        "data.mixup_alpha=0.2",
        "data.cutmix_alpha=1.0",
        "label_smoothing=0.1",
    )
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


def test_nodes_sharing_a_data_root_take_turns_preparing_it(tmp_path: Path) -> None:
    """Two trainings (as two nodes would) on one data root holding only the distributed .gz files: while
    another process holds the preparation lock both wait; then one unpacks, atomically, and both train."""
    import fcntl
    import subprocess

    from cnnfleet.data.prepare_lock import LOCK_NAME
    from conftest import script_path

    data = write_mnist(tmp_path / "shared") / "MNIST" / "raw"
    lock = os.open(tmp_path / "shared" / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a third node is preparing
    os.write(lock, b"pid 1 on node3")
    args = [
        "data=mnist",
        f"data.root={tmp_path / 'shared'}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "logger=none",
        "test=false",
        "data.batch_size=32",
    ]
    env = {**os.environ, "CNNFLEET_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    nodes = [
        subprocess.Popen(
            [script_path("cnnfleet-train"), *args, f"hydra.run.dir={tmp_path / f'run{i}'}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [tmp_path / f"run{i}" / "train.log" for i in range(2)]
        waiting = wait_until(
            lambda: all(p.is_file() and "waiting for pid 1 on node3" in p.read_text() for p in logs), 120
        )
        assert waiting and all(node.poll() is None for node in nodes)
        assert not (data / "train-images-idx3-ubyte").exists()  # nobody unpacked while the lock was held
    finally:
        os.close(lock)
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    with gzip.open(data / "train-images-idx3-ubyte.gz", "rb") as packed:
        assert (data / "train-images-idx3-ubyte").read_bytes() == packed.read()
    assert not [p for p in data.iterdir() if ".tmp-" in p.name]


def test_a_download_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    """torchvision's own download code against a local server: files appear under their names only
    once complete; a failed download leaves nothing behind."""
    import functools
    import http.server
    import threading

    import torchvision.datasets as tvd

    from cnnfleet.data.torchvision_sets import download_atomically

    served = write_mnist(tmp_path / "served") / "MNIST" / "raw"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/"
        local = type(
            "MNIST", (tvd.MNIST,), {"mirrors": [mirror], "resources": [(f, None) for f, _ in tvd.MNIST.resources]}
        )
        download_atomically(local, tmp_path / "root", "mnist")
        raw = tmp_path / "root" / "MNIST" / "raw"
        assert sorted(p.name for p in raw.iterdir()) == sorted(f.removesuffix(".gz") for f, _ in tvd.MNIST.resources)
        assert [p.name for p in (tmp_path / "root").iterdir()] == ["MNIST"]  # the staging folder is gone

        (served / "t10k-labels-idx1-ubyte.gz").unlink()  # the last file fails (404)
        with pytest.raises(RuntimeError, match="Error downloading t10k-labels"):
            download_atomically(local, tmp_path / "other", "mnist")
        assert not (tmp_path / "other" / "MNIST").exists() and not list((tmp_path / "other").iterdir())
    finally:
        server.shutdown()
