"""Synthetic images: one random prototype per class plus Gaussian noise.

Learnable on purpose (a smoke test can check that loss falls), any shape and class count.
"""

import numpy as np

from cnnfleet.data.in_memory import InMemoryDataModule


class SyntheticDataModule(InMemoryDataModule):
    def __init__(self, num_samples: int, noise: float, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.noise = noise
        self.seed = seed

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.RandomState(self.seed)
        shape = (self.channels, self.image_size, self.image_size)
        prototypes = rng.standard_normal((self.num_classes, *shape)).astype(np.float32)
        labels = np.arange(self.num_samples, dtype=np.int64) % self.num_classes
        noise = rng.standard_normal((self.num_samples, *shape)).astype(np.float32)
        return prototypes[labels] + self.noise * noise, labels
