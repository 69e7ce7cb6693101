"""Decoding and cropping a batch of JPEGs, the same on CPU (in DataLoader workers) and on the GPU.

The random part (each image's RandomResizedCrop box and flip) is drawn in the worker, from the
JPEG headers, with a generator seeded by (seed, epoch, rank, batch): a batch is the same whoever
decodes it and after any restart. What follows is one function for both devices: decode
(torchvision.io.decode_jpeg: libjpeg-turbo on CPU, nvJPEG batched on CUDA), cut each box and
resize it to the training size (antialiased bilinear), mirror the flipped ones. Normalisation
runs on the training device (uint8 batches cross the host-device link: a quarter of float32).
"""

import io
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnfleet.errors import DataError

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range (torchvision's default)


def jpeg_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) from the header alone; DataError naming the sample when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise DataError(
            f"cannot decode image {name} (not a readable JPEG); run the same cnnfleet-prepare command "
            "again with --verify"
        ) from None
    return height, width


def random_box(height: int, width: int, scale_min: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawn from `generator`: (top, left, h, w)."""
    area = height * width
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        draws = torch.rand(2, generator=generator).tolist()
        target = area * (scale_min + (1.0 - scale_min) * draws[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * draws[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    ratio = width / height  # fallback: the central crop of the nearest allowed aspect ratio
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        h, w = height, round(height * RATIO[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def center_box(height: int, width: int, image_size: int, resize_size: int) -> tuple[int, int, int, int]:
    """Resize(resize_size) + CenterCrop(image_size) as one box in the original image."""
    side = max(1, min(height, width, round(min(height, width) * image_size / resize_size)))
    return (height - side) // 2, (width - side) // 2, side, side


def plan_crops(
    sizes: Sequence[tuple[int, int]],
    train: bool,
    image_size: int,
    resize_size: int,
    scale_min: float,
    flip: bool,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """(B, 4) boxes and (B,) flips of a batch: random for training (seeded), central for evaluation."""
    generator = torch.Generator().manual_seed(seed)
    if train:
        boxes = [random_box(h, w, scale_min, generator) for h, w in sizes]
        flips = (torch.rand(len(sizes), generator=generator) < 0.5) & flip
    else:
        boxes = [center_box(h, w, image_size, resize_size) for h, w in sizes]
        flips = torch.zeros(len(sizes), dtype=torch.bool)
    return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4), flips


def decode(data: Sequence[bytes], names: Sequence[str], channels: int, device: str | torch.device) -> list[Tensor]:
    """Decoded (C, H, W) uint8 images on `device` (a batched nvJPEG call on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    try:
        return decode_jpeg(encoded, mode=mode, device=device)
    except RuntimeError:
        for tensor, name in zip(encoded, names, strict=True):  # which one: decode them one by one on the CPU
            try:
                decode_jpeg(tensor, mode=mode)
            except RuntimeError as exc:
                raise DataError(
                    f"cannot decode image {name} ({str(exc).splitlines()[0]}); run the same "
                    "cnnfleet-prepare command again with --verify"
                ) from None
        raise


def crop_resize(images: Sequence[Tensor], boxes: Tensor, flips: Tensor, size: int) -> Tensor:
    """(B, C, size, size) uint8: each image's box, resized (antialiased bilinear), mirrored where flipped."""
    out = []
    for image, (top, left, h, w), flip in zip(images, boxes.tolist(), flips.tolist(), strict=True):
        patch = image[:, top : top + h, left : left + w].unsqueeze(0)
        if (h, w) != (size, size):
            patch = _resize(patch, size)
        out.append(patch[0].flip(-1) if flip else patch[0])
    return torch.stack(out)


def _resize(patch: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize of a (1, C, h, w) uint8 patch. On CPU torch resizes uint8 directly
    (its AVX2 kernel: a third of the time through float32, at most one grey level apart); CUDA's
    antialiased kernel takes floats."""
    if patch.device.type == "cpu":
        return F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    resized = F.interpolate(patch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def apply_policy(images: Tensor, policy: str, seed: int) -> Tensor:
    """RandAugment / TrivialAugmentWide per image on a uint8 batch, seeded per batch (the global RNG untouched)."""
    from cnnfleet.data.augment import policy_transform

    make = policy_transform(policy)
    if make is None:
        return images
    op = make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([op(image) for image in images])


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 normalised, on the images' device: (x/255 - mean)/std as one
    subtraction and one multiplication in place (a third of the time of the textbook form on CPU)."""
    scale = (1.0 / (std * 255)).to(images.device)
    return images.float().sub_((mean * 255).to(images.device)).mul_(scale)
