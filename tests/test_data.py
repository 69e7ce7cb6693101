"""Splits, data modules and batch augmentations."""

import numpy as np
import pytest
import torch

from cnnfleet.config.schema import DigitsDataConfig, SyntheticDataConfig, defaults
from cnnfleet.data.augment import random_crop, random_flip
from cnnfleet.data.digits import DigitsDataModule
from cnnfleet.data.in_memory import stratified_split
from cnnfleet.data.synthetic import SyntheticDataModule
from cnnfleet.errors import ConfigError, DataError

DIGITS = {**defaults(DigitsDataConfig), "mean": [0.3], "std": [0.38]}  # conf/data/digits.yaml


def test_stratified_split_is_disjoint_complete_and_proportional() -> None:
    labels = np.repeat(np.arange(4), 50)
    parts = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined) == list(range(200))
    assert {name: len(idx) for name, idx in parts.items()} == {"train": 140, "val": 20, "test": 40}
    for idx in parts.values():  # every class in the same proportion
        assert len(set(np.bincount(labels[idx]))) == 1


def test_stratified_split_of_many_small_classes_keeps_every_split() -> None:
    # 1000 classes of 4 images (an ImageNet-sized subset): rounding per class gave val 0 images
    labels = np.repeat(np.arange(1000), 4)
    parts = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert {name: len(idx) for name, idx in parts.items()} == {"train": 2800, "val": 400, "test": 800}
    assert sorted(np.concatenate(list(parts.values()))) == list(range(4000))
    for idx in parts.values():  # no class gives a split more than one image beyond its share
        assert np.bincount(labels[idx], minlength=1000).max() - np.bincount(labels[idx], minlength=1000).min() <= 1
    singles = stratified_split(np.arange(7), val_fraction=0.3, test_fraction=0.3, seed=0)  # classes of one image
    assert {name: len(idx) for name, idx in singles.items()} == {"train": 3, "val": 2, "test": 2}


def test_stratified_split_depends_only_on_its_seed() -> None:
    labels = np.repeat(np.arange(3), 30)
    a = stratified_split(labels, 0.1, 0.2, seed=1)
    b = stratified_split(labels, 0.1, 0.2, seed=1)
    c = stratified_split(labels, 0.1, 0.2, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_bad_fractions_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split(np.zeros(10, dtype=int), 0.6, 0.5, seed=0)


def test_digits_split_sizes_and_normalisation() -> None:
    dm = DigitsDataModule(**DIGITS)
    dm.setup()
    assert dm.split_sizes() == {"train": 1258, "val": 180, "test": 359}
    x, y = dm.splits["train"].tensors
    assert x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
    assert abs(x.mean().item()) < 0.1 and 0.8 < x.std().item() < 1.2  # config stats fit the data


def test_config_that_contradicts_the_data_is_a_data_error() -> None:
    dm = DigitsDataModule(**{**DIGITS, "image_size": 28})
    with pytest.raises(DataError, match="shape"):
        dm.setup()


def test_mean_std_need_one_value_per_channel() -> None:
    with pytest.raises(ConfigError, match="one value per channel"):
        DigitsDataModule(**{**DIGITS, "mean": [0.1, 0.2]})


def test_synthetic_data_has_requested_shape_and_classes() -> None:
    dm = SyntheticDataModule(
        **{
            **defaults(SyntheticDataConfig),
            "num_samples": 100,
            "noise": 0.1,
            "batch_size": 10,
            "num_classes": 5,
            "channels": 3,
            "image_size": 16,
            "mean": [0.0] * 3,
            "std": [1.0] * 3,
        }
    )
    dm.setup()
    x, y = dm.splits["train"].tensors
    assert x.shape[1:] == (3, 16, 16) and set(y.tolist()) == set(range(5))


def test_random_crop_shifts_content_by_at_most_padding() -> None:
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 8, 8)
    images[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    out = random_crop(images, padding=1)
    assert out.shape == images.shape
    rows, cols = (out[:, 0] == 1.0).nonzero()[:, 1], (out[:, 0] == 1.0).nonzero()[:, 2]
    assert rows.min() >= 3 and rows.max() <= 5 and cols.min() >= 3 and cols.max() <= 5
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1  # not the same shift for all


def test_random_crop_with_zero_padding_is_identity() -> None:
    images = torch.randn(4, 3, 8, 8)
    assert torch.equal(random_crop(images, 0), images)


def test_random_flip_mirrors_some_images_exactly() -> None:
    torch.manual_seed(0)
    images = torch.randn(32, 1, 4, 4)
    out = random_flip(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


class _Environment(torch.utils.data.Dataset):
    """One item: a variable of the environment the worker process sees."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> str:
        import os

        return os.environ.get("CNNFLEET_TEST_VALUE", "unset")


def test_data_loader_workers_see_the_environment_of_the_moment_their_loader_is_made(monkeypatch) -> None:
    """Workers start from a fork server (data/workers.py); an environment variable set after an earlier
    loader started the server must still reach the next loader's workers (S3 credentials did not)."""
    from torch.utils.data import DataLoader

    from cnnfleet.data.workers import worker_start

    def read() -> list[str]:
        return list(DataLoader(_Environment(), batch_size=None, num_workers=1, **worker_start(1)))

    monkeypatch.setenv("CNNFLEET_TEST_VALUE", "first")
    assert read() == ["first"]
    monkeypatch.setenv("CNNFLEET_TEST_VALUE", "second")
    assert read() == ["second"]
