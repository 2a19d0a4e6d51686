"""The book's LeNet recipe in fastai, written as its docs tell a user: a Learner on DataLoaders of tensors.

Run it with the peers' virtualenv (benchmarks/setup_peers_venv.sh); ``bench.py --only peers`` alternates it with
``cnnlab train lenet --recipe book``:

    ~/.cache/cnnlab/peers-venv/bin/python benchmarks/peer_fastai.py --epochs 10 [--recipe best] [--json-out r.json]

fastai has no Fashion-MNIST reader, so the images come from torchvision's (a uint8 tensor), and the program then
does what fastai's book does with MNIST held in tensors (fastbook chapter 4, "MNIST loss function"): float pixels
in [0, 1], ``list(zip(x, y))`` as the dataset, fastai's own ``DataLoader`` for each split (batch 128; the training
one shuffled, as the book's recipe is) in ``DataLoaders``. ``--recipe book``: ``Learner(dls, net, opt_func=SGD,
loss_func=F.cross_entropy, metrics=accuracy)`` and ``learn.fit(E, lr=0.1)`` (fastai's SGD without momentum or
weight decay: the book's plain SGD), the book's Xavier init. ``--recipe best`` (fastbook chapter 13,
"Batch normalization", its small CNN on MNIST): fastai's defaults (Adam with decoupled weight decay 0.01) under
``learn.fit_one_cycle(E, 0.1)`` (cosine warm-up and annealing of lr and momentum), batch 512, pixels normalised
by the training set's mean and standard deviation; torch's default init, as the chapter's ``Learner`` keeps the
model's.

Per step, beyond cnnlab's loop: the DataLoader indexes the list one sample at a time and collates the batch with
``fa_collate`` (in the main process: fastai's DataLoader starts no workers unless asked); the Learner dispatches
every event (before_batch, after_pred, after_loss, before_backward, before_step, after_step, after_batch) to each
callback (TrainEvalCallback, Recorder with its smoothed loss, CastToTensor, and ParamScheduler for ``best``); the
step is fastai's own Optimizer, which runs its stepper functions over the parameters in Python. The whole
training set is held as float32 (188 MB), where cnnlab holds uint8 and converts each batch. The progress bar is
off (``learn.no_bar()``, as ``cnnlab train --quiet``); the Recorder still prints one line per epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import fastai
import torch
import torch.nn.functional as F
import torchvision
from fastai.vision.all import SGD, Callback, DataLoader, DataLoaders, Learner, accuracy, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import accuracy as exact_accuracy  # noqa: E402
from bench_common import report, result, scratch  # noqa: E402
from peer_common import EpochClock, add_peer_args, init_cnn, lenet  # noqa: E402

BATCH_SIZE = {"book": 128, "best": 512}


class EpochTimes(Callback):
    """Records the end of each epoch, after its validation."""

    order = 100  # after the Recorder

    def before_fit(self) -> None:
        self.clock = EpochClock()

    def after_epoch(self) -> None:
        self.clock.lap()


def tensors(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as float pixels in [0, 1], N x 1 x 28 x 28, and int64 labels."""
    data = torchvision.datasets.FashionMNIST(root / "data", train=train, download=True)
    return data.data.unsqueeze(1).float() / 255, data.targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_peer_args(parser)
    args = parser.parse_args(argv)
    bs = BATCH_SIZE[args.recipe]
    with scratch(args.workdir, args.source) as root:
        (train_x, train_y), (test_x, test_y) = tensors(root, True), tensors(root, False)
    if args.recipe == "best":  # the training set's statistics, as fastai's Normalize.from_stats takes them
        mean, std = train_x.mean(), train_x.std()
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    if args.limit is not None:
        keep = slice(args.limit * bs)
        train_x, train_y, test_x, test_y = train_x[keep], train_y[keep], test_x[keep], test_y[keep]
    set_seed(args.seed)  # before the DataLoaders: each draws its shuffling seed when made
    dls = DataLoaders(DataLoader(list(zip(train_x, train_y, strict=True)), bs=bs, shuffle=True),
                      DataLoader(list(zip(test_x, test_y, strict=True)), bs=bs), device=torch.device("cpu"))
    net = lenet(args.recipe)
    clock = EpochTimes()
    if args.recipe == "book":
        net.apply(init_cnn)
        learn = Learner(dls, net, opt_func=SGD, loss_func=F.cross_entropy, metrics=accuracy, cbs=clock)
    else:
        learn = Learner(dls, net, loss_func=F.cross_entropy, metrics=accuracy, cbs=clock)
    with learn.no_bar():
        start = time.perf_counter()
        if args.recipe == "book":
            learn.fit(args.epochs, lr=0.1)
        else:
            learn.fit_one_cycle(args.epochs, 0.1)
        wall = time.perf_counter() - start
    test_acc, test_samples = exact_accuracy(learn.model, dls.valid)
    report(result(f"fastai ({args.recipe})", epochs=args.epochs, train_images=len(train_x), wall_s=wall,
                  test_acc=test_acc, test_samples=test_samples, version=fastai.__version__, recipe=args.recipe,
                  batch_size=bs, epoch_end_s=clock.clock.laps), args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
