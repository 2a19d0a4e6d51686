"""Signs that a run is not learning, told to the user in words while it trains.

A network whose learning rate blew it up early (dead ReLUs, a saturated output layer) keeps training without any
error: its loss stays at or above that of a uniform guess and it predicts one class for every image, which on a
balanced test set is exactly chance accuracy. Nothing crashes, so without a warning the user only finds out from
the final figure. On unbalanced classes (a folder of 200, 20 and 5 images) such a network scores its class's share,
up to the largest one's (0.89 there), so there the check judges the balanced accuracy, the mean of the classes'
recalls, which is 1/classes for any network that names one class for every image, whatever the shares.

A network that has learned its training images yet is at chance on the validation split is another case: it
predicts differently in evaluation mode. With BatchNorm and few steps (a small dataset at a large batch) that is
the running statistics evaluation uses: they start at mean 0 / variance 1 and after a few dozen updates still
hold much of it, far from the batches' own (docs/benchmarks.md, "BatchNorm's running statistics in a short run").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from cnnlab.checks import int_at_least, is_number
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import balanced_accuracy

# How far above chance still counts as "at chance", as a fraction of the distance from chance to perfect: 0.145
# for 10 classes. A constant predictor scores exactly 1/num_classes on a balanced split; a network that is
# learning, even slowly, is well past this after its first epoch (docs/benchmarks.md, "Short schedules: the fast
# recipe's gradient clip", records such first epochs).
MARGIN = 0.05
# A training loss above this factor of a uniform guess's means the steps diverged: a collapsed lenet-relu ends its
# epoch well above the uniform guess, the book's sigmoid LeNet after its first epoch just at it (the same section of
# docs/benchmarks.md has the figures).
STALL = 1.02
# A training accuracy this far from chance to perfect (0.55 for 10 classes) says the network has learned its
# training images, so a validation accuracy at chance beside it is no slow start: the network predicts differently
# in evaluation mode, or the validation images are unlike the training ones.
LEARNED = 0.5
# BatchNorm's running statistics move 10% (torch's momentum 0.1) from their start, mean 0 / variance 1, towards
# each training batch's, so 0.9**n of the start is left after n updates: 0.2 after 15, 3e-5 after 100. Batch
# variances can be far below 1 (ResNet-18 on sklearn's 8x8 digits: about 0.005-0.05), so under 100 updates the
# start can still outweigh them; the running statistics are then the likely cause, past it not (measured:
# docs/benchmarks.md, "BatchNorm's running statistics in a short run").
BN_SETTLED = 100


def chance_warning(row: Mapping[str, float], num_classes: int, bn_updates: int | None = None,
                   frozen: bool = False, recalls: Sequence[float | None] | None = None,
                   train_share: float | None = None, split: str = "validation") -> str | None:
    """A one-line warning when an epoch's validation accuracy is no better than chance, else None.

    "No better" means at most ``MARGIN`` of the way from chance (``1 / num_classes``; of the balanced accuracy on
    unbalanced classes, given ``recalls``) to a perfect score. When the training accuracy is well above chance
    (:func:`learned_but_at_chance`) the line names the gap, and BatchNorm's running statistics when they have had
    fewer than ``BN_SETTLED`` updates.

    Args:
        row: one epoch's metrics as the Trainer records them (``epoch``, ``val_acc``, ``train_loss``,
            ``train_acc``, ...; only ``val_acc`` is required).
        num_classes: classes of the dataset (chance accuracy is ``1 / num_classes``).
        bn_updates: updates of the model's BatchNorm running statistics so far (:func:`batch_norm_updates`; None:
            no BatchNorm layer keeps them).
        frozen: the body was frozen for the epoch (fine-tuning): only the new head trained, so a smaller lr is not
            the cure for a loss above a uniform guess.
        recalls: each class's recall on the validation split (None for a class without validation images), given
            where its classes are unbalanced: the check then judges their mean, the balanced accuracy, against
            ``1 / classes with images`` (:func:`judged`).
        train_share: the largest class's share of the training images as drawn (None: ``1 / num_classes``), the
            training accuracy of a network naming one class for every image: the one it must be well above to have
            learned its training images (:func:`learned_but_at_chance`).
        split: what the line calls the split the figure is of: ``"test"`` where the test set validates (the book's
            way, no ``--val-split``), which it would be wrong to call the validation set.

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
    figure, classes, balanced = judged(acc, num_classes, recalls)
    chance = 1 / classes
    if figure > chance + MARGIN * (1 - chance):
        return None
    where = f"epoch {row['epoch']:g}: " if isinstance(row.get("epoch"), (int, float)) else ""
    mean = (f", balanced accuracy {figure:.4f} (the mean of the {classes} classes' recalls, as the {split} "
            "classes are unbalanced),") if balanced else ""
    head = f"{where}{split} accuracy {acc:.4f}{mean} is no better than chance (1/{classes} = {chance:.4f})"
    if learned_but_at_chance(row, num_classes, recalls, train_share):
        head = f"{head} while training accuracy is {row['train_acc']:.4f}"
        if bn_updates is not None and bn_updates < BN_SETTLED:
            return (f"{head}: evaluation uses BatchNorm's running statistics, which have had only {bn_updates} "
                    "updates (one a training batch) and are still far from the batches' own; train more --epochs or "
                    "use a smaller --batch-size")
        return (f"{head}: the network predicts differently in evaluation mode, or the {split} images differ "
                "from the training images")
    loss = row.get("train_loss")
    uniform = math.log(num_classes)  # the cross-entropy of predicting 1/num_classes for every class
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return f"{head}: the network is not learning"
    if frozen:  # a fresh head's first logits are not uniform, and its few steps move it little (docs/benchmarks.md)
        return (f"{head}, training loss {loss:.3g}: only the new head trained, on a frozen body; a frozen phase of "
                "few steps (a small dataset's epoch) leaves it near chance, and --freeze-epochs 0 trains every layer "
                "from the start")
    if loss <= STALL * uniform:
        # The book's sigmoid LeNet at lr 0.1 sits here for its first 1-2 epochs (d2l 7.6's loss curve), then learns;
        # a network that died mid-epoch can end its epoch here too, so the advice names both.
        return (f"{head}, training loss {loss:.3g} (a uniform guess: {uniform:.3g}): the network is not learning yet "
                "(the book's sigmoid LeNet takes 1-2 epochs to start); if it stays at chance, change --lr")
    return (f"{head}, training loss {loss:.3g} above the {uniform:.3g} of a uniform guess: the steps are too large "
            "for the network (try a smaller --lr, a longer schedule or --grad-clip 1)")


def learned_but_at_chance(row: Mapping[str, float], num_classes: int,
                          recalls: Sequence[float | None] | None = None, train_share: float | None = None) -> bool:
    """Whether an epoch's training accuracy is at least ``LEARNED`` of the way from chance (``train_share``, else
    ``1 / num_classes``) to perfect while its validation accuracy (its balanced accuracy, given ``recalls``) is at
    chance (as :func:`chance_warning` judges them): never a slow start, at any epoch.

    Example:
        >>> learned_but_at_chance({"train_acc": 0.93, "val_acc": 0.1}, 10)
        True
    """
    acc, train_acc = row.get("val_acc"), row.get("train_acc")
    if not is_number(acc) or not is_number(train_acc):
        return False
    figure, classes, _ = judged(acc, num_classes, recalls)
    chance, trained = 1 / classes, train_share if train_share is not None else 1 / num_classes
    return figure <= chance + MARGIN * (1 - chance) and train_acc >= trained + LEARNED * (1 - trained)


def judged(acc: float, num_classes: int, recalls: Sequence[float | None] | None) -> tuple[float, int, bool]:
    """(the figure the chance check judges, the classes its chance is one over, whether it is the balanced
    accuracy): the accuracy ``acc`` and ``num_classes``; given ``recalls`` (unbalanced validation classes) of at
    least two classes with images, their mean and their count. A network naming one class for every image has a
    recall of 1 for that class and 0 for the others, so its balanced accuracy is exactly chance, where its accuracy
    is that class's share."""
    present = sum(r is not None for r in recalls) if recalls is not None else 0
    if present < 2:  # one class in the split: every constant guess of it is right, nothing to judge by
        return acc, num_classes, False
    return balanced_accuracy(recalls), present, True


def batch_norm_updates(model: nn.Module) -> int | None:
    """The fewest updates any of ``model``'s BatchNorm layers has made to its running statistics (torch's and
    cnnlab's own layers: ``num_batches_tracked``), or None when no layer keeps an exponential moving average of
    them (``momentum=None`` keeps an exact cumulative one, right after its first update). One host sync.
    """
    counts = [m.num_batches_tracked for m in model.modules()
              if isinstance(getattr(m, "num_batches_tracked", None), torch.Tensor)
              and getattr(m, "momentum", None) is not None]
    return int(torch.stack(counts).min()) if counts else None
