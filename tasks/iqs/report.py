"""Pictures and markdown a person looks at after training or scoring."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.figures import png, subplots


def score_histogram_png(groups: dict[str, np.ndarray], title: str) -> bytes:

    fig, ax = subplots(figsize=(6, 3.5))
    for label, values in groups.items():
        ax.hist(values, bins=40, alpha=0.6, label=label)
    ax.set_xlabel("IQS score")
    ax.set_ylabel("rows")
    ax.set_title(title)
    if len(groups) > 1:
        ax.legend()
    return png(fig)


def training_curve_png(history: Sequence[dict[str, float]]) -> bytes:

    fig, ax = subplots(figsize=(6, 3.5))
    epochs = [row["epoch"] for row in history]
    for name in ("val_pairwise_accuracy", "val_kendall"):
        ax.plot(epochs, [row.get(name, float("nan")) for row in history], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_title("IQS validation")
    ax.legend()
    return png(fig)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
