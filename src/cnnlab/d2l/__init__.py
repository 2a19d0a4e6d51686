"""The book-compatible face: ``from cnnlab import d2l`` in place of ``from d2l import torch as d2l``.

The chapter 7-8 code of *Dive into Deep Learning* runs unchanged against this namespace. It offers the names the
d2l 1.0.3 package defines for these chapters, built on cnnlab's own pieces: the data come from ``cnnlab.data``
(offline, device-resident), ``corr2d`` and ``init_cnn`` from ``cnnlab.ops`` and ``cnnlab.models``.

Layout: ``core`` (HyperParameters, Module, Classifier), ``board`` (ProgressBoard), ``data`` (DataModule,
FashionMNIST), ``trainer`` (Trainer), ``models`` (LeNet, Residual, ResNeXtBlock, init_cnn), ``devices`` (cpu,
gpu, ...), ``tensors`` (the framework-neutral aliases: tensor, reshape, reduce_sum, ...).
"""

from typing import Any

from cnnlab.d2l.board import ProgressBoard
from cnnlab.d2l.core import Classifier, HyperParameters, Module, add_to_class
from cnnlab.d2l.data import DataModule, FashionMNIST, show_images
from cnnlab.d2l.devices import cpu, gpu, num_gpus, try_all_gpus, try_gpu
from cnnlab.d2l.models import LeNet, Residual, ResNeXtBlock, init_cnn
from cnnlab.d2l.tensors import *  # noqa: F403  the aliases are the point of this namespace
from cnnlab.d2l.tensors import __all__ as _tensor_names
from cnnlab.d2l.trainer import Trainer
from cnnlab.ops import corr2d

__all__ = [
    "HyperParameters", "add_to_class", "ProgressBoard", "Module", "Classifier", "DataModule", "FashionMNIST",
    "show_images", "Trainer", "LeNet", "Residual", "ResNeXtBlock", "init_cnn", "corr2d", "cpu", "gpu",
    "num_gpus", "try_gpu", "try_all_gpus", "plt", *_tensor_names,  # noqa: F405  plt comes from __getattr__
]


def __getattr__(name: str) -> Any:
    # d2l.plt is matplotlib.pyplot; imported on first use so `from cnnlab import d2l` does not pick a backend.
    if name == "plt":
        from matplotlib import pyplot

        return pyplot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
