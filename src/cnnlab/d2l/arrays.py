"""Minibatches of in-memory tensors: ``load_array`` (d2l 3.3.2) and ``DataModule.get_tensorloader`` (d2l 3.3.3).

The book wraps the tensors in ``TensorDataset`` + ``DataLoader``, which indexes and collates one example at a time;
for the small synthetic sets of chapters 3-5 that bookkeeping costs more than the model. ``TensorLoader`` yields
the same batches (lists of tensors, in order or in a fresh permutation drawn from torch's global generator on
every pass, the last batch possibly smaller) by slicing the tensors whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils import data as torch_data

from cnnlab.checks import positive_int
from cnnlab.errors import CnnlabError

__all__ = ["TensorLoader", "load_array"]


class TensorLoader:
    """Batches of ``tensors`` (all the same length), as ``DataLoader(TensorDataset(*tensors), batch_size, shuffle)``.

    Attributes:
        dataset: the ``TensorDataset`` (``len(loader.dataset)`` is the number of examples, as with a DataLoader).
        batch_size, shuffle: as given.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False):
        positive_int(batch_size, "batch_size")
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise CnnlabError(f"expected one or more tensors, got {[type(t).__name__ for t in tensors]}")
        if len({len(t) for t in tensors}) != 1:
            raise CnnlabError(f"the tensors must have the same first dimension, got {[len(t) for t in tensors]}")
        self.dataset = torch_data.TensorDataset(*tensors)
        self.batch_size, self.shuffle = batch_size, bool(shuffle)

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        tensors, n = self.dataset.tensors, len(self.dataset)
        order = torch.randperm(n) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:  # a copy, as collating makes one: changing a batch leaves the data alone
                yield [t[start:start + self.batch_size].clone() for t in tensors]
            else:
                idx = order[start:start + self.batch_size]
                yield [t[idx.to(t.device)] for t in tensors]


def load_array(data_arrays: Sequence[torch.Tensor], batch_size: int, is_train: bool = True) -> TensorLoader:
    """Minibatches over ``data_arrays`` (e.g. ``(features, labels)``), shuffled when ``is_train``."""
    return TensorLoader(tuple(data_arrays), batch_size, shuffle=is_train)
