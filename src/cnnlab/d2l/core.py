"""The book's object-oriented design (d2l 3.2): ``add_to_class``, ``Module``, ``Classifier``, and
``HyperParameters`` (from ``hyperparameters``, which ``board`` derives from too).

Names, signatures and results follow d2l 1.0.3 so that book code runs unchanged. What differs is speed: a
``Module`` hands the loss and accuracy to its board as device tensors (``Tensor.detach()``), so a training step
never waits for the device; d2l converts every value to numpy, a host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.d2l.board import ProgressBoard
from cnnlab.d2l.hyperparameters import HyperParameters
from cnnlab.errors import CnnlabError

__all__ = ["add_to_class", "HyperParameters", "Module", "Classifier"]


def add_to_class(Class: type) -> Callable[[Callable], None]:
    """Decorator that sets the decorated function as a method of ``Class`` (d2l 3.2.1).

    Like the book's, it returns None, so the module-level name of the function is not bound.

    Example:
        >>> class A: pass
        >>> @add_to_class(A)
        ... def twice(self, x): return 2 * x
        >>> A().twice(3)
        6
    """

    def wrapper(obj: Callable) -> None:
        setattr(Class, obj.__name__, obj)

    return wrapper


class Module(nn.Module, HyperParameters):
    """Base class of the book's models: a network ``self.net``, a loss, an optimizer and a progress board.

    Args:
        plot_train_per_epoch: points per epoch on the training-loss curve (each the mean of its batches).
        plot_valid_per_epoch: points per epoch on the validation curves.
    """

    def __init__(self, plot_train_per_epoch: int = 2, plot_valid_per_epoch: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.board = ProgressBoard()

    def loss(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "net"):
            raise CnnlabError(f"{type(self).__name__} has no self.net: set it in __init__ or override forward")
        return self.net(X)

    def plot(self, key: str, value: torch.Tensor | float, train: bool) -> None:
        """Send one value to the board, at an x position in epochs computed from the trainer's counters.

        The value stays a device tensor; the board averages ``every_n`` of them per point and reads them back
        only when it draws.
        """
        if not hasattr(self, "trainer"):
            raise CnnlabError(f"{type(self).__name__}.plot needs a trainer: call d2l.Trainer(...).fit(model, data)")
        trainer = self.trainer
        self.board.xlabel = "epoch"
        if train:
            x = trainer.train_batch_idx / trainer.num_train_batches
            n = trainer.num_train_batches / self.plot_train_per_epoch
        else:
            x = trainer.epoch + 1
            n = trainer.num_val_batches / self.plot_valid_per_epoch
        if isinstance(value, torch.Tensor):
            value = value.detach()
        # d2l passes int(n), which is 0 when an epoch has fewer batches than points, and then never plots.
        self.board.draw(x, value, ("train_" if train else "val_") + key, every_n=max(1, int(n)))

    def training_step(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        loss = self.loss(self(*batch[:-1]), batch[-1])
        self.plot("loss", loss, train=True)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor]) -> None:
        loss = self.loss(self(*batch[:-1]), batch[-1])
        self.plot("loss", loss, train=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain minibatch SGD at ``self.lr`` (d2l 4.3)."""
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def apply_init(self, inputs: Sequence[torch.Tensor], init: Callable[[nn.Module], None] | None = None) -> None:
        """Run ``inputs`` through the model once so Lazy layers learn their shapes, then ``self.net.apply(init)``.

        This is how the book initialises Lazy models (d2l 6.4): ``init`` sees materialised ``Conv2d``/``Linear``
        layers only after the dry run. Inputs are moved to the device the model's parameters are on.
        """
        device = next((p.device for p in self.parameters()), None)
        if device is not None:
            inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
        self.forward(*inputs)
        if init is not None:
            self.net.apply(init)


class Classifier(Module):
    """Base class of classification models: cross-entropy loss, accuracy, and validation curves (d2l 4.3)."""

    def validation_step(self, batch: Sequence[torch.Tensor]) -> None:
        Y_hat = self(*batch[:-1])
        self.plot("loss", self.loss(Y_hat, batch[-1]), train=False)
        self.plot("acc", self.accuracy(Y_hat, batch[-1]), train=False)

    def accuracy(self, Y_hat: torch.Tensor, Y: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        """Fraction of rows whose arg-max equals the label (or the float 0/1 per row when not ``averaged``)."""
        Y_hat = Y_hat.reshape(-1, Y_hat.shape[-1])
        preds = Y_hat.argmax(dim=1).type(Y.dtype)
        compare = (preds == Y.reshape(-1)).type(torch.float32)
        return compare.mean() if averaged else compare

    def loss(self, Y_hat: torch.Tensor, Y: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        """Softmax cross-entropy from logits, the mean over rows or one value per row (d2l 4.5)."""
        Y_hat = Y_hat.reshape(-1, Y_hat.shape[-1])
        Y = Y.reshape(-1)
        return F.cross_entropy(Y_hat, Y, reduction="mean" if averaged else "none")

    def layer_summary(self, X_shape: Sequence[int]) -> None:
        """Print the output shape of each top-level layer of ``self.net`` for a random input (d2l 7.6).

        Running it materialises Lazy layers, like any forward pass.
        """
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        X = torch.randn(*X_shape, device=device)
        for layer in self.net:
            X = layer(X)
            print(layer.__class__.__name__, "output shape:\t", X.shape)
