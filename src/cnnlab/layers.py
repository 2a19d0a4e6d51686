"""nn.Module wrappers over :mod:`cnnlab.ops`: drop-in twins of torch.nn's conv, pooling and batch-norm layers.

(Work in progress: the scratch classes land with the ops.)
"""

from __future__ import annotations

from types import SimpleNamespace

from torch import nn


def layer_set(ops: str = "torch") -> SimpleNamespace:
    """The layer classes a model builder uses: torch.nn's (``"torch"``) or cnnlab's own (``"scratch"``).

    Both sets take the same constructor arguments and produce the same state_dict keys, so a model built on
    one loads the other's weights.
    """
    if ops == "torch":
        return SimpleNamespace(
            Conv2d=nn.Conv2d, MaxPool2d=nn.MaxPool2d, AvgPool2d=nn.AvgPool2d,
            BatchNorm2d=nn.BatchNorm2d, BatchNorm1d=nn.BatchNorm1d,
        )
    if ops == "scratch":
        return SimpleNamespace(
            Conv2d=Conv2d, MaxPool2d=MaxPool2d, AvgPool2d=AvgPool2d,  # noqa: F821  (defined by the ops issue)
            BatchNorm2d=BatchNorm2d, BatchNorm1d=BatchNorm1d,  # noqa: F821
        )
    raise ValueError(f"ops must be 'torch' or 'scratch', got {ops!r}")
