"""The function-style training loops of d2l-zh v2 / d2l 1.0.3's ``torch.py``: accuracy, evaluation, ``train_ch3``,
``train_ch6``, ``train_ch13`` and their helpers.

Same signatures, printouts and Animator curves as the book's; what differs is where the numbers live. The book
turns every batch's loss and accuracy into a Python float (a host sync per step on a GPU); these loops keep the
sums on the device and read them back only where a value is shown (the Animator's 5 points per epoch and the
epoch's end). ``train_ch6`` and ``evaluate_accuracy_gpu`` move the book's loaders (``load_data_fashion_mnist``)
to the training device whole, so batches are gathered and resized there, and hold conv weights channels-last
while training (oneDNN's and cuDNN's fast layout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cnnlab.d2l.animator import Animator
from cnnlab.d2l.data import get_fashion_mnist_labels, on_device, show_images
from cnnlab.d2l.devices import try_all_gpus
from cnnlab.d2l.layout import channels_last_checked, to_contiguous
from cnnlab.d2l.utils import Timer
from cnnlab.errors import CnnlabError

__all__ = ["accuracy", "evaluate_accuracy", "evaluate_accuracy_gpu", "evaluate_loss", "train_epoch_ch3",
           "train_ch3", "predict_ch3", "train_ch6", "split_batch", "train_batch_ch13", "train_ch13"]

Net = Callable[[torch.Tensor], torch.Tensor]


def _correct(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of right predictions as a 0-d tensor on ``y_hat``'s device (scores: arg-max over dim 1)."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return (y_hat.type(y.dtype) == y).sum()


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Number of correct predictions (not a fraction) as a float (d2l-zh 3.6.5)."""
    return float(_correct(y_hat, y))


def _device_of(net: Any) -> torch.device | None:
    param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    return param.device if param is not None else None


def _to(x: Any, device: torch.device | None) -> Any:
    if device is None:
        return x
    if isinstance(x, list):  # several inputs (the book's BERT fine-tuning)
        return [a.to(device) for a in x]
    return x.to(device)


def evaluate_accuracy_gpu(net: Net, data_iter: Iterable, device: str | torch.device | None = None) -> float:
    """Fraction of ``data_iter``'s examples ``net`` classifies right, on ``device`` (default: where ``net`` is)."""
    if isinstance(net, nn.Module):
        net.eval()
        if not device:
            device = _device_of(net)
    device = torch.device(device) if device is not None else None
    correct, total = 0, 0
    with torch.no_grad():
        for X, y in on_device(data_iter, device) if device is not None else data_iter:
            X, y = _to(X, device), _to(y, device)
            correct = correct + _correct(net(X), y)
            total += y.numel()
    return float(correct) / total


def evaluate_accuracy(net: Net, data_iter: Iterable) -> float:
    """Fraction of ``data_iter``'s examples ``net`` classifies right, where the batches are (d2l-zh 3.6.5)."""
    return evaluate_accuracy_gpu(net, data_iter, device=_device_of(net))


def evaluate_loss(net: Net, data_iter: Iterable, loss: Callable) -> float:
    """Mean of the per-element ``loss(net(X), y)`` over ``data_iter``, ``y`` reshaped like the output (d2l-zh 4.4)."""
    total, count = 0, 0
    with torch.no_grad():  # d2l builds the autograd graph here for nothing
        for X, y in data_iter:
            out = net(X)
            l = loss(out, y.reshape(out.shape))
            total = total + l.sum()
            count += l.numel()
    return float(total) / count


def train_epoch_ch3(net: Net, train_iter: Iterable, loss: Callable, updater: Any) -> tuple[float, float]:
    """One pass over ``train_iter``; returns the mean training loss and accuracy (d2l-zh 3.6.6).

    ``updater`` is a torch optimizer (``loss`` then gets ``.mean()``) or the book's ``updater(batch_size)`` function
    (``loss`` gets ``.sum()``, as ``d2l.sgd`` divides by the batch size).
    """
    if isinstance(net, nn.Module):
        net.train()
    loss_sum, correct, count = 0, 0, 0
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        with torch.no_grad():
            loss_sum = loss_sum + l.detach().sum()
            correct = correct + _correct(y_hat, y)
        count += y.numel()
    if count == 0:
        raise CnnlabError("train_iter is empty: expected at least one batch, got 0")
    return float(loss_sum) / count, float(correct) / count


def train_ch3(net: Net, train_iter: Iterable, test_iter: Iterable, loss: Callable, num_epochs: int,
              updater: Any) -> None:
    """Train for ``num_epochs``, adding train loss, train accuracy and test accuracy to an Animator each epoch.

    d2l's version ends with asserts on the final figures (loss < 0.5, accuracies > 0.7), which stop a short or
    tiny run with a bare AssertionError; they are left out.
    """
    animator = Animator(xlabel="epoch", xlim=[1, num_epochs], ylim=[0.3, 0.9],
                        legend=["train loss", "train acc", "test acc"])
    for epoch in range(num_epochs):
        train_metrics = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        animator.add(epoch + 1, train_metrics + (test_acc,))


def predict_ch3(net: Net, test_iter: Iterable, n: int = 6) -> None:
    """Show the first ``n`` test images titled with their true and predicted labels (d2l-zh 3.6.7)."""
    X, y = next(iter(test_iter))
    with torch.no_grad():
        preds = net(X).argmax(dim=1)
    trues, preds = get_fashion_mnist_labels(y), get_fashion_mnist_labels(preds)
    titles = [true + "\n" + pred for true, pred in zip(trues, preds, strict=True)]
    show_images(X[0:n].reshape(n, *X.shape[-2:]).cpu(), 1, n, titles=titles[0:n])


def _xavier(m: nn.Module) -> None:
    if type(m) == nn.Linear or type(m) == nn.Conv2d:  # noqa: E721  the book's exact-type test: no subclasses
        nn.init.xavier_uniform_(m.weight)


def train_ch6(net: nn.Module, train_iter: Iterable, test_iter: Iterable, num_epochs: int, lr: float,
              device: str | torch.device) -> None:
    """Train a classifier on ``device`` with SGD at ``lr`` and cross-entropy (d2l-zh 6.6.2, d2l 1.0.3's utils).

    As the book's: Xavier-uniform init of every ``nn.Linear``/``nn.Conv2d`` first, ``training on <device>``, an
    Animator with 5 training points and one test point per epoch, and the final ``loss ..., train acc ..., test
    acc ...`` and ``... examples/sec on <device>`` lines. ``examples/sec`` counts the training passes only (the
    book times each step; here each epoch's training pass as a whole, ended by reading its last figures).
    """
    net.apply(_xavier)
    print("training on", device)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    animator = Animator(xlabel="epoch", xlim=[1, num_epochs], legend=["train loss", "train acc", "test acc"])
    dev = torch.device(device)
    train_iter, test_iter = on_device(train_iter, dev), on_device(test_iter, dev)
    timer, num_batches = Timer(), len(train_iter)
    if num_batches == 0:
        raise CnnlabError("train_iter is empty: expected at least one batch, got 0")
    # The book's `(i + 1) % (num_batches // 5)` divides by zero below 5 batches; a point every batch there.
    every = max(1, num_batches // 5)
    train_l = train_acc = test_acc = float("nan")
    count = 0
    channels_last = None  # decided at the first step (a lazy net's: at its second)
    try:
        for epoch in range(num_epochs):
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.int64)
            count = 0
            net.train()
            timer.start()
            for i, (X, y) in enumerate(train_iter):
                optimizer.zero_grad()
                X, y = X.to(dev), y.to(dev)
                if channels_last is None:
                    channels_last = channels_last_checked(net, dev, [X])
                y_hat = net(X)
                l = loss(y_hat, y)
                l.backward()
                optimizer.step()
                with torch.no_grad():
                    loss_sum += l.detach() * X.shape[0]
                    correct += _correct(y_hat, y)
                count += X.shape[0]
                if (i + 1) % every == 0 or i == num_batches - 1:
                    train_l, train_acc = (loss_sum / count).item(), correct.item() / count  # the only reads
                    animator.add(epoch + (i + 1) / num_batches, (train_l, train_acc, None))
            timer.stop()
            test_acc = evaluate_accuracy_gpu(net, test_iter, dev)
            animator.add(epoch + 1, (None, None, test_acc))
    finally:  # the net goes back as the user built it, also when training is interrupted
        if channels_last:
            to_contiguous(net)
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
    # As the book: the last epoch's example count times the epochs, over the training time.
    print(f"{count * num_epochs / timer.sum():.1f} examples/sec on {str(device)}")


def split_batch(X: torch.Tensor, y: torch.Tensor, devices: Sequence[torch.device]) -> tuple[tuple, tuple]:
    """Split ``X`` and ``y`` into one part per device, each part on its device (d2l 13.5).

    d2l's ``nn.parallel.scatter`` works on CUDA devices only; with any other device in the list the parts are
    ``torch.tensor_split`` moved one by one, so the chapter's cells also run on a CPU or a Mac.
    """
    if X.shape[0] != y.shape[0]:
        raise CnnlabError(f"X and y must have the same number of examples, got {X.shape[0]} and {y.shape[0]}")
    devices = [torch.device(d) for d in devices]
    if all(d.type == "cuda" for d in devices):
        return nn.parallel.scatter(X, devices), nn.parallel.scatter(y, devices)
    parts = len(devices)
    return (tuple(p.to(d) for p, d in zip(torch.tensor_split(X, parts), devices, strict=True)),
            tuple(p.to(d) for p, d in zip(torch.tensor_split(y, parts), devices, strict=True)))


def train_batch_ch13(net: nn.Module, X: Any, y: torch.Tensor, loss: Callable, trainer: torch.optim.Optimizer,
                     devices: Sequence[torch.device]) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on a batch (``loss`` unreduced); returns the summed loss and the number right, as device
    tensors (d2l 14.1; the book returns the count as a float, a host sync per step)."""
    X, y = _to(X, devices[0]), y.to(devices[0])
    net.train()
    trainer.zero_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    return l.detach().sum(), _correct(pred.detach(), y)


def train_ch13(net: nn.Module, train_iter: Iterable, test_iter: Iterable, loss: Callable,
               trainer: torch.optim.Optimizer, num_epochs: int,
               devices: Sequence[torch.device] | None = None) -> None:
    """Train with ``nn.DataParallel`` over ``devices`` (default: every GPU, else the CPU), as d2l 14.1 does."""
    devices = list(devices) if devices is not None else try_all_gpus()
    timer, num_batches = Timer(), len(train_iter)
    if num_batches == 0:
        raise CnnlabError("train_iter is empty: expected at least one batch, got 0")
    every = max(1, num_batches // 5)
    animator = Animator(xlabel="epoch", xlim=[1, num_epochs], ylim=[0, 1],
                        legend=["train loss", "train acc", "test acc"])
    net = nn.DataParallel(net, device_ids=devices).to(devices[0])
    train_l = train_acc = test_acc = float("nan")
    count = 0
    for epoch in range(num_epochs):
        loss_sum, correct, count, predictions = 0, 0, 0, 0
        timer.start()
        for i, (features, labels) in enumerate(train_iter):
            l, acc = train_batch_ch13(net, features, labels, loss, trainer, devices)
            loss_sum, correct = loss_sum + l, correct + acc
            count, predictions = count + labels.shape[0], predictions + labels.numel()
            if (i + 1) % every == 0 or i == num_batches - 1:
                train_l, train_acc = float(loss_sum) / count, float(correct) / predictions
                animator.add(epoch + (i + 1) / num_batches, (train_l, train_acc, None))
        timer.stop()
        test_acc = evaluate_accuracy_gpu(net, test_iter, devices[0])
        animator.add(epoch + 1, (None, None, test_acc))
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
    print(f"{count * num_epochs / timer.sum():.1f} examples/sec on {str(devices)}")
