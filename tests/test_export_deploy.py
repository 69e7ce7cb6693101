"""Exports deploy as they are: raw pixels in (preprocessing inside), ONNX checked with onnxruntime,
cnnfleet-predict from an artifact, files with the usual mode. The real CLI, on the session's
default digits run (its best.ckpt), the digits test split as a deployment would hold it."""

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from conftest import CliResult, run_cli

PNGS = 40  # test images written as 8-bit PNGs for cnnfleet-predict


def _test_split(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(0..1 float images, labels, the checkpoint's logits on them) of the run's test split."""
    from hydra.utils import instantiate

    from cnnfleet.serving.inference import load_trained

    trained = load_trained(ckpt)
    images, labels = instantiate(trained.data).split_arrays()["test"]  # float32 0..1, as loaded from disk
    pixels = torch.from_numpy(images)
    mean = torch.tensor(trained.data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(trained.data["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = trained.module.eval_net((pixels - mean) / std)
    return pixels, torch.from_numpy(labels), logits


def _in_parallel(command: str, calls: dict[str, list[str]], root: Path) -> dict[str, CliResult]:
    """Each call in its own folder root/<name>, two processes at a time (the machine has 2 cores)."""
    for name in calls:
        (root / name).mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cli, command, args, root / name) for name, args in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def _predictions(root: Path) -> list[dict]:
    (run,) = (root / "logs" / "predict" / "runs").iterdir()
    return list(csv.DictReader((run / "predictions.csv").open()))


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory, default_run) -> dict:
    """Two exports (float32 with pt2 + onnx; uint8 pt2 only), then predict from the checkpoint, the
    pt2 and the onnx file, two processes at a time."""
    root = tmp_path_factory.mktemp("deploy")
    ckpt = default_run.run_dirs()[-1] / "checkpoints" / "best.ckpt"
    pixels, labels, logits = _test_split(ckpt)
    (root / "pngs").mkdir()
    for i in range(PNGS):  # an 8-bit grayscale file per image, as a camera or a scanner would give it
        Image.fromarray(np.round(pixels[i, 0].numpy() * 255).astype(np.uint8), mode="L").save(root / f"pngs/{i}.png")
    exports = {"float32": [f"ckpt_path={ckpt}"], "uint8": [f"ckpt_path={ckpt}", "input_dtype=uint8", "formats=[pt2]"]}
    results = _in_parallel("cnnfleet-export", exports, root)
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    dirs = {k: next((root / k / "logs" / "export" / "runs").iterdir()) for k in exports}
    sources = {
        "ckpt": f"ckpt_path={ckpt}",
        "pt2": f"artifact={dirs['float32'] / 'model.pt2'}",
        "onnx": f"artifact={dirs['float32'] / 'model.onnx'}",
    }
    calls = {k: [arg, f"inputs={root / 'pngs'}"] for k, arg in sources.items()}
    calls["neither"] = [f"inputs={root / 'pngs'}"]
    predicted = _in_parallel("cnnfleet-predict", calls, root)
    return {
        "dirs": dirs,
        "export_results": results,
        "predicted": predicted,
        "root": root,
        "pixels": pixels,
        "labels": labels,
        "logits": logits,
        "summary": default_run.summary(),
    }


def test_the_program_takes_raw_pixels_and_scores_what_eval_scores(deploy: dict) -> None:
    # plain torch, no cnnfleet: load the program, feed 0..1 pixels, read the classes
    program = torch.export.load(str(deploy["dirs"]["float32"] / "model.pt2")).module()
    with torch.no_grad():
        logits = program(deploy["pixels"])
    accuracy = (logits.argmax(1) == deploy["labels"]).float().mean().item()
    # cnnfleet-train tests best.ckpt on the test split: the figure cnnfleet-eval reports
    assert accuracy == pytest.approx(deploy["summary"]["test"]["test/acc"], abs=1e-6)
    assert accuracy > 0.95  # measured 0.997; fed without its preprocessing it scored 9.8%
    assert (logits - deploy["logits"]).abs().max() <= 1e-4
    assert program(deploy["pixels"][:1]).shape == (1, 10)  # the batch dimension is dynamic


def test_the_uint8_program_takes_decoded_pixels(deploy: dict) -> None:
    program = torch.export.load(str(deploy["dirs"]["uint8"] / "model.pt2")).module()
    pixels = (deploy["pixels"] * 255).round().to(torch.uint8)  # 8-bit images: 0..16 levels rounded to 0..255
    with torch.no_grad():
        predicted = program(pixels).argmax(1)
    accuracy = (predicted == deploy["labels"]).float().mean().item()
    assert accuracy == pytest.approx(deploy["summary"]["test"]["test/acc"], abs=1e-6)
    with pytest.raises(RuntimeError, match="dtype"):  # one program, one dtype: a float batch is refused
        program(deploy["pixels"])
    report = json.loads((deploy["dirs"]["uint8"] / "export.json").read_text())
    assert report["input"]["dtype"] == "uint8" and report["input"]["range"] == [0, 255]
    assert not (deploy["dirs"]["uint8"] / "model.onnx").exists()


def test_onnx_gives_the_checkpoints_logits_with_onnxruntime(deploy: dict) -> None:
    session = onnxruntime.InferenceSession(str(deploy["dirs"]["float32"] / "model.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("images", "tensor(float)", "logits")
    logits = torch.from_numpy(session.run(None, {"images": deploy["pixels"].numpy()})[0])
    assert (logits - deploy["logits"]).abs().max() <= 1e-4
    report = json.loads((deploy["dirs"]["float32"] / "export.json").read_text())
    assert set(report["max_abs_logit_diff"]) == {"safetensors", "pt2", "onnx"}
    assert max(report["max_abs_logit_diff"].values()) <= report["tolerance"] == 1e-4


def test_export_json_states_the_input_contract(deploy: dict) -> None:
    report = json.loads((deploy["dirs"]["float32"] / "export.json").read_text())
    contract = report["input"]
    assert {k: contract[k] for k in ("dtype", "range", "layout", "channels", "height", "width")} == {
        "dtype": "float32",
        "range": [0.0, 1.0],
        "layout": "NCHW",
        "channels": 1,
        "height": 8,
        "width": 8,
    }
    assert contract["mean"] == [0.3] and contract["std"] == [0.38] and contract["normalised_inside"]
    assert report["class_names"] == [str(i) for i in range(10)]
    assert report["checkpoint"].endswith("checkpoints/best.ckpt") and report["versions"]["torch"] == torch.__version__
    assert report["output"]["shape"] == ["batch", 10]


def test_predict_from_an_artifact_equals_predict_from_the_checkpoint(deploy: dict) -> None:
    sources = ("ckpt", "pt2", "onnx")
    for name in sources:
        result = deploy["predicted"][name]
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    rows = {name: _predictions(deploy["root"] / name) for name in sources}
    assert len(rows["ckpt"]) == PNGS
    for name in ("pt2", "onnx"):
        assert [(r["file"], r["class"]) for r in rows[name]] == [(r["file"], r["class"]) for r in rows["ckpt"]]
        for mine, theirs in zip(rows[name], rows["ckpt"], strict=True):
            assert float(mine["probability"]) == pytest.approx(float(theirs["probability"]), abs=1e-5)
    correct = sum(r["class"] == str(int(deploy["labels"][int(Path(r["file"]).stem)])) for r in rows["onnx"])
    assert correct >= PNGS - 1
    assert "onnxruntime" in deploy["predicted"]["onnx"].stdout


def test_exported_files_have_the_usual_mode(deploy: dict) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    for folder in deploy["dirs"].values():
        files = sorted(p for p in folder.iterdir() if p.is_file())
        assert {p.name for p in files} >= {"model.safetensors", "model.pt2", "export.json"}
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~mask) for p in files}


def test_predict_needs_exactly_one_model(deploy: dict) -> None:
    result = deploy["predicted"]["neither"]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cnnfleet-predict: error: give one of ckpt_path=<checkpoint> and artifact=" in result.stderr
