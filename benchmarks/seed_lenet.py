"""The seed notebook's LeNet cells (d2l 7.6.1-7.6.2) timed on the real d2l 1.0.3 package or on ``cnnlab.d2l``.

The cells are the book's code, unchanged except for the import: ``from d2l import torch as d2l`` (``--d2l book``,
run with the python of a virtualenv holding d2l 1.0.3, see benchmarks/setup_d2l_venv.sh) or
``from cnnlab import d2l`` (``--d2l cnnlab``, the project's .venv). Both read the same scratch copy of the data:
d2l 1.0.3's FashionMNIST has no root argument and reads ``'../data'``, so the program works from
``WORKDIR/notebook``, as a notebook beside a ``data`` folder would; cnnlab.d2l gets the copy through $CNNLAB_DATA.

Usage:
    ~/.cache/cnnlab/d2l-venv/bin/python benchmarks/seed_lenet.py --d2l book --epochs 10
    .venv/bin/python benchmarks/seed_lenet.py --d2l cnnlab --epochs 10

The timed region is ``trainer.fit(model, data)``: every epoch's training and validation, as the book runs it.
The test accuracy is computed afterwards, exactly, over ``data.val_dataloader()``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import accuracy, add_common_args, report, result, scratch, truncate  # noqa: E402


def import_d2l(which: str):
    """The d2l namespace the cells run against (matplotlib's Agg backend, so no window opens)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    if which == "book":
        from d2l import torch as d2l

        return d2l, importlib.metadata.version("d2l")
    import cnnlab
    from cnnlab import d2l

    return d2l, cnnlab.__version__  # the source's own: a checkout on PYTHONPATH has no package metadata


def seed_cells(d2l, epochs: int, limit: int | None) -> dict:
    """Cells [35] and [37] of the seed notebook; returns the fit's wall time and its final test accuracy."""
    def init_cnn(module):  # Initialize weights for CNNs
        if type(module) == nn.Linear or type(module) == nn.Conv2d:  # noqa: E721  the book's exact test
            nn.init.xavier_uniform_(module.weight)

    class LeNet(d2l.Classifier):  # The LeNet-5 model
        def __init__(self, lr=0.1, num_classes=10):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.LazyConv2d(6, kernel_size=5, padding=2), nn.Sigmoid(),
                nn.AvgPool2d(kernel_size=2, stride=2),
                nn.LazyConv2d(16, kernel_size=5), nn.Sigmoid(),
                nn.AvgPool2d(kernel_size=2, stride=2),
                nn.Flatten(),
                nn.LazyLinear(120), nn.Sigmoid(),
                nn.LazyLinear(84), nn.Sigmoid(),
                nn.LazyLinear(num_classes))

    trainer = d2l.Trainer(max_epochs=epochs, num_gpus=1)
    data = d2l.FashionMNIST(batch_size=128)
    truncate(data.train, limit, data.batch_size)  # --limit only: the book's code has no such knob
    truncate(data.val, limit, data.batch_size)
    model = LeNet(lr=0.1)
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], init_cnn)
    start = time.perf_counter()
    trainer.fit(model, data)
    wall = time.perf_counter() - start
    test_acc, test_samples = accuracy(model, data.val_dataloader())
    return dict(train_images=len(data.train), wall_s=wall, test_acc=test_acc, test_samples=test_samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d2l", choices=("book", "cnnlab"), required=True,
                        help="book: the d2l 1.0.3 package; cnnlab: from cnnlab import d2l")
    add_common_args(parser)
    args = parser.parse_args(argv)
    json_out = args.json_out.resolve() if args.json_out else None
    here = Path.cwd()
    with scratch(args.workdir, args.source) as root:
        notebook = root / "notebook"
        notebook.mkdir(exist_ok=True)
        os.chdir(notebook)  # d2l 1.0.3 reads '../data'
        os.environ["CNNLAB_DATA"] = str(root / "data" / "FashionMNIST" / "raw")
        torch.manual_seed(args.seed)
        d2l, version = import_d2l(args.d2l)
        measured = seed_cells(d2l, args.epochs, args.limit)
        os.chdir(here)
    program = "d2l 1.0.3 (seed cell)" if args.d2l == "book" else "cnnlab.d2l (seed cell)"
    report(result(program, epochs=args.epochs, version=version, **measured), json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
