"""The book-compatible face: ``from cnnlab import d2l`` in place of ``from d2l import torch as d2l``.

The PyTorch code of *Dive into Deep Learning* chapters 3-8 runs unchanged against this namespace, in both of the
book's APIs: the object-style one of the English edition (d2l 1.0.3: ``Module``, ``Trainer``, ``FashionMNIST``,
...) and the function-style one of the Chinese edition, d2l-zh v2 (``load_data_fashion_mnist``, ``train_ch6``,
``Animator``, ...), which d2l 1.0.3 still ships. Both are built on cnnlab's own pieces: the data come from
``cnnlab.data`` (offline, device-resident), ``corr2d`` and ``init_cnn`` from ``cnnlab.ops`` and ``cnnlab.models``.
docs/d2l.md lists every name and every deliberate difference from the book's library.

Layout: ``hyperparameters`` (HyperParameters), ``core`` (Module, Classifier), ``board`` (ProgressBoard),
``data`` (DataModule, FashionMNIST, load_data_fashion_mnist), ``arrays`` (tensor loaders), ``trainer`` (Trainer),
``regression`` (chapters 3-4's models and data), ``scratch`` (the function-style linear regression), ``loops``
(train_ch3, train_ch6, train_ch13, evaluation), ``animator``, ``utils`` (Timer, Accumulator, Benchmark), ``plotting``,
``download``, ``models`` (LeNet, Residual, ResNeXtBlock, resnet18, init_cnn), ``devices``, ``tensors`` (the
framework-neutral aliases: tensor, reshape, reduce_sum, ...).
"""

from typing import Any

from cnnlab.d2l.animator import Animator
from cnnlab.d2l.arrays import load_array
from cnnlab.d2l.board import ProgressBoard
from cnnlab.d2l.core import Classifier, HyperParameters, Module, add_to_class
from cnnlab.d2l.data import (
    DataModule,
    FashionMNIST,
    get_dataloader_workers,
    get_fashion_mnist_labels,
    load_data_fashion_mnist,
    show_images,
)
from cnnlab.d2l.devices import cpu, gpu, num_gpus, try_all_gpus, try_gpu
from cnnlab.d2l.download import DATA_HUB, DATA_URL, download, download_extract, extract
from cnnlab.d2l.loops import (
    accuracy,
    evaluate_accuracy,
    evaluate_accuracy_gpu,
    evaluate_loss,
    predict_ch3,
    split_batch,
    train_batch_ch13,
    train_ch3,
    train_ch6,
    train_ch13,
    train_epoch_ch3,
)
from cnnlab.d2l.models import LeNet, Residual, ResNeXtBlock, init_cnn, resnet18
from cnnlab.d2l.plotting import plot, set_axes, set_figsize, use_svg_display
from cnnlab.d2l.regression import (
    SGD,
    LinearRegression,
    LinearRegressionScratch,
    SoftmaxRegression,
    SyntheticRegressionData,
)
from cnnlab.d2l.scratch import linreg, sgd, squared_loss, synthetic_data
from cnnlab.d2l.tensors import *  # noqa: F403  the aliases are the point of this namespace
from cnnlab.d2l.tensors import __all__ as _tensor_names
from cnnlab.d2l.trainer import Trainer
from cnnlab.d2l.utils import Accumulator, Benchmark, Timer
from cnnlab.ops import corr2d

__all__ = [
    # the object-style API (d2l 1.0.3)
    "HyperParameters", "add_to_class", "ProgressBoard", "Module", "Classifier", "DataModule", "FashionMNIST",
    "Trainer", "SyntheticRegressionData", "LinearRegressionScratch", "SGD", "LinearRegression", "SoftmaxRegression",
    "LeNet", "Residual", "ResNeXtBlock", "init_cnn",
    # the function-style API (d2l-zh v2, kept in d2l 1.0.3)
    "load_data_fashion_mnist", "get_dataloader_workers", "get_fashion_mnist_labels", "load_array",
    "synthetic_data", "linreg", "squared_loss", "sgd", "accuracy", "evaluate_accuracy", "evaluate_accuracy_gpu",
    "evaluate_loss", "train_epoch_ch3", "train_ch3", "predict_ch3", "train_ch6", "split_batch", "train_batch_ch13",
    "train_ch13", "resnet18", "Animator", "Accumulator", "Timer", "Benchmark",
    # both
    "show_images", "plot", "set_axes", "set_figsize", "use_svg_display", "corr2d", "cpu", "gpu", "num_gpus",
    "try_gpu", "try_all_gpus", "DATA_HUB", "DATA_URL", "download", "extract", "download_extract",
    "plt",  # noqa: F405  plt comes from __getattr__
    *_tensor_names,
]


def __getattr__(name: str) -> Any:
    # d2l.plt is matplotlib.pyplot; imported on first use so `from cnnlab import d2l` does not pick a backend.
    if name == "plt":
        from matplotlib import pyplot

        return pyplot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
