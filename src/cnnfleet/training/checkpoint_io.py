"""Atomic checkpoint writes: a half-written file is never visible under the final name.

Lightning's TorchCheckpointIO writes in place; a kill during the write leaves a truncated
best.ckpt/last.ckpt that resume would pick. We write to a temporary file in the same folder,
fsync it, then os.replace() it over the target (atomic on POSIX within one file system):
cnnfleet.run.files.atomic_path, the one helper for every atomic write.
"""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnnfleet.run.files import atomic_path


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


LIGHTNING_KEYS = ("global_step", "epoch", "hyper_parameters")  # what resume, eval and export read


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only: plain containers and tensors only).

    Raises CheckpointError naming the file when it is missing, truncated or not a checkpoint.
    """
    from cnnfleet.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a complete PyTorch checkpoint (truncated, or another kind of file: "
            f"{type(exc).__name__}); pass a checkpoint written by cnnfleet-train"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a cnnfleet/Lightning checkpoint (no state_dict)")
    missing = [key for key in LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path} holds a state_dict but is not a checkpoint written by cnnfleet-train (no {', '.join(missing)}); "
            "bare weights cannot be resumed, evaluated or exported: pass a run's checkpoints/*.ckpt"
        )
    hparams = checkpoint["hyper_parameters"]
    model = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(model, dict) or "_target_" not in model or not isinstance(hparams.get("optimizer"), dict):
        raise CheckpointError(
            f"{path} is not a checkpoint written by cnnfleet-train (its hyper_parameters do not describe a model "
            "and an optimizer); pass a run's checkpoints/*.ckpt"
        )
    return checkpoint
