"""predict(cfg): classify image files with a trained checkpoint or an exported program (model.pt2,
model.onnx); print a table, write predictions.csv.

Both sources run the same way: decoded pixels in the input contract (deploy.pixel_transform) into a
callable that normalises inside, so a checkpoint and its export classify the same images alike.
"""

import csv
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnfleet.data.image_folder import load_image
from cnnfleet.errors import ConfigError
from cnnfleet.serving.deploy import Artifact, image_mode, load_artifact, pixel_transform
from cnnfleet.serving.inference import deployed, find_inputs, load_trained


def load_predictor(cfg: DictConfig) -> Artifact:
    """The model named by exactly one of ckpt_path and artifact; ConfigError for none or both."""
    if (cfg.ckpt_path is None) == (cfg.artifact is None):
        given = "both" if cfg.ckpt_path is not None else "neither"
        raise ConfigError(
            f"give one of ckpt_path=<checkpoint> and artifact=<model.pt2|model.onnx> ({given} given); "
            "an artifact is a file of a cnnfleet-export run folder"
        )
    if cfg.artifact is not None:
        return load_artifact(cfg.artifact)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return deployed(load_trained(cfg.ckpt_path), device)


def predict(cfg: DictConfig) -> list[dict]:
    model = load_predictor(cfg)
    files = find_inputs(str(cfg.inputs))
    transform, mode = pixel_transform(model.contract), image_mode(model.contract["channels"])
    names = model.class_names
    k = min(cfg.top_k, len(names))
    rows: list[dict] = []
    for start in range(0, len(files), cfg.batch_size):
        chunk = files[start : start + cfg.batch_size]
        batch = torch.stack([transform(load_image(str(f), mode)) for f in chunk])
        probs = model.run(batch).float().softmax(dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        for f, p, i in zip(chunk, top_p.tolist(), top_i.tolist(), strict=True):
            rows.append(
                {
                    "file": str(f),
                    "class": names[i[0]],
                    "probability": p[0],
                    "top_k": "; ".join(f"{names[c]}:{q:.4f}" for c, q in zip(i, p, strict=True)),
                }
            )
    output = Path(cfg.paths.output_dir) / "predictions.csv"
    with output.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "class", "probability", "top_k"])
        writer.writeheader()
        writer.writerows(rows)
    _print(rows, output, model.device)
    return rows


def _print(rows: list[dict], output: Path, device: str) -> None:
    from rich.table import Table

    from cnnfleet.run.summary import wide_console

    table = Table(title=f"cnnfleet predict: {len(rows)} images on {device}", title_justify="left")
    for column in ("file", "class", "probability", "top-k"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["file"], row["class"], f"{row['probability']:.4f}", row["top_k"])
    wide_console().print(table)
    print(f"wrote {output}")
