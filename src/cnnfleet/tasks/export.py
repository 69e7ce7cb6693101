"""export(cfg): a trained network for serving, each file checked against its checkpoint.

Writes into the export's run folder:
- model.pt2 (`formats` has pt2): a torch.export program of preprocessing + network
  (cnnfleet.serving.deploy.Preprocessed): raw pixels in, logits out, batch dimension dynamic; loadable
  with torch.export.load(...).module() and no cnnfleet code;
- model.onnx (`formats` has onnx): the same program through torch's ONNX exporter, checked with
  onnxruntime;
- model.safetensors: the bare network's weights (no preprocessing: it takes normalised images),
  with the model config, class names and normalisation in its metadata;
- export.json: the input contract, the output, class names, checkpoint, versions, and the largest
  logit difference of each file from the checkpoint's network (must be <= tolerance).
"""

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnfleet.errors import CnnfleetError
from cnnfleet.run.files import atomic_path, write_json_atomic
from cnnfleet.run.summary import print_table
from cnnfleet.serving.deploy import INPUT_NAME, OUTPUT_NAME, Preprocessed, input_contract
from cnnfleet.serving.inference import TrainedModel, load_trained

TRACE_BATCH = 2  # torch.export specialises a dimension of size 0 or 1; 2 keeps the batch dynamic
MAX_BATCH = 4096


class ExportError(CnnfleetError):
    """The network cannot be exported, or the export does not match the checkpoint."""


def export(cfg: DictConfig) -> dict:
    trained = load_trained(cfg.ckpt_path)
    net = trained.module.eval_net.eval()  # the EMA weights when the run kept them
    output = Path(cfg.paths.output_dir)
    contract = input_contract(trained.data, cfg.input_dtype)
    model = Preprocessed(net, contract["mean"], contract["std"], cfg.input_dtype).eval()
    pixels = random_pixels(cfg.check_batch, contract, seed=0)
    expected = reference_logits(net, pixels, contract)
    diffs = {"safetensors": _write_safetensors(trained, output / "model.safetensors", pixels, expected, contract)}
    formats = list(cfg.formats)
    versions = {"torch": torch.__version__}
    program = _trace(model, contract, trained) if formats else None
    if "pt2" in formats:
        diffs["pt2"] = _write_program(program, output / "model.pt2", pixels, expected)
    if "onnx" in formats:
        diffs["onnx"], onnx_versions = _write_onnx(program, output / "model.onnx", pixels, expected)
        versions.update(onnx_versions)
    files = {f"model.{f}": f"{contract['dtype']} pixels in, logits out (normalised inside)" for f in formats}
    files["model.safetensors"] = "the bare network's weights: it takes NORMALISED images, (pixels - mean) / std"
    report = {
        "input": contract,
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(trained.class_names)],
            "meaning": "class scores before softmax, in class_names order",
        },
        "class_names": trained.class_names,
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "model": trained.module.hparams.model,
        "files": files,
        "versions": versions,
        "max_abs_logit_diff": diffs,
        "tolerance": cfg.tolerance,
    }
    write_json_atomic(output / "export.json", report)
    bad = {k: v for k, v in diffs.items() if v > cfg.tolerance}
    if bad:
        raise ExportError(
            f"exported logits differ from the checkpoint's by {bad} (> tolerance={cfg.tolerance}); "
            f"the files are kept in {output} for inspection"
        )
    print_table(
        "cnnfleet export",
        {
            **{name: str(output / name) for name in files},
            "input": f"{contract['dtype']} {contract['layout']} {contract['shape']} "
            f"in {contract['range']}, normalised inside",
            **{f"max |logit diff| {k}": f"{v:.1e}" for k, v in diffs.items()},
        },
    )
    return report


def random_pixels(batch: int, contract: dict, seed: int) -> torch.Tensor:
    """A seeded batch of images in the contract's dtype and range."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *contract["shape"][1:])
    if contract["dtype"] == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return torch.rand(shape, generator=generator)


def reference_logits(net: torch.nn.Module, pixels: torch.Tensor, contract: dict) -> torch.Tensor:
    """The checkpoint's network on the pixels normalised by torchvision, as its evaluation data were
    (a path independent of Preprocessed, so the check covers the preprocessing too)."""
    from torchvision.transforms.v2 import functional as F

    images = F.normalize(F.to_dtype(pixels, torch.float32, scale=True), contract["mean"], contract["std"])
    with torch.no_grad():
        return net(images)


def _write_safetensors(
    trained: TrainedModel, path: Path, pixels: torch.Tensor, expected: torch.Tensor, contract: dict
) -> float:
    from hydra.utils import instantiate
    from safetensors.torch import load_file, save_file

    net = trained.module.eval_net
    meta = {
        "model": trained.module.hparams.model,
        "class_names": trained.class_names,
        "input_shape": contract["shape"][1:],
        "mean": contract["mean"],
        "std": contract["std"],
        "takes": "normalised images",
    }
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"cnnfleet": json.dumps(meta)})
    reloaded = instantiate(trained.module.hparams.model).eval()  # a fresh network, as a server would build it
    reloaded.load_state_dict(load_file(str(path)))
    return reference_diff(reloaded, pixels, expected, contract)


def reference_diff(net: torch.nn.Module, pixels: torch.Tensor, expected: torch.Tensor, contract: dict) -> float:
    return _max_diff(reference_logits(net, pixels, contract), expected)


def _trace(model: Preprocessed, contract: dict, trained: TrainedModel) -> torch.export.ExportedProgram:
    example = random_pixels(TRACE_BATCH, contract, seed=1)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # unsupported Python in forward, data-dependent control flow, ...
        name = trained.module.hparams.model.get("_target_")
        raise ExportError(f"torch.export cannot trace {name}: {str(exc).splitlines()[0]}") from None


def _write_program(
    program: torch.export.ExportedProgram, path: Path, pixels: torch.Tensor, expected: torch.Tensor
) -> float:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.export.save(program, handle)
    loaded = torch.export.load(str(path)).module()  # as a server loads it
    with torch.no_grad():
        return _max_diff(loaded(pixels), expected)


def _write_onnx(
    program: torch.export.ExportedProgram, path: Path, pixels: torch.Tensor, expected: torch.Tensor
) -> tuple[float, dict]:
    """The program as ONNX (torch's dynamo exporter, via onnxscript), run with onnxruntime."""
    import onnx
    import onnxruntime

    for name in ("onnxscript", "onnx_ir", "torch.onnx"):  # their per-pass INFO lines would fill the console
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        onnx_program = torch.onnx.export(
            program,
            (pixels,),
            dynamic_shapes=({0: batch},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            verbose=False,
        )
    except Exception as exc:  # an operator without an ONNX translation, ...
        raise ExportError(
            f"torch.onnx.export failed: {str(exc).strip().splitlines()[0]}; formats=[pt2] exports without ONNX"
        ) from None
    opset = next(o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    with atomic_path(path) as tmp:
        onnx_program.save(str(tmp), external_data=False)  # one self-contained file (networks under 2 GB)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0]
    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "onnx_opset": opset}
    return _max_diff(torch.from_numpy(logits), expected), versions


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())
