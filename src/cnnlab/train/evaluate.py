"""Evaluating a trained checkpoint on the Fashion-MNIST test set: accuracy, per-class accuracy, confusion matrix.

``cnnlab eval CHECKPOINT`` calls :func:`evaluate_checkpoint` and prints :func:`format_eval`; the HTML report and
``cnnlab predict`` reuse :func:`predict_logits`, so every path from images to logits is the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError


@torch.no_grad()
def predict_logits(model: nn.Module, preprocess: nn.Module, images: torch.Tensor, batch_size: int = 512,
                   device: str | torch.device | None = None, tta: bool = False) -> torch.Tensor:
    """Logits of ``model`` for a stack of images, batch by batch, without gradients and in eval mode.

    Args:
        images: uint8 ``N x 28 x 28`` or ``N x 1 x 28 x 28`` (as the dataset stores them, scaled by 1/255 here),
            or float ``N x 1 x H x W`` already in [0, 1]. Only one batch at a time is moved to ``device``.
        preprocess: the checkpoint's :class:`cnnlab.data.Preprocess` (resize and normalisation).
        batch_size: images per forward pass.
        device: where to run (default: the device of the model's parameters).
        tta: average the logits of each image and its left-right mirror, as training's flip-TTA does.

    Returns:
        float32 logits ``N x num_classes`` on the CPU.

    Example:
        >>> from cnnlab.data import Preprocess
        >>> from cnnlab.models import create_model
        >>> images = torch.zeros(3, 28, 28, dtype=torch.uint8)
        >>> predict_logits(create_model("lenet"), Preprocess(28), images).shape
        torch.Size([3, 10])
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)  # N x 1 x H x W
    if images.dim() != 4:
        raise CnnlabError(f"expected images N x H x W or N x C x H x W, got shape {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            x = preprocess(x)
            logits = model(x)
            if tta:
                logits = (logits + model(x.flip(-1))) / 2
            chunks.append(logits.float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise CnnlabError("expected at least one image, got none")
    return torch.cat(chunks)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = how many images of true class ``i`` were predicted as class ``j`` (int64, rows sum to counts)."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` measured.

    Attributes:
        accuracy: fraction of test images classified correctly.
        per_class: accuracy (recall) of each true class, in class order.
        confusion: int64 ``num_classes x num_classes``; rows are true classes, columns predictions.
        n: number of images evaluated.
        classes: the class names.
        model: the checkpoint's model name.
        checkpoint: path of the checkpoint.
        device: where it ran.
        tta: whether flip-TTA was used.
    """

    accuracy: float
    per_class: list[float]
    confusion: torch.Tensor
    n: int
    classes: tuple[str, ...]
    model: str = ""
    checkpoint: str = ""
    device: str = ""
    tta: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], **info: Any) -> EvalResult:
        """Build the result from logits ``N x C`` and true labels ``N``."""
        if logits.shape[0] != labels.shape[0]:
            raise CnnlabError(f"expected one label per image, got {labels.shape[0]} labels for {logits.shape[0]}")
        cm = confusion_matrix(logits.argmax(1), labels, len(classes))
        counts = cm.sum(1).clamp_min(1)
        return cls(accuracy=float(cm.diag().sum()) / max(int(labels.shape[0]), 1),
                   per_class=(cm.diag().double() / counts).tolist(), confusion=cm, n=int(labels.shape[0]),
                   classes=tuple(classes), **info)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the confusion matrix as nested lists, per-class accuracy keyed by class name."""
        return {
            "model": self.model, "checkpoint": self.checkpoint, "n": self.n, "accuracy": self.accuracy,
            "per_class": dict(zip(self.classes, self.per_class, strict=True)), "classes": list(self.classes),
            "confusion": self.confusion.tolist(), "device": self.device, "tta": self.tta, **self.extra,
        }


def evaluate_checkpoint(path: str | Path, data_dir: str | Path | None = None, device: str = "auto",
                        batch_size: int = 512, tta: bool | None = None) -> EvalResult:
    """Test accuracy, per-class accuracy and confusion matrix of a checkpoint on the 10,000 test images.

    Args:
        path: a ``.pt`` file written by ``cnnlab train`` (its EMA weights when the run kept them).
        data_dir: Fashion-MNIST folder (default: ``$CNNLAB_DATA``, then the download cache).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: images per forward pass.
        tta: flip-TTA; ``None`` follows the run's own ``tta`` setting, so the number matches its result.json.

    Raises:
        CheckpointError: the file is missing, corrupt or not a cnnlab checkpoint.
        DataError: the test set cannot be loaded.
    """
    from cnnlab.data import load_fashion_mnist
    from cnnlab.device import resolve_device
    from cnnlab.train.checkpoint import load_model

    dev = resolve_device(device)
    model, preprocess, ckpt = load_model(path, dev)
    if tta is None:
        tta = bool((ckpt.get("config") or {}).get("tta", False))
    data = load_fashion_mnist(data_dir)
    logits = predict_logits(model, preprocess, data.test_images, batch_size, dev, tta=tta)
    return EvalResult.from_logits(logits, data.test_labels, data.classes, model=ckpt["model_name"],
                                  checkpoint=str(path), device=str(dev), tta=tta)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Text table: the first ``left`` columns left-aligned, the numbers right-aligned; a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=True)))
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def format_eval(result: EvalResult) -> str:
    """Human-readable evaluation: the accuracy line, a per-class table, the confusion matrix as text.

    Confusion-matrix columns are labelled by class index (the per-class table maps index to name) so the
    table fits in 100 columns.
    """
    tta = ", flip-TTA" if result.tta else ""
    lines = [f"{result.model or 'model'}: test accuracy {result.accuracy:.4f} "
             f"({int(result.confusion.diag().sum())}/{result.n}{tta}) on {result.device or 'cpu'}", ""]
    counts = result.confusion.sum(1).tolist()
    rows = zip(result.classes, result.per_class, counts, strict=True)
    lines += _table(["#", "class", "accuracy", "images"],
                    [[str(i), name, f"{acc:.4f}", str(c)] for i, (name, acc, c) in enumerate(rows)], left=2)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    k = len(result.classes)
    lines += _table(["true \\ pred", *map(str, range(k))],
                    [[f"{i} {result.classes[i]}", *map(str, result.confusion[i].tolist())] for i in range(k)])
    return "\n".join(lines)
