"""Augmentations as pure functions of a batch tensor (B, C, H, W), run on the batch's device.

Whole-batch ops, no per-image Python loop and no host synchronisation (the airbench technique):
a random crop is one gather of each image's window.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnfleet.errors import ConfigError


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Reflect-pad by `padding` pixels, then cut a random HxW window per image.

    One gather with integer indices: boolean-mask indexing (`x[mask] = ...`) would count the mask
    on the host, a GPU synchronisation per shift (18 per batch at padding 4, seen on an H100)."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * padding + 1, (2, b), device=images.device)
    rows = (shifts[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (shifts[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W), NHWC in memory


def random_flip(images: Tensor) -> Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def augment(images: Tensor, crop_padding: int, horizontal_flip: bool) -> Tensor:
    images = random_crop(images, crop_padding)
    return random_flip(images) if horizontal_flip else images


POLICIES = ("none", "randaugment", "trivialaugment")


def policy_transform(policy: str) -> object | None:
    """torchvision's RandAugment / TrivialAugmentWide (on uint8 images), or None."""
    from torchvision.transforms import v2

    if policy not in POLICIES:
        raise ConfigError(f"data.auto_augment={policy!r}; valid: {', '.join(POLICIES)}")
    return {"none": None, "randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[policy]


def auto_augment(images: Tensor, policy: str, mean: Tensor, std: Tensor) -> Tensor:
    """Apply the policy to each image of a normalised batch (each image draws its own ops)."""
    make = policy_transform(policy)
    if make is None:
        return images
    op = make()
    pixels = ((images * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    out = torch.stack([op(img) for img in pixels])  # per image: one op for the whole batch is weaker
    return (out.float() / 255 - mean) / std


def mix(images: Tensor, labels: Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> tuple:
    """MixUp and/or CutMix (one of them per batch when both are on): labels become soft (B, classes)."""
    from torchvision.transforms import v2

    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return images, labels
    return (ops[0] if len(ops) == 1 else v2.RandomChoice(ops))(images, labels)
