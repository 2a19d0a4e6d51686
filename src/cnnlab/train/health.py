"""Signs that a run is not learning, told to the user in words while it trains.

A network whose learning rate blew it up early (dead ReLUs, a saturated output layer) keeps training without any
error: its loss stays at or above that of a uniform guess and it predicts one class for every image, which on a
balanced test set is exactly chance accuracy. Nothing crashes, so without a warning the user only finds out from
the final figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from cnnlab.checks import int_at_least, is_number
from cnnlab.errors import CnnlabError

# How far above chance still counts as "at chance", as a fraction of the distance from chance to perfect: 0.145
# for 10 classes. A constant predictor scores exactly 1/num_classes on a balanced split; a network that is
# learning, even slowly, is well past this after its first epoch (docs/benchmarks.md, "Short schedules: the fast
# recipe's gradient clip", records such first epochs).
MARGIN = 0.05
# A training loss above this factor of a uniform guess's means the steps diverged: a collapsed lenet-relu ends its
# epoch well above the uniform guess, the book's sigmoid LeNet after its first epoch just at it (the same section of
# docs/benchmarks.md has the figures).
STALL = 1.02


def chance_warning(row: Mapping[str, float], num_classes: int) -> str | None:
    """A one-line warning when an epoch's validation accuracy is no better than chance, else None.

    "No better" means at most ``MARGIN`` of the way from chance (``1 / num_classes``) to a perfect score.

    Args:
        row: one epoch's metrics as the Trainer records them (``epoch``, ``val_acc``, ``train_loss``, ...;
            only ``val_acc`` is required).
        num_classes: classes of the dataset (chance accuracy is ``1 / num_classes``).

    Example:
        >>> chance_warning({"epoch": 1, "val_acc": 0.1, "train_loss": 2.55}, 10)[:40]
        'epoch 1: validation accuracy 0.1000 is n'
        >>> chance_warning({"epoch": 1, "val_acc": 0.81}, 10) is None
        True
    """
    int_at_least(num_classes, "num_classes", 2)
    acc = row.get("val_acc")
    if not is_number(acc) or not 0 <= acc <= 1:  # worded for the row: the check's "X must be" does not fit
        raise CnnlabError(f"row must hold an accuracy val_acc in [0, 1], got {acc!r}")
    chance = 1 / num_classes
    if acc > chance + MARGIN * (1 - chance):
        return None
    where = f"epoch {row['epoch']:g}: " if isinstance(row.get("epoch"), (int, float)) else ""
    head = f"{where}validation accuracy {acc:.4f} is no better than chance (1/{num_classes} = {chance:.4f})"
    loss = row.get("train_loss")
    uniform = math.log(num_classes)  # the cross-entropy of predicting 1/num_classes for every class
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return f"{head}: the network is not learning"
    if loss <= STALL * uniform:
        # The book's sigmoid LeNet at lr 0.1 sits here for its first 1-2 epochs (d2l 7.6's loss curve), then learns;
        # a network that died mid-epoch can end its epoch here too, so the advice names both.
        return (f"{head}, training loss {loss:.3g} (a uniform guess: {uniform:.3g}): the network is not learning yet "
                "(the book's sigmoid LeNet takes 1-2 epochs to start); if it stays at chance, change --lr")
    return (f"{head}, training loss {loss:.3g} above the {uniform:.3g} of a uniform guess: the steps are too large "
            "for the network (try a smaller --lr, a longer schedule or --grad-clip 1)")
