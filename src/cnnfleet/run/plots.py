"""PNG figures for the run folder: the test confusion matrix and the training curves."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (SLURM nodes, CI)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(counts: np.ndarray, names: list[str], path: Path) -> Path:
    size = max(4.0, 0.5 * len(names))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    if len(names) <= 30:  # label every cell while it stays readable
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
        for (row, col), value in np.ndenumerate(counts):
            color = "white" if value > counts.max() / 2 else "black"
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion matrix ({counts.sum()} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _series(rows: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r[x]), float(r[y])) for r in rows if r.get(y) not in (None, "") and r.get(x) not in (None, "")]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Loss, accuracy and learning rate from metrics.csv; None when there is nothing to plot."""
    if not metrics_csv.is_file():
        return None
    rows = list(csv.DictReader(metrics_csv.open()))
    lr_key = next((k for k in (rows[0] if rows else {}) if k.startswith("lr-")), None)
    panels = [
        ("loss", [("train/loss", "step"), ("val/loss", "step")]),
        ("accuracy", [("train/acc", "step"), ("val/acc", "step")]),
        ("learning rate", [(lr_key, "step")] if lr_key else []),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, lines) in zip(axes, panels, strict=True):
        for key, x in lines:
            xs, ys = _series(rows, x, key)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
