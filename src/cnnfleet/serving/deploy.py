"""A trained network as it is deployed: the preprocessing inside, one written input contract.

An exported program (model.pt2, model.onnx) takes images as a deployment holds them: NCHW at the
training resolution, float32 in 0..1 (what torchvision's ToImage + ToDtype(scale=True) give) or
uint8 in 0..255 (decoded pixels; `export.input_dtype=uint8`), and normalises them inside with
the data set's mean/std. export.json states that contract (`input_contract`), and
`load_artifact` runs either file from it alone (cnnfleet-predict artifact=...). Without this,
measured on digits: the bare network fed 0..1 pixels scored 9.7% instead of 99.7%.

One program takes one dtype: torch.export and ONNX fix the input's dtype in the graph (a float
tensor fed to a uint8 program fails with "Tensor dtype mismatch"), so the dtype is chosen at export.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cnnfleet.errors import CheckpointError, ConfigError

INPUT_DTYPES = {"float32": [0.0, 1.0], "uint8": [0, 255]}  # dtype -> value range of the pixels
INPUT_NAME, OUTPUT_NAME = "images", "logits"  # the ONNX graph's names; the README's snippet uses them
CONTRACT_FILE = "export.json"


class Preprocessed(torch.nn.Module):
    """images (N, C, H, W) in the contract's dtype and range -> the network's logits (N, classes)."""

    def __init__(self, net: torch.nn.Module, mean: list[float], std: list[float], input_dtype: str) -> None:
        super().__init__()
        self.net = net
        self.from_uint8 = input_dtype == "uint8"  # fixed when traced: one program, one dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(torch.float32)
        if self.from_uint8:
            x = x * (1.0 / 255)  # as torchvision's ToDtype(float32, scale=True) scales uint8
        return self.net((x - self.mean) / self.std)


def input_contract(data: dict, input_dtype: str) -> dict:
    """What an exported program takes, from the training run's data config (export.json's `input`)."""
    channels, size = data["channels"], data["image_size"]
    resize = data.get("resize_size")  # image folders: resize the short side, then center-crop
    before = f"resize the short side to {resize}, center-crop {size}x{size}" if resize else f"resize to {size}x{size}"
    return {
        "name": INPUT_NAME,
        "dtype": input_dtype,
        "range": INPUT_DTYPES[input_dtype],
        "layout": "NCHW",
        "shape": ["batch", channels, size, size],
        "channels": channels,
        "color": {1: "grayscale (PIL mode L)", 3: "RGB"}.get(channels, f"{channels} channels"),
        "height": size,
        "width": size,
        "resize_size": resize,
        "before_the_program": before,
        "normalised_inside": True,
        "mean": list(data["mean"]),
        "std": list(data["std"]),
    }


def pixel_transform(contract: dict) -> Callable:
    """PIL image -> (C, H, W) tensor in the contract's dtype and range (what the program takes)."""
    from torchvision.transforms import v2

    size = contract["height"]
    if contract["resize_size"]:  # the same resize + crop as the image-folder evaluation transform
        ops = [v2.Resize(contract["resize_size"], antialias=True), v2.CenterCrop(size)]
    else:  # in-memory data sets: whole images at the training size
        ops = [v2.Resize((size, size), antialias=True)]
    ops.append(v2.ToImage())
    if contract["dtype"] == "float32":
        ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


def image_mode(channels: int) -> str:
    return "RGB" if channels == 3 else "L"


@dataclass
class Artifact:
    """An exported program and its contract; calling it maps pixels (a CPU tensor) to logits."""

    contract: dict
    class_names: list[str]
    run: Callable[[Tensor], Tensor]
    device: str  # where it runs, for the output


def load_artifact(path: str | Path) -> Artifact:
    """model.pt2 or model.onnx written by cnnfleet-export, with the export.json beside it.

    Raises ConfigError for another kind of file, CheckpointError when export.json is missing.
    """
    path = Path(path)
    if path.suffix not in (".pt2", ".onnx"):
        raise ConfigError(f"artifact={path}: give a model.pt2 or model.onnx written by cnnfleet-export")
    report = path.with_name(CONTRACT_FILE)
    if not report.is_file():
        raise CheckpointError(
            f"artifact={path} has no {CONTRACT_FILE} beside it (its input contract); "
            "pass a file from a cnnfleet-export run folder"
        )
    meta = json.loads(report.read_text())
    contract = meta["input"]
    if path.suffix == ".onnx":
        run, device = _onnx_runner(path), "cpu (onnxruntime)"
    else:
        run, device = _program_runner(path)
    return Artifact(contract, list(meta["class_names"]), run, device)


def _program_runner(path: Path) -> tuple[Callable[[Tensor], Tensor], str]:
    from torch.export.passes import move_to_device_pass

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # truncated, another torch's format
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"cannot load {path} with torch.export.load ({type(exc).__name__}: {first}); export it again"
        ) from None
    module = move_to_device_pass(program, device).module()  # also on CPU: one code path, the tested one

    def run(images: Tensor) -> Tensor:
        with torch.no_grad():
            return module(images.to(device)).float().cpu()

    return run, device.type


def _onnx_runner(path: Path) -> Callable[[Tensor], Tensor]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf classes
        raise CheckpointError(f"onnxruntime cannot load {path} ({str(exc).splitlines()[0]}); export it again") from None

    def run(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])

    return run
