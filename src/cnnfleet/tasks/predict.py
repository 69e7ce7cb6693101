"""predict(cfg): classify image files with a trained checkpoint; print a table, write predictions.csv."""

import csv
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnfleet.data.image_folder import load_image
from cnnfleet.inference import eval_transform, find_inputs, load_trained


def predict(cfg: DictConfig) -> list[dict]:
    trained = load_trained(cfg.ckpt_path)
    files = find_inputs(str(cfg.inputs))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = trained.module.to(device)
    transform = eval_transform(trained.data)
    mode = "RGB" if trained.data["channels"] == 3 else "L"
    names, k = trained.class_names, min(cfg.top_k, trained.data["num_classes"])
    rows: list[dict] = []
    for start in range(0, len(files), cfg.batch_size):
        chunk = files[start : start + cfg.batch_size]
        batch = torch.stack([transform(load_image(str(f), mode)) for f in chunk]).to(device)
        with torch.inference_mode():
            probs = module(batch).float().softmax(dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        for f, p, i in zip(chunk, top_p.tolist(), top_i.tolist(), strict=True):
            rows.append({"file": str(f), "class": names[i[0]], "probability": p[0],
                         "top_k": "; ".join(f"{names[c]}:{q:.4f}" for c, q in zip(i, p, strict=True))})  # fmt: skip
    output = Path(cfg.paths.output_dir) / "predictions.csv"
    with output.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "class", "probability", "top_k"])
        writer.writeheader()
        writer.writerows(rows)
    _print(rows, output, device)
    return rows


def _print(rows: list[dict], output: Path, device: torch.device) -> None:
    from rich.table import Table

    from cnnfleet.run.summary import wide_console

    table = Table(title=f"cnnfleet predict: {len(rows)} images on {device.type}", title_justify="left")
    for column in ("file", "class", "probability", "top-k"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["file"], row["class"], f"{row['probability']:.4f}", row["top_k"])
    wide_console().print(table)
    print(f"wrote {output}")
