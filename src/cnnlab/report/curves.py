"""Training curves: what the book's ProgressBoard shows, drawn once from the epoch history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.io import train_loss_label

# Up to this many epochs every point gets a marker: a line needs two points, so a one-epoch run would otherwise
# draw nothing at all, and a short run reads better with its measured epochs marked.
MARKED_EPOCHS = 20


def curves_figure(rows: Sequence[dict[str, float]], title: str = "", balance: Any = None) -> Figure:
    """Train loss, val loss and val accuracy (and balanced accuracy, where the validation classes are unbalanced;
    the training figures alone for a run that held out nothing) against epoch (one row per epoch, as in
    metrics.csv); ``balance`` is the run's ``--balance``, which the training loss's legend names where it makes that
    loss another measure than the validation loss.

    The x axis shows whole epochs from half an epoch before the first to half an epoch after the last, so a
    single-epoch run is one marked point in the middle of the chart rather than an empty box.
    """
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= MARKED_EPOCHS else None
    ax.plot(epochs, [r["train_loss"] for r in rows], "-", marker=marker, label=train_loss_label(balance))
    val_loss, val_acc, balanced = ([r.get(key, math.nan) for r in rows] for key in ("val_loss", "val_acc",
                                                                                     "val_bal_acc"))
    if any(a == a for a in val_acc):  # a run that held out nothing measured no validation figure: none drawn
        ax.plot(epochs, val_loss, "--", marker=marker, label="val_loss")
        ax.plot(epochs, val_acc, "-.", marker=marker, label="val_acc")
    # Only where it tells something: on balanced classes it is the accuracy, and a run from before it has none
    if any(b == b and abs(b - a) > 1e-9 for b, a in zip(balanced, val_acc, strict=True)):
        ax.plot(epochs, balanced, "-.", marker=marker, label="val_bal_acc")
    if rows and "train_acc" in rows[0]:
        ax.plot(epochs, [r["train_acc"] for r in rows], ":", marker=marker, label="train_acc")
    ax.set_xlabel("epoch")
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return fig
