"""Training curves: what the book's ProgressBoard shows, drawn once from the epoch history."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def curves_figure(rows: Sequence[dict[str, float]], title: str = "") -> Figure:
    """Train loss, val loss and val accuracy against epoch (one row per epoch, as in metrics.csv)."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], "-", label="train_loss")
    ax.plot(epochs, [r["val_loss"] for r in rows], "--", label="val_loss")
    ax.plot(epochs, [r["val_acc"] for r in rows], "-.", label="val_acc")
    if rows and "train_acc" in rows[0]:
        ax.plot(epochs, [r["train_acc"] for r in rows], ":", label="train_acc")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return fig
