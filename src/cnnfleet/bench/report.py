"""Bench results as bench.csv, bench.md and bench.png in the bench folder, and a table on stdout."""

import csv
from pathlib import Path

from rich.table import Table

from cnnfleet.run.summary import wide_console


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return "" if value is None else str(value)


def write_report(folder: Path, title: str, rows: list[dict], notes: list[str], chart: tuple[str, str] | None) -> None:
    """chart: (label column, value column) for a horizontal bar chart."""
    columns = [
        column
        for column in dict.fromkeys(k for row in rows for k in row)
        if any(row.get(column) not in (None, "") for row in rows)
    ]  # an empty column says nothing
    rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
    with (folder / "bench.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    lines += ["", *notes]
    (folder / "bench.md").write_text("\n".join(lines) + "\n")
    if chart:
        _bar_chart(folder / "bench.png", title, rows, *chart)
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    wide_console().print(table)
    for note in notes:
        print(note)
    print(f"wrote {folder}/bench.csv, bench.md" + (", bench.png" if chart else ""))


def _bar_chart(path: Path, title: str, rows: list[dict], label: str, value: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if isinstance(r.get(value), int | float)]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(shown) + 1.5))
    ax.barh([str(r[label]) for r in shown], [r[value] for r in shown], color="tab:blue")
    for i, r in enumerate(shown):
        ax.text(r[value], i, f" {r[value]:.2f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(value)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
