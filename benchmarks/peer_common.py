"""What the peer programs share (peer_lightning.py, peer_fastai.py, peer_keras.py): their flags, the book's LeNet and
BN-LeNet in plain torch, the book's Xavier init, and a clock of the fit's epoch ends.

They run in the peers' virtualenv (benchmarks/setup_peers_venv.sh), where cnnlab is not installed, so this file
uses the standard library and torch only, like bench_common.py. Two recipes:

* ``book``: the book's LeNet recipe (d2l 7.6): sigmoid LeNet, Xavier init, SGD lr 0.1, batch 128, [0, 1] pixels,
  no normalisation, a validation pass over the test set after every epoch; what ``cnnlab train lenet --recipe
  book`` runs.
* ``best``: the peer's own best documented recipe for a small CNN, on the network the ``fast`` recipe trains
  (BN-LeNet with ReLU and max pooling, d2l 8.5, cnnlab's ``lenet-bn-relu``), for as many epochs as the driver
  gives it (``bench.py --only peers`` fits them to the wall time of cnnlab's ``fast`` run).
"""

from __future__ import annotations

import argparse
import time

from torch import nn

from bench_common import add_common_args

RECIPES = ("book", "best")


def add_peer_args(parser: argparse.ArgumentParser) -> None:
    """bench_common's flags and ``--recipe``."""
    add_common_args(parser)
    parser.add_argument("--recipe", choices=RECIPES, default="book",
                        help="book: the book's LeNet recipe; best: the peer's own documented recipe on BN-LeNet")


def lenet(recipe: str) -> nn.Sequential:
    """The book's LeNet (d2l 7.6.1) for ``book``; BN-LeNet with ReLU and max pooling (d2l 8.5.4 with the 7.6
    exercise's changes, cnnlab's ``lenet-bn-relu``) for ``best``. Explicit channels instead of the book's Lazy
    layers, so that the weights exist before the init and the optimizer see them."""
    if recipe == "book":
        return nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),  # N x 16 x 5 x 5
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(),
            nn.Linear(84, 10))
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),  # N x 256
        nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.ReLU(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(),
        nn.Linear(84, 10))


def init_cnn(module: nn.Module) -> None:
    """The book's init (d2l 7.6.2): Xavier-uniform weights of every conv and linear layer, biases left as they are."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.xavier_uniform_(module.weight)


class EpochClock:
    """Seconds from the fit's start to the end of each epoch (validation included): ``bench.py`` reads the first
    two from a calibration run to give a peer's ``best`` recipe as many epochs as fit in a wall time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.laps: list[float] = []

    def lap(self) -> None:
        self.laps.append(round(time.perf_counter() - self.start, 3))
