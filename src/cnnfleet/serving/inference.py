"""A trained model for use outside training: rebuilt from its checkpoint alone, with the
evaluation transform of the data set it was trained on (predict, export, eval)."""

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnfleet.config.guard import building
from cnnfleet.errors import CheckpointError, DataError
from cnnfleet.serving.deploy import Artifact, Preprocessed, input_contract
from cnnfleet.training.checkpoint_io import read_checkpoint
from cnnfleet.training.module import Classifier

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class TrainedModel:
    module: Classifier
    checkpoint: dict[str, Any]
    data: dict  # the data config of the training run (channels, size, normalisation, ...)

    @property
    def class_names(self) -> list[str]:
        names = self.module.class_names
        classes = self.data["num_classes"]
        return list(names) if names and len(names) == classes else [str(i) for i in range(classes)]

    def input_shape(self) -> tuple[int, int, int]:
        return (self.data["channels"], self.data["image_size"], self.data["image_size"])


def load_trained(ckpt_path: str | Path) -> TrainedModel:
    checkpoint = read_checkpoint(ckpt_path)
    # weights that do not fit the model the checkpoint records (edited by hand, another version): one line
    with building("ckpt_path", ckpt_path, label=f"cannot rebuild the network of checkpoint {ckpt_path}"):
        module = Classifier.from_checkpoint(checkpoint)
    if module.run_config is None:
        raise CheckpointError(f"{ckpt_path} has no cnnfleet run config; it was not written by cnnfleet-train")
    module.eval()
    return TrainedModel(module, checkpoint, dict(module.run_config["data"]))


def deployed(trained: TrainedModel, device: torch.device) -> Artifact:
    """The checkpoint's network as an export runs it: float32 0..1 pixels in, normalised inside."""
    contract = input_contract(trained.data, "float32")
    model = Preprocessed(trained.module.eval_net, contract["mean"], contract["std"], "float32").eval().to(device)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images.to(device)).float().cpu()

    return Artifact(contract, trained.class_names, run, device.type)


def find_inputs(spec: str) -> list[Path]:
    """An image file, a folder (searched recursively) or a glob pattern -> sorted image files."""
    path = Path(spec)
    if path.is_file():
        return [path]
    try:
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    except OSError as exc:  # a folder that cannot be listed (permissions, /proc)
        raise DataError(
            f"inputs={spec!r} cannot be read ({exc.strerror or exc}); give a folder of images you can read"
        ) from None
    if not files:
        raise DataError(f"inputs={spec!r} matches no image file; give an image, a folder of images or a glob")
    return sorted(files)
