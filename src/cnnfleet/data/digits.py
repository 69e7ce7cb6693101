"""scikit-learn's handwritten digits: 1,797 real 8x8 images that ship with the package."""

import numpy as np

from cnnfleet.data.in_memory import InMemoryDataModule

DIGITS_MAX_PIXEL = 16.0  # load_digits stores 4-bit intensities 0..16


class DigitsDataModule(InMemoryDataModule):
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / DIGITS_MAX_PIXEL).astype(np.float32)[:, None]  # (N, 1, 8, 8)
        return images, digits.target.astype(np.int64)
