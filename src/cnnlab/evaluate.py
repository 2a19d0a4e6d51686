"""Evaluating a trained checkpoint on its dataset's test set: accuracy, per-class accuracy, precision, recall and F1,
macro-F1, balanced accuracy, confusion matrix.

``cnnlab eval CHECKPOINT`` calls :func:`evaluate_checkpoint` and prints :func:`format_eval`; the logits come from
:mod:`cnnlab.inference`, the path every consumer of a checkpoint shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import FOLDER_PREFIX
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference import load_trained
from cnnlab.table import text_table


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = how many images of true class ``i`` were predicted as class ``j`` (int64, rows sum to counts)."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def balanced_accuracy(recalls: Sequence[float | None]) -> float:
    """The mean of the recalls of the classes that have images (None: a class without any), as scikit-learn's
    ``balanced_accuracy_score`` averages over the classes present in the true labels; NaN where none has.

    Example:
        >>> balanced_accuracy([1.0, 0.5, None])
        0.75
    """
    present = [r for r in recalls if r is not None]
    return sum(present) / len(present) if present else math.nan


def class_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, and their macro-F1, from a confusion matrix (rows: true class).

    As scikit-learn's ``precision_recall_fscore_support(zero_division=0)`` computes them: precision ``tp / (tp +
    fp)``, recall ``tp / (tp + fn)``, F1 ``2 tp / (2 tp + fp + fn)``; a class never predicted has precision 0. A
    class with no test images has no recall (None), and if it is never predicted either, no F1 (None): it is not
    in the test at all. Macro-F1 is the unweighted mean of the F1 scores there are (scikit-learn's, over the
    labels in the truth or the predictions), so every class counts as much however few images it has (what
    accuracy hides on unbalanced classes), and a class without test images does not count as a failure.

    Example:
        >>> class_scores(torch.tensor([[3, 1], [0, 2]]))["macro_f1"]
        0.8285714285714285
    """
    cm = confusion.double()
    tp, predicted, actual = cm.diag(), cm.sum(0), cm.sum(1)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))

    f1 = ratio(2 * tp, predicted + actual)  # 2 tp + fp + fn = predicted + actual
    scored = (predicted + actual) > 0
    recall = [value if n > 0 else None for value, n in zip(ratio(tp, actual).tolist(), actual.tolist(), strict=True)]
    return {"precision": ratio(tp, predicted).tolist(), "recall": recall,
            "f1": [value if seen else None for value, seen in zip(f1.tolist(), scored.tolist(), strict=True)],
            "support": actual.long().tolist(), "macro_f1": float(f1[scored].mean()) if scored.any() else 0.0}


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` measured.

    Attributes:
        accuracy: fraction of test images classified correctly.
        per_class: accuracy (recall) of each true class, in class order; None for a class with no test images.
        confusion: int64 ``num_classes x num_classes``; rows are true classes, columns predictions.
        n: number of images evaluated.
        classes: the class names.
        model: the checkpoint's model name.
        checkpoint: path of the checkpoint.
        device: where it ran.
        tta: whether flip-TTA was used.
        scored: which images were scored, in words (:func:`cnnlab.inference.scored_images`), or "".
        precision, recall, f1: per class, in class order (:func:`class_scores`; recall is ``per_class``); recall
            and F1 are None where a class is not in the test (no images, for F1 no predictions either).
        macro_f1: the unweighted mean of the F1 scores that are not None.
    """

    accuracy: float
    per_class: list[float | None]
    confusion: torch.Tensor
    n: int
    classes: tuple[str, ...]
    model: str = ""
    checkpoint: str = ""
    device: str = ""
    tta: bool = False
    scored: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    precision: list[float] = field(default_factory=list)
    recall: list[float | None] = field(default_factory=list)
    f1: list[float | None] = field(default_factory=list)
    macro_f1: float = 0.0

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], **info: Any) -> EvalResult:
        """Build the result from logits ``N x C`` and true labels ``N``."""
        if logits.shape[0] != labels.shape[0]:
            raise CnnlabError(f"expected one label per image, got {labels.shape[0]} labels for {logits.shape[0]}")
        cm = confusion_matrix(logits.argmax(1), labels, len(classes))
        scores = class_scores(cm)
        return cls(accuracy=float(cm.diag().sum()) / max(int(labels.shape[0]), 1),
                   per_class=scores["recall"], confusion=cm, n=int(labels.shape[0]),  # a class's accuracy: its recall
                   classes=tuple(classes), precision=scores["precision"], recall=scores["recall"], f1=scores["f1"],
                   macro_f1=scores["macro_f1"], **info)

    @property
    def balanced_accuracy(self) -> float:
        """The mean of the classes' recalls (:func:`balanced_accuracy`): what a run on unbalanced classes judges."""
        return balanced_accuracy(self.per_class)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the confusion matrix as nested lists, per-class accuracy, precision, recall and F1 keyed by
        class name, the macro-F1 and the balanced accuracy."""
        by_class = {name: dict(zip(self.classes, values, strict=True))
                    for name, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1))}
        return {
            "model": self.model, "checkpoint": self.checkpoint, "n": self.n, "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1, **by_class,
            "per_class": dict(zip(self.classes, self.per_class, strict=True)), "classes": list(self.classes),
            "confusion": self.confusion.tolist(), "device": self.device, "tta": self.tta, "scored": self.scored,
            **self.extra,
        }


def evaluate_checkpoint(path: str | Path, data_dir: str | Path | None = None, device: str = "auto",
                        batch_size: int = 512, tta: bool | None = None, dataset: str | None = None,
                        skip_bad: bool = False) -> EvalResult:
    """Test accuracy, per-class accuracy and confusion matrix of a checkpoint on its dataset's test split.

    Args:
        path: a ``.pt`` file written by ``cnnlab train`` (its EMA weights when the run kept them).
        data_dir: the dataset's folder (default: where the run found it, else the dataset's default lookup). A
            folder without ``test/`` that the run did not train on is scored whole; the result's ``scored`` says
            which images were (:func:`cnnlab.inference.scored_images`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: images per forward pass.
        tta: flip-TTA; ``None`` follows the run's own ``tta`` setting, so the number matches its result.json.
        dataset: evaluate on another dataset (default: the one the run trained on) whose classes are among the
            model's, matched by name (a folder of some of them is scored over its own, each answer the likeliest of
            those, as ``scored`` says); a folder without ``test/`` (``folder:PATH``) is scored whole.
        skip_bad: a folder's unreadable image files are left out (counted in its notices) instead of refused.

    Raises:
        CheckpointError: the file is missing, corrupt or not a cnnlab checkpoint.
        DataError: the test set cannot be loaded.
        CnnlabError: the dataset's classes differ from the model's (another dataset: one it does not name).
    """
    trained = load_trained(path, device)
    with folder_named_as_data_dir(data_dir, trained.meta.dataset if dataset is None else None):
        data = trained.dataset(data_dir, other=dataset, skip_bad=skip_bad, training=False)  # the test split alone
    other = dataset is not None and data.name != trained.meta.dataset  # named as another dataset than the run's
    # another folder, named by --dataset or --data-dir, may hold some of the model's classes
    columns, said = trained.check_dataset(data, other, some=data_dir is not None)
    images, labels, scored = trained.scored_images(data, other)
    logits = trained.logits(images, batch_size, tta=tta)[:, columns]
    return EvalResult.from_logits(logits, labels, data.classes, model=trained.meta.model_name,
                                  checkpoint=str(path), device=str(trained.device),
                                  tta=trained.meta.tta if tta is None else tta,
                                  scored="; ".join([scored, *said, *skipped_notices(data)]))


@contextmanager
def folder_named_as_data_dir(data_dir: str | Path | None, dataset: str | None) -> Iterator[None]:
    """A registered dataset that cannot be read from ``data_dir`` says how to score that folder instead.

    ``dataset``: the model's own dataset, which ``data_dir`` was read as; None where the reader named the dataset.

    For a checkpoint or a cnnlab export of Fashion-MNIST (or another registered dataset), ``--data-dir`` names where
    that dataset's files are; a reader who meant a folder of their own labelled images was told only that the
    dataset's files are missing there (README: ``cnnlab eval MODEL --data-dir ~/pets``, which scores such a folder
    for a model from elsewhere). The line now also names ``--dataset folder:PATH``, which scores it for any model.
    """
    try:
        yield
    except DataError as e:
        if data_dir is None or dataset is None or dataset.startswith(FOLDER_PREFIX) or not Path(data_dir).is_dir():
            raise
        raise DataError(f"{e}; if {data_dir} is a folder of class subfolders to score, name it --dataset "
                        f"folder:{data_dir}") from None


def skipped_notices(data) -> list[str]:
    """What a folder's loader says of the unreadable files it left out (``skip_bad``): the figures are of the
    others, which the scored line must say."""
    return [notice for notice in data.notices if notice.startswith("skipped ")]


# Past this many classes the confusion matrix is no table to read in a terminal (1,000 classes: 2,000 lines of 5,000
# characters, 5 MB): the most frequent confusions are printed instead, and --json keeps the whole matrix.
CONFUSION_TEXT_UP_TO = 30
MOST_CONFUSED = 20


def format_eval(result: EvalResult) -> str:
    """Human-readable evaluation: the accuracy line, which images were scored, a per-class table, the confusion
    matrix as text (above :data:`CONFUSION_TEXT_UP_TO` classes, its :data:`MOST_CONFUSED` largest cells off the
    diagonal instead).

    Confusion-matrix columns are labelled by class index (the per-class table maps index to name) so the
    table fits in 100 columns.
    """
    tta = ", flip-TTA" if result.tta else ""
    head = (f"{result.model or 'model'}: test accuracy {result.accuracy:.4f} "
            f"({int(result.confusion.diag().sum())}/{result.n}{tta}) on {result.device or 'cpu'}, "
            f"macro-F1 {result.macro_f1:.4f}, balanced accuracy {result.balanced_accuracy:.4f}")
    lines = [head] + ([f"scored: {result.scored}"] if result.scored else []) + [""]
    counts = result.confusion.sum(1).tolist()
    rows = zip(result.classes, result.per_class, result.precision, result.f1, counts, strict=True)
    lines.append(text_table(["#", "class", "accuracy (recall)", "precision", "F1", "images"],
                            [[i, name, _figure(acc), f"{p:.4f}", _figure(f), c]
                             for i, (name, acc, p, f, c) in enumerate(rows)], "llrrrr", rule="columns"))
    if None in result.per_class:
        lines.append("–: the class has no test images (its F1: and no predictions); macro-F1 leaves such a class out")
    k = len(result.classes)
    if k > CONFUSION_TEXT_UP_TO:
        lines += ["", *_most_confused(result)]
        return "\n".join(lines)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(text_table(["true \\ pred", *range(k)],
                            [[f"{i} {result.classes[i]}", *result.confusion[i].tolist()] for i in range(k)],
                            "l" + "r" * k, rule="columns"))
    return "\n".join(lines)


def _most_confused(result: EvalResult) -> list[str]:
    """The heading and table of the :data:`MOST_CONFUSED` most frequent confusions (true class predicted as another),
    most images first, ties in class order."""
    off = result.confusion.clone()
    off.fill_diagonal_(0)
    counts = off.flatten()
    order = torch.argsort(counts, descending=True, stable=True)[:MOST_CONFUSED]
    k, names = len(result.classes), result.classes
    rows = [[f"{i // k} {names[i // k]}", f"{i % k} {names[i % k]}", int(counts[i])]
            for i in order.tolist() if counts[i] > 0]
    heading = (f"the {len(rows)} most frequent confusions of {k} classes (the whole {k} x {k} confusion matrix: "
               "--json)")
    return [heading, text_table(["true class", "predicted as", "images"], rows, "llr", rule="columns")] if rows \
        else ["no image of one class was predicted as another"]


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
