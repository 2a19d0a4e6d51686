"""The book's ``Trainer`` (d2l 3.4, 6.7, 9.5): one loop over ``model.training_step`` and ``validation_step``.

Same structure, names and counters as d2l 1.0.3, so code that subclasses it or reads ``trainer.epoch`` keeps
working. What differs: no per-step host sync (the board keeps losses on the device and reads them back once per
epoch), one printed line per epoch outside a notebook (the board's ``refresh``, called by ``fit`` after each
``fit_epoch``, also one the book redefines), validation and the optimizer step under ``torch.no_grad()``,
``num_gpus`` also counting MPS, Lightning's ``limit_train_batches``/``limit_val_batches`` for short runs, and conv
weights held channels-last while ``fit`` runs on a CPU or CUDA device (oneDNN's and cuDNN's fast layout,
docs/benchmarks.md), handed back in the default layout when it returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from cnnlab.checks import int_at_least, positive_int
from cnnlab.d2l import devices
from cnnlab.d2l.core import HyperParameters, Module
from cnnlab.d2l.layout import channels_last_checked, to_contiguous
from cnnlab.errors import CnnlabError

__all__ = ["Trainer"]


class Trainer(HyperParameters):
    """Fits a ``d2l.Module`` to a ``d2l.DataModule`` with the optimizer the model configures.

    Args:
        max_epochs: passes over the training data.
        num_gpus: GPUs to use; only the first is used (as in d2l), and with none available training runs on
            the CPU.
        gradient_clip_val: when positive, rescale gradients whose global L2 norm exceeds it (d2l 9.5.3).
        limit_train_batches: train on at most this many batches per epoch (Lightning's name; None: all).
        limit_val_batches: validate on at most this many batches per epoch (None: all).

    Example:
        >>> trainer = Trainer(max_epochs=1, limit_train_batches=2)  # doctest: +SKIP
        >>> trainer.fit(LeNet(), FashionMNIST(batch_size=128))  # doctest: +SKIP
    """

    def __init__(self, max_epochs: int, num_gpus: int = 0, gradient_clip_val: float = 0, *,
                 limit_train_batches: int | None = None, limit_val_batches: int | None = None):
        self.save_hyperparameters()
        int_at_least(max_epochs, "max_epochs", 0)
        int_at_least(num_gpus, "num_gpus", 0)
        for name, limit in (("limit_train_batches", limit_train_batches), ("limit_val_batches", limit_val_batches)):
            if limit is not None:  # None: every batch, as the book's Trainer does
                positive_int(limit, name)
        self.gpus = [devices.gpu(i) for i in range(min(num_gpus, devices.num_gpus()))]

    @property
    def device(self) -> torch.device:
        """Where the model and batches go: the first GPU in use, else the CPU."""
        return self.gpus[0] if self.gpus else devices.cpu()

    def prepare_data(self, data) -> None:
        """Get the loaders and count the batches an epoch will use (after the limits)."""
        if self.gpus and hasattr(data, "to"):
            data.to(self.gpus[0])  # lets FashionMNIST keep its images on the GPU and resize there
        self.train_dataloader = data.train_dataloader()
        self.val_dataloader = data.val_dataloader()
        # getattr: the book's own Trainer.__init__ (d2l 6.7, set with add_to_class) knows no limits.
        self.num_train_batches = self._count(self.train_dataloader, getattr(self, "limit_train_batches", None))
        self.num_val_batches = (self._count(self.val_dataloader, getattr(self, "limit_val_batches", None))
                                if self.val_dataloader is not None else 0)
        if self.num_train_batches == 0:
            raise CnnlabError("the training dataloader is empty: expected at least one batch, got 0")

    @staticmethod
    def _count(loader: Iterable, limit: int | None) -> int:
        n = len(loader)
        return n if limit is None else min(n, limit)

    def prepare_model(self, model: Module) -> None:
        model.trainer = self
        model.board.xlim = [0, self.max_epochs]
        if self.gpus:
            model.to(self.gpus[0])
        self.model = model

    def fit(self, model: Module, data) -> None:
        """Train ``model`` on ``data.train_dataloader()`` for ``max_epochs``, validating after each epoch."""
        self.prepare_data(data)
        self.prepare_model(model)
        self.optim = model.configure_optimizers()
        self.epoch = 0
        self.train_batch_idx = 0
        self.val_batch_idx = 0
        self._channels_last = None  # decided at the first training step (a lazy model's: at its second)
        try:
            for epoch in range(self.max_epochs):
                self.epoch = epoch
                self.fit_epoch()
                # Here, not in fit_epoch: the book replaces fit_epoch (d2l 3.4.4) and still gets its epoch line.
                board = getattr(model, "board", None)
                if hasattr(board, "refresh"):
                    board.refresh()
        finally:  # the user's model comes back in the layout it had, even when fit is interrupted
            if self._channels_last:
                to_contiguous(model)

    def prepare_batch(self, batch: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Move the batch to the device in use (a no-op for tensors already there)."""
        if self.gpus:
            batch = [a.to(self.gpus[0], non_blocking=True) for a in batch]
        return batch

    def fit_epoch(self) -> None:
        """One pass of training steps, then one of validation steps (``fit`` then refreshes the board)."""
        self.model.train()
        for batch in itertools.islice(self.train_dataloader, self.num_train_batches):
            batch = self.prepare_batch(batch)
            if self._channels_last is None:  # the model's arguments: all but the labels (d2l's training_step)
                self._channels_last = channels_last_checked(self.model, self.device, batch[:-1])
            loss = self.model.training_step(batch)
            self.optim.zero_grad()
            loss.backward()
            with torch.no_grad():  # as d2l 3.4.4: the book's own optimizers update their tensors in place
                if self.gradient_clip_val > 0:
                    self.clip_gradients(self.gradient_clip_val, self.model)
                self.optim.step()
            self.train_batch_idx += 1
        if self.val_dataloader is not None:
            self.model.eval()
            with torch.no_grad():
                for batch in itertools.islice(self.val_dataloader, self.num_val_batches):
                    self.model.validation_step(self.prepare_batch(batch))
                    self.val_batch_idx += 1

    def clip_gradients(self, grad_clip_val: float, model: nn.Module) -> None:
        """Scale all gradients by ``grad_clip_val / norm`` when their global L2 norm exceeds it (d2l 9.5.3).

        Computed on the device without reading the norm back (d2l's ``if norm > grad_clip_val`` syncs).
        """
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        # where, not clamp: a NaN norm compares False and leaves the gradients alone, as d2l's `if` does.
        scale = torch.where(norm > grad_clip_val, grad_clip_val / norm, torch.ones_like(norm))
        for g in grads:
            g.mul_(scale)
