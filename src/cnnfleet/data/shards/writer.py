"""Writing one shard: encode its samples (resize, JPEG) and write a WebDataset tar, byte-for-byte
reproducible (fixed member order, mtime 0, no owner names), so a shard written again is the same
file with the same checksum: cnnfleet-prepare can stop anywhere and be run again."""

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnfleet.data.shards.format import IMAGE_EXT, LABEL_EXT, sample_key
from cnnfleet.errors import DataError
from cnnfleet.run.files import atomic_path


@dataclass(frozen=True)
class Encoding:
    size: int  # the short side is resized down to this (never up); 0 keeps the source size
    quality: int  # JPEG quality
    mode: str  # RGB or L


def encode(sample: object, encoding: Encoding) -> bytes:
    """One image as JPEG bytes; DataError naming the file when it cannot be read."""
    from PIL import Image

    try:
        if isinstance(sample, np.ndarray):
            image = Image.fromarray(sample)
        else:
            with Image.open(sample) as opened:
                opened.load()
                image = opened
        image = image.convert(encoding.mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot decode image {sample} ({exc}); remove or replace the file, then run the same command again"
        ) from None
    short = min(image.size)
    if encoding.size and short > encoding.size:
        scale = encoding.size / short
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BICUBIC,
            reducing_gap=3.0,
        )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=encoding.quality)
    return out.getvalue()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, number: int, samples: list[tuple[object, int]], encoding: Encoding) -> dict:
    """Write the shard atomically; return its index entry (count, bytes, sha256)."""
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, (sample, label) in enumerate(samples):
                key = sample_key(number, i)
                _member(tar, f"{key}.{LABEL_EXT}", str(int(label)).encode())
                _member(tar, f"{key}.{IMAGE_EXT}", encode(sample, encoding))
        digest = hashlib.sha256()
        with open(tmp, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        size = tmp.stat().st_size
    return {"count": len(samples), "bytes": size, "sha256": digest.hexdigest()}
