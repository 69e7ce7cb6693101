"""data=shards and cnnfleet-prepare: the plan's guarantees, preparation that resumes and repeats
exactly, loaders that resume mid-epoch bit for bit whatever the number of workers, and the one-line
errors of damaged shards."""

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from cnnfleet.cli.prepare import parse, prepare
from cnnfleet.data.shards import decode as dec
from cnnfleet.data.shards.format import ShardIndex
from cnnfleet.data.shards.loader import decode_raw
from cnnfleet.data.shards.module import ShardsDataModule
from cnnfleet.data.shards.plan import eval_plan, train_plan, worker_batches
from cnnfleet.errors import ConfigError, DataError
from conftest import BIN
from dataset_files import write_cifar10, write_image_folder, write_mnist

COUNTS = [10, 10, 10, 10, 7, 10, 10, 3]  # samples per shard (68)


def shards_of(positions: np.ndarray, counts: list[int]) -> set[int]:
    return set((np.searchsorted(np.cumsum(counts), positions, side="right")).tolist())


@pytest.mark.parametrize("world", [2, 4])
def test_an_epoch_has_the_same_samples_for_one_and_n_ranks_each_rank_reading_its_own_shards(world: int) -> None:
    one = train_plan(COUNTS, seed=3, epoch=1, world=1, rank=0, global_batch=8, shuffle_window=16)
    parts = [
        train_plan(COUNTS, seed=3, epoch=1, world=world, rank=r, global_batch=8, shuffle_window=16)
        for r in range(world)
    ]
    assert one.shape == (8, 8) and all(p.shape == (8, 8 // world) for p in parts)  # 68 -> 8 whole global batches
    together = np.concatenate([p.ravel() for p in parts])
    assert sorted(together.tolist()) == sorted(one.ravel().tolist())  # the same samples, each once
    assert len(set(together.tolist())) == 64
    touched = [shards_of(p.ravel(), COUNTS) for p in parts]
    shared = sum(len(touched[r] & touched[r + 1]) for r in range(world - 1))
    assert shared <= world - 1  # at most the one shard at each boundary
    again = train_plan(COUNTS, seed=3, epoch=1, world=world, rank=1, global_batch=8, shuffle_window=16)
    assert (again == parts[1]).all()
    other_epoch = train_plan(COUNTS, seed=3, epoch=2, world=1, rank=0, global_batch=8, shuffle_window=16)
    assert not (other_epoch == one).all()


def test_evaluation_reads_every_sample_once_in_equal_batch_counts() -> None:
    plans = [eval_plan(COUNTS, world=3, rank=r, batch=5) for r in range(3)]
    assert len({len(p) for p in plans}) == 1
    assert sorted(np.concatenate([b for p in plans for b in p]).tolist()) == list(range(sum(COUNTS)))


def test_workers_take_turns_so_the_loader_yields_the_plan_in_order_from_any_batch() -> None:
    for workers in (1, 2, 3):
        for skip in (0, 4, 5):
            made = [list(worker_batches(11, skip, workers, w)) for w in range(workers)]
            turns = [batch for row in zip(*[m + [None] for m in made], strict=False) for batch in row]
            assert [b for b in turns if b is not None] == list(range(skip, 11))


# ---------------------------------------------------------------- preparation


@pytest.fixture(scope="module")
def images_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    write_image_folder(
        root, classes=("ant", "bee", "cat", "dog"), per_class=12, size=40, splits=("train", "val", "test")
    )
    return root


@pytest.fixture(scope="module")
def prepared(images_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "shards"
    prepare(parse([str(images_root), str(out), "--shard-size", "10", "--size", "36", "--workers", "2", "--quiet"]))
    return out


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.tar"))}


def test_prepare_writes_webdataset_shards_with_an_index_of_counts_and_checksums(prepared: Path, images_root: Path):
    index = ShardIndex.read(prepared)
    assert index.classes == ["ant", "bee", "cat", "dog"]
    assert {split: index.size(split) for split in index.splits} == {"train": 48, "val": 48, "test": 48}
    assert [s.count for s in index.splits["train"]] == [10, 10, 10, 10, 8]
    first = index.splits["train"][0]
    assert hashlib.sha256((prepared / first.path).read_bytes()).hexdigest() == first.sha256
    with tarfile.open(prepared / first.path) as tar:  # plain tar in WebDataset's layout
        names = tar.getnames()
        assert names[:2] == ["000000_000000.cls", "000000_000000.jpg"]
        label = int(tar.extractfile(names[0]).read())
        with Image.open(tar.extractfile(names[1])) as image:
            assert image.format == "JPEG" and min(image.size) == 36  # resized down from 40
    assert 0 <= label < 4
    per_class = {}
    for shard in index.splits["train"]:
        with tarfile.open(prepared / shard.path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".cls"):
                    cls = int(tar.extractfile(member).read())
                    per_class[cls] = per_class.get(cls, 0) + 1
    assert per_class == {0: 12, 1: 12, 2: 12, 3: 12}  # every image once, with its folder's label
    assert len(shards_of(np.arange(10), [10] * 5)) == 1


def test_prepare_again_changes_nothing_and_an_interrupted_one_finishes_the_same(
    prepared: Path, tmp_path: Path, images_root: Path
) -> None:
    before, index_before = digests(prepared), (prepared / "index.json").read_text()
    args = [str(images_root), str(prepared), "--shard-size", "10", "--size", "36", "--quiet"]
    assert "all 15 shards were already there" in prepare(parse(args))
    assert digests(prepared) == before and (prepared / "index.json").read_text() == index_before

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)  # as if stopped part-way: the index and two shards not yet written
    (copy / "index.json").unlink()
    (copy / "train" / "shard-000002.tar").unlink()
    (copy / ".prepare" / "val" / "shard-000004.tar.json").unlink()
    with pytest.raises(DataError, match="has not finished: run the same cnnfleet-prepare command again"):
        ShardIndex.read(copy)
    assert "wrote 2 of 15 shards" in prepare(parse([str(images_root), str(copy), *args[2:]]))
    assert digests(copy) == before  # reproducible bytes: the same checksums


def test_prepare_refuses_other_settings_a_foreign_folder_and_a_corrupt_image(
    prepared: Path, images_root: Path, tmp_path: Path
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "cnnfleet-prepare"), *args], capture_output=True, text=True, timeout=120)

    other = cli(str(images_root), str(prepared), "--shard-size", "10", "--size", "24")
    assert other.returncode == 2 and "was prepared with other settings (size: 36 -> 24)" in other.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = cli(str(images_root), str(foreign))
    assert refused.returncode == 2 and "did not write; choose a new or empty folder" in refused.stderr
    broken = tmp_path / "broken"
    shutil.copytree(images_root, broken)
    bad = broken / "train" / "cat" / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    failed = cli(str(broken), str(tmp_path / "out"), "--workers", "2")
    assert failed.returncode == 2 and f"cannot decode image {bad}" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert cli(str(images_root), str(tmp_path / "x"), "--quality", "0").returncode == 2


def test_prepare_reads_mnist_and_cifar_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", n_train=200, n_test=50)
    write_cifar10(tmp_path / "cifar", per_batch=20, n_test=30)
    prepare(parse([str(tmp_path / "mnist"), str(tmp_path / "m"), "--from", "mnist", "--size", "0", "--quiet"]))
    prepare(parse([str(tmp_path / "cifar"), str(tmp_path / "c"), "--from", "cifar10", "--quiet"]))
    mnist, cifar = ShardIndex.read(tmp_path / "m"), ShardIndex.read(tmp_path / "c")
    assert (mnist.size("train"), mnist.size("val"), mnist.size("test")) == (180, 20, 50)
    assert (cifar.size("train"), cifar.size("val"), cifar.size("test")) == (90, 10, 30)
    assert mnist.settings["mode"] == "L" and cifar.num_classes == 10


# ---------------------------------------------------------------- loading


def data_module(root: Path, **overrides: object) -> ShardsDataModule:
    kwargs = {
        "root": str(root),
        "batch_size": 8,
        "num_classes": None,
        "channels": 3,
        "image_size": 32,
        "resize_size": 36,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "num_workers": 0,
        "pin_memory": False,
        "crop_scale_min": 0.3,
        "horizontal_flip": True,
        "auto_augment": "none",
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "shuffle_window": 16,
        **overrides,
    }
    dm = ShardsDataModule(**kwargs)
    dm.setup()
    return dm


def batches(loader: object, epoch: int = 0, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.epoch_fn, loader.skip_fn = (lambda: epoch), (lambda: skip)
    return list(loader)


def same(a: list, b: list) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in pairs)


def test_a_resumed_epoch_continues_bit_for_bit_with_any_number_of_workers(prepared: Path) -> None:
    dm = data_module(prepared, auto_augment="trivialaugment")
    full = batches(dm.train_dataloader(), epoch=1)
    assert len(full) == 6 and full[0][0].dtype == torch.uint8 and full[0][0].shape == (8, 3, 32, 32)
    workers = data_module(prepared, num_workers=2, auto_augment="trivialaugment")
    assert same(batches(workers.train_dataloader(), epoch=1), full)
    assert same(batches(workers.train_dataloader(), epoch=1, skip=3), full[3:])
    assert same(batches(dm.train_dataloader(), epoch=1, skip=5), full[5:])
    assert not same(batches(dm.train_dataloader(), epoch=2), full)  # another epoch, another order
    seen = torch.cat([labels for _, labels in full])
    assert seen.bincount(minlength=4).tolist() == [12, 12, 12, 12]  # 48 = 6 whole batches: every image once


def test_evaluation_batches_hold_every_sample_once(prepared: Path) -> None:
    dm = data_module(prepared, batch_size=10)
    val = batches(dm.val_dataloader())
    assert sum(len(labels) for _, labels in val) == 48
    assert dm.split_sizes() == {"train": 48, "val": 48, "test": 48}
    assert dm.num_classes == 4 and dm.class_names == ["ant", "bee", "cat", "dog"]


def test_the_device_decode_path_gives_the_workers_batches(prepared: Path) -> None:
    """data.decode=gpu's code on the CPU: batches left encoded, decoded by decode_raw, equal the workers' ones."""
    dm = data_module(prepared)
    loader = dm.train_dataloader()
    loader.dataset.decode_on_device = True
    raw = batches(loader, epoch=1)
    assert isinstance(raw[0], dict) and isinstance(raw[0]["jpeg"][0], bytes)
    decoded = [decode_raw(batch, dm.spec, torch.device("cpu")) for batch in raw]
    assert same(decoded, batches(dm.train_dataloader(), epoch=1))
    images, _ = dm.on_after_batch_transfer(decoded[0], 0)
    assert images.dtype == torch.float32 and abs(images.mean().item()) < 4


def test_decode_gpu_on_a_cpu_run_and_damaged_shards_are_one_line_errors(prepared: Path, tmp_path: Path) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    dm = data_module(prepared, decode="gpu")
    dm.trainer = trainer
    with pytest.raises(ConfigError, match="data.decode=gpu needs a CUDA device, this run trains on cpu"):
        dm.train_dataloader()
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = copy / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(DataError, match="shard-000001.tar is 5000 bytes but index.json says .*truncated"):
        batches(data_module(copy, shuffle_window=100).train_dataloader())
    index = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**index, "format": "other/9"}))
    with pytest.raises(DataError, match="prepare the data set again with this version"):
        data_module(copy)
    with pytest.raises(DataError, match="has no index.json; write shards with cnnfleet-prepare <image folder>"):
        data_module(tmp_path)


def test_random_boxes_follow_torchvision_and_central_boxes_the_eval_transform() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = dec.random_box(120, 200, 0.08, generator)
        assert 0 <= top <= 120 - h and 0 <= left <= 200 - w and 0.08 * 0.9 <= h * w / 24000 <= 1
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1 or (h, w) == (120, 160)
    assert dec.center_box(256, 320, 224, 256) == (16, 48, 224, 224)  # Resize(256) + CenterCrop(224)
    assert dec.center_box(512, 640, 224, 256) == (32, 96, 448, 448)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
        self.seen: list[list[int]] = []

    def training_step(self, batch: tuple, index: int) -> torch.Tensor:
        images, labels = batch
        self.seen.append([*labels.tolist(), round(images.sum().item(), 2)])
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _SaveAt(L.Callback):
    """A mid-epoch checkpoint, as ModelCheckpoint(every_n_train_steps) or a SIGTERM writes one."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_a_lightning_run_checkpointed_mid_epoch_resumes_with_the_next_batch(prepared: Path, tmp_path: Path) -> None:
    def fit(ckpt: str | None = None) -> _Tiny:
        model = _Tiny()
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_checkpointing=False,
            use_distributed_sampler=False,
            callbacks=[_SaveAt(8, tmp_path / "mid.ckpt")] if ckpt is None else [],
        )
        trainer.fit(model, datamodule=data_module(prepared, num_workers=2), ckpt_path=ckpt)
        return model

    whole = fit().seen  # saves at step 8: epoch 1, batch 3 of 6
    rest = fit(str(tmp_path / "mid.ckpt")).seen
    assert len(whole) == 12 and rest == whole[8:]


# ---------------------------------------------------------------- the recipe, end to end


def write_imagenet_subset(root: Path, classes: int = 10, per_class: int = 50, size: int = 256) -> Path:
    """An ImageNet-format subset: synset-named folders of real JPEGs (smooth images, as photos compress)."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, size)
    for c in range(classes):
        synset = f"n{1440764 + c:08d}"
        for split, count in (("train", per_class), ("val", per_class // 5)):
            folder = root / split / synset
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                phase = rng.uniform(0, 1, 3)
                pixels = np.stack(
                    [np.outer(np.sin((grid + phase[k]) * (c + 1 + k)), np.cos(grid * (c + 2))) for k in range(3)],
                    axis=-1,
                )
                image = ((pixels * 0.5 + 0.5) * 255 + rng.normal(0, 8, pixels.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{synset}_{i}.JPEG", quality=90)
    return root


SMALL = [
    "device.accelerator=cpu",
    "device.num_nodes=1",
    "device.precision=32-true",
    "data.image_size=32",
    "data.resize_size=36",
    "data.batch_size=20",
    "data.num_workers=1",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=csv",
]


@pytest.mark.slow
def test_imagenet_recipe_prepares_trains_on_one_and_two_processes_evaluates_and_predicts(tmp_path: Path) -> None:
    from conftest import run_cli

    images = write_imagenet_subset(tmp_path / "imagenet")
    prepared = run_cli(
        "cnnfleet-prepare", [str(images), str(tmp_path / "shards"), "--shard-size", "64", "--workers", "2"], tmp_path
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert "10 classes, train 500, val 100 images; wrote 10 of 10 shards" in prepared.stdout
    recipe = ["experiment=imagenet_resnet50", f"data.root={tmp_path / 'shards'}", *SMALL]
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    one = run_cli("cnnfleet-train", [*recipe, "device.devices=1"], tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    summary = one.summary()
    assert summary["split_sizes"] == {"train": 500, "val": 100, "test": 100}
    assert summary["model"]["name"] == "TorchvisionNet:resnet50" and summary["model"]["parameters"] == 23528522
    assert len(json.loads((one.run_dirs()[-1] / "classes.json").read_text())) == 10  # num_classes from index.json
    two = run_cli("cnnfleet-train", [*recipe, "device=ddp", "device.devices=2"], tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.summary()["device"]["world_size"] == 2 and two.summary()["batch"] == {"global": 20, "per_device": 10}
    best = one.run_dirs()[-1] / "checkpoints" / "best.ckpt"
    (tmp_path / "shards").rename(tmp_path / "moved")  # to scratch, say: evaluation follows with data_root=
    evaluated = run_cli("cnnfleet-eval", [f"ckpt_path={best}", f"data_root={tmp_path / 'moved'}"], tmp_path / "one")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((evaluated.run_dirs("eval")[-1] / "metrics.json").read_text())["samples"] == 100
    predicted = run_cli(
        "cnnfleet-predict", [f"ckpt_path={best}", f"inputs={images / 'val' / 'n01440765'}"], tmp_path / "one"
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = (predicted.run_dirs("predict")[-1] / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 10 and "n014407" in rows[1]


# ---------------------------------------------------------------- what a new user ran into (breaker, 2026-11-27)


def _prepare_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cnnfleet-prepare"), "--quiet", *args], capture_output=True, text=True, timeout=120
    )


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_killed_prepare_leaves_no_worker_behind_and_the_rerun_finishes(images_root: Path, tmp_path: Path) -> None:
    import os
    import signal

    from conftest import wait_until

    big = tmp_path / "big"
    write_image_folder(big, classes=("a", "b"), per_class=200, size=96)
    out = tmp_path / "out"
    for sig in (signal.SIGKILL, signal.SIGTERM):
        command = [str(BIN / "cnnfleet-prepare"), "--quiet", str(big), str(out), "--shard-size", "2", "--workers", "2"]
        written = len(list((out / ".prepare").rglob("*.tar.json")))
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda n=written: len(list((out / ".prepare").rglob("*.tar.json"))) >= n + 3, 60, 0.02)
        os.kill(proc.pid, sig)  # the parent alone, as `kill` or a batch system does
        _, stderr = proc.communicate(timeout=60)
        assert wait_until(lambda: not _processes_mentioning(str(out)), 10), "encoding workers outlived prepare"
        if sig == signal.SIGTERM:
            assert proc.returncode == 130 and "interrupted; the shards written so far are kept" in stderr
    # the rerun finishes and keeps every shard the killed runs recorded (its speed is the benchmark's business)
    recorded = {r.with_suffix("").name: r.parent.name for r in (out / ".prepare").rglob("*.tar.json")}
    kept = {name: (out / split / name).stat().st_mtime_ns for name, split in recorded.items()}
    rerun = _prepare_cli(str(big), str(out), "--shard-size", "2", "--workers", "2")
    assert rerun.returncode == 0 and "wrote" in rerun.stdout, rerun.stderr
    assert kept and {name: (out / split / name).stat().st_mtime_ns for name, split in recorded.items()} == kept


def test_prepare_repairs_what_a_user_breaks_and_refuses_what_makes_no_sense(images_root: Path, tmp_path: Path):
    out = tmp_path / "shards"
    args = ["--shard-size", "10", "--size", "36"]
    assert _prepare_cli(str(images_root), str(out), *args).returncode == 0
    shard = out / "train" / "shard-000001.tar"
    original = shard.read_bytes()
    shard.write_bytes(original[:2000] + b"\xff" * 200 + original[2200:])  # same size, damaged inside
    assert "all 15 shards were already there" in _prepare_cli(str(images_root), str(out), *args).stdout
    verified = _prepare_cli(str(images_root), str(out), *args, "--verify")
    assert verified.returncode == 0 and "wrote 1 of 15 shards" in verified.stdout and shard.read_bytes() == original

    (out / "train" / "shard-000002.tar").unlink()  # a shard lost after preparing: one line when training
    with pytest.raises(DataError, match="shard-000002.tar is missing .index.json lists it."):
        batches(data_module(out, shuffle_window=100).train_dataloader())

    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile", images_root / "train" / "out"):
        refused = _prepare_cli(str(images_root), str(target))
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "is not a folder" in refused.stderr or "is inside the source" in refused.stderr

    source = tmp_path / "src"
    shutil.copytree(images_root, source)
    (source / "train" / "emu").mkdir()
    empty = _prepare_cli(str(source), str(tmp_path / "e"))
    assert empty.returncode == 2 and "train/emu holds no images" in empty.stderr
    (source / "train" / "emu").rmdir()
    bad = source / "train" / "cat" / "bad.jpg"
    bad.write_bytes(b"garbage")
    first = _prepare_cli(str(source), str(tmp_path / "p"), "--workers", "1")
    assert first.returncode == 2 and "remove or replace the file, then run the same command again" in first.stderr
    bad.unlink()  # as the message says: the unfinished preparation starts over with the source as it is now
    again = _prepare_cli(str(source), str(tmp_path / "p"), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "the source changed since this unfinished preparation started (train 49 -> 48 images)" in again.stderr
