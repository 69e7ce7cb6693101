"""Augmentations as pure functions of a batch tensor (B, C, H, W), run on the batch's device.

Whole-batch ops, no per-image Python loop (the airbench technique): a random crop is two
passes of masked copies, one per possible row shift and one per possible column shift.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Reflect-pad by `padding` pixels, then cut a random HxW window per image."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * padding + 1, (2, b), device=images.device)
    rows = torch.empty_like(padded[:, :, :h, :])
    for shift in range(2 * padding + 1):
        mask = shifts[0] == shift
        rows[mask] = padded[mask, :, shift : shift + h, :]
    out = torch.empty_like(images)
    for shift in range(2 * padding + 1):
        mask = shifts[1] == shift
        out[mask] = rows[mask, :, :, shift : shift + w]
    return out


def random_flip(images: Tensor) -> Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def augment(images: Tensor, crop_padding: int, horizontal_flip: bool) -> Tensor:
    images = random_crop(images, crop_padding)
    return random_flip(images) if horizontal_flip else images
