"""Linear regression from scratch, the function-style API (d2l 3.2 / d2l-zh 3.2): data, model, loss, optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["synthetic_data", "linreg", "squared_loss", "sgd"]


def synthetic_data(w: torch.Tensor, b: float, num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_examples`` rows ``X ~ N(0, 1)`` and labels ``y = Xw + b + N(0, 0.01^2)`` shaped ``(num_examples, 1)``.

    Example:
        >>> X, y = synthetic_data(torch.tensor([2, -3.4]), 4.2, 5)
        >>> X.shape, y.shape
        (torch.Size([5, 2]), torch.Size([5, 1]))
    """
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape(-1, 1)


def linreg(X: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The linear model ``Xw + b``."""
    return torch.matmul(X, w) + b


def squared_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half the squared error per example (not averaged), with ``y`` reshaped like ``y_hat``."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params: Iterable[torch.Tensor], lr: float, batch_size: int) -> None:
    """One step of minibatch SGD on summed-loss gradients (divided by ``batch_size``), then zero the gradients."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()
