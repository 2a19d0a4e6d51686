"""The object-style models and data of chapters 3-4 (d2l 3.3-3.5, 4.5): synthetic regression data, linear
regression from scratch and concise, the from-scratch ``SGD``, and concise softmax regression.

The code follows d2l 1.0.3 so that the chapters' ``add_to_class`` cells and subclasses (``WeightDecayScratch``,
``WeightDecay``) behave as printed; the loaders are :class:`cnnlab.d2l.arrays.TensorLoader`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.d2l.core import Classifier, HyperParameters, Module
from cnnlab.d2l.data import DataModule

__all__ = ["SyntheticRegressionData", "LinearRegressionScratch", "SGD", "LinearRegression", "SoftmaxRegression"]


class SyntheticRegressionData(DataModule):
    """``y = Xw + b + noise`` with ``X ~ N(0, 1)``: ``num_train`` training rows, then ``num_val`` validation rows.

    Attributes:
        X: features ``(num_train + num_val) x len(w)``.
        y: labels ``(num_train + num_val) x 1``.
    """

    def __init__(self, w: torch.Tensor, b: float, noise: float = 0.01, num_train: int = 1000, num_val: int = 1000,
                 batch_size: int = 32):
        super().__init__()
        self.save_hyperparameters()
        n = num_train + num_val
        self.X = torch.randn(n, len(w))
        noise = torch.randn(n, 1) * noise
        self.y = torch.matmul(self.X, w.reshape(-1, 1)) + b + noise

    def get_dataloader(self, train: bool):
        i = slice(0, self.num_train) if train else slice(self.num_train, None)
        return self.get_tensorloader((self.X, self.y), train, i)


class SGD(HyperParameters):
    """Minibatch stochastic gradient descent on a list of tensors (d2l 3.4.3): ``param -= lr * param.grad``."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float):
        self.save_hyperparameters()

    def step(self) -> None:
        # no_grad here, not only in the trainer: an in-place update of a leaf that requires grad must not be
        # recorded, and cnnlab's Trainer does not wrap the step as d2l 3.4.4's fit_epoch does.
        with torch.no_grad():
            for param in self.params:
                param -= self.lr * param.grad

    def zero_grad(self) -> None:
        for param in self.params:
            if param.grad is not None:
                param.grad.zero_()


class LinearRegressionScratch(Module):
    """``Xw + b`` with ``w ~ N(0, sigma^2)`` and ``b = 0`` as plain tensors, half squared loss, the scratch SGD."""

    def __init__(self, num_inputs: int, lr: float, sigma: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.w = torch.normal(0, sigma, (num_inputs, 1), requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.matmul(X, self.w) + self.b

    def loss(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((y_hat - y) ** 2 / 2).mean()

    def configure_optimizers(self) -> SGD:
        return SGD([self.w, self.b], self.lr)


class LinearRegression(Module):
    """One ``nn.LazyLinear(1)``, mean squared error and ``torch.optim.SGD`` (d2l 3.5)."""

    def __init__(self, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.LazyLinear(1)
        # As d2l 1.0.3. On a Lazy layer these two calls change nothing: the first forward pass materialises the
        # weights with nn.Linear's default init, so the book's runs start from that, and so do these.
        self.net.weight.data.normal_(0, 0.01)
        self.net.bias.data.fill_(0)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def loss(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(y_hat, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), self.lr)

    def get_w_b(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned weight and bias tensors."""
        return self.net.weight.data, self.net.bias.data


class SoftmaxRegression(Classifier):
    """``Flatten`` + ``nn.LazyLinear(num_outputs)`` with the Classifier's cross-entropy (d2l 4.5)."""

    def __init__(self, num_outputs: int, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_outputs))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)
