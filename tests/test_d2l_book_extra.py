"""The ``[book]`` extra: what the book's own cells import besides the d2l package, and a cell that needs it.

The real d2l package pulls IPython, pandas and requests in through its jupyter dependency; cnnlab does not need them
itself, so ``pip install "cnnlab[book]"`` brings them for cells that import them directly: IPython's display (the
2nd edition's softmax-regression-scratch and its Animator), pandas (data preprocessing, the Kaggle house prices),
requests (the download helpers' cells), SciPy (the 1st edition's statistics and Gaussian-process cells).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from d2l_support import needs_real_data, run_cells

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The import name of each distribution the extra lists.
IMPORT_NAME = {"ipython": "IPython", "pandas": "pandas", "requests": "requests", "scipy": "scipy"}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def book_extra() -> list[str]:
    """The distribution names of pyproject.toml's ``book`` extra."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return [re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0].lower() for name in extras["book"]]


def test_the_book_extra_brings_what_the_books_cells_import():
    names = book_extra()
    assert sorted(names) == sorted(IMPORT_NAME)  # a new entry needs its import name here, and a reason above
    for name in names:
        importlib.import_module(IMPORT_NAME[name])


@needs_real_data
def test_the_2nd_editions_softmax_regression_scratch_runs_with_ipythons_display(capsys):
    """d2l-zh's chapter_linear-networks/softmax-regression-scratch, its PyTorch cells as written (the import line
    of d2l changed to cnnlab's), including its own Animator on IPython.display and its own training asserts."""
    ns = run_cells(["""
from cnnlab import d2l
import torch
from IPython import display
""", """
batch_size = 256
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size)
""", """
num_inputs = 784
num_outputs = 10

W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
b = torch.zeros(num_outputs, requires_grad=True)
""", """
def softmax(X):
    X_exp = d2l.exp(X)
    partition = d2l.reduce_sum(X_exp, 1, keepdim=True)
    return X_exp / partition
""", """
def net(X):
    return softmax(d2l.matmul(d2l.reshape(X, (-1, W.shape[0])), W) + b)
""", """
def cross_entropy(y_hat, y):
    return - d2l.log(y_hat[range(len(y_hat)), y])
""", """
def accuracy(y_hat, y):
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = d2l.argmax(y_hat, axis=1)
    cmp = d2l.astype(y_hat, y.dtype) == y
    return float(d2l.reduce_sum(d2l.astype(cmp, y.dtype)))
""", """
def evaluate_accuracy(net, data_iter):
    if isinstance(net, torch.nn.Module):
        net.eval()
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), d2l.size(y))
    return metric[0] / metric[1]
""", """
class Accumulator:
    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]
""", """
def train_epoch_ch3(net, train_iter, loss, updater):
    if isinstance(net, torch.nn.Module):
        net.train()
    metric = Accumulator(3)
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
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]
""", """
class Animator:
    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None,
                 ylim=None, xscale='linear', yscale='linear',
                 fmts=('-', 'm--', 'g-.', 'r:'), nrows=1, ncols=1,
                 figsize=(3.5, 2.5)):
        if legend is None:
            legend = []
        d2l.use_svg_display()
        self.fig, self.axes = d2l.plt.subplots(nrows, ncols, figsize=figsize)
        if nrows * ncols == 1:
            self.axes = [self.axes, ]
        self.config_axes = lambda: d2l.set_axes(
            self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.X, self.Y, self.fmts = None, None, fmts

    def add(self, x, y):
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        self.axes[0].cla()
        for x, y, fmt in zip(self.X, self.Y, self.fmts):
            self.axes[0].plot(x, y, fmt)
        self.config_axes()
        display.display(self.fig)
        display.clear_output(wait=True)
""", """
def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater):
    animator = Animator(xlabel='epoch', xlim=[1, num_epochs], ylim=[0.3, 0.9],
                        legend=['train loss', 'train acc', 'test acc'])
    for epoch in range(num_epochs):
        train_metrics = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        animator.add(epoch + 1, train_metrics + (test_acc,))
    train_loss, train_acc = train_metrics
    assert train_loss < 0.5, train_loss
    assert train_acc <= 1 and train_acc > 0.7, train_acc
    assert test_acc <= 1 and test_acc > 0.7, test_acc
""", """
lr = 0.1

def updater(batch_size):
    return d2l.sgd([W, b], lr, batch_size)
""", """
num_epochs = 10
train_ch3(net, train_iter, test_iter, cross_entropy, num_epochs, updater)
"""])
    # IPython's display outside a notebook prints each figure's repr: one per epoch (the book's cell passed its
    # own training asserts to get here)
    assert capsys.readouterr().out.count("Figure(350x250)") == 10
    assert 0.7 < ns["evaluate_accuracy"](ns["net"], ns["test_iter"]) <= 1
