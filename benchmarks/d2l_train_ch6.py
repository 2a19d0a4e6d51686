"""The Chinese edition's LeNet cells (d2l-zh 6.6) timed on the real d2l 1.0.3 package or on ``cnnlab.d2l``.

The cells are the book's function-style code, unchanged except for the import: the explicit-channel LeNet
``nn.Sequential``, ``d2l.load_data_fashion_mnist(batch_size=256)`` and ``d2l.train_ch6(net, train_iter,
test_iter, 10, 0.9, d2l.try_gpu())``. ``--d2l book`` runs in a virtualenv holding d2l 1.0.3
(benchmarks/setup_d2l_venv.sh), ``--d2l cnnlab`` in the project's .venv. As in seed_lenet.py, both read a scratch
copy of the data: d2l's loader reads ``'../data'``, so the program works from ``WORKDIR/notebook``.

Usage:
    ~/.cache/cnnlab/d2l-venv/bin/python benchmarks/d2l_train_ch6.py --d2l book
    .venv/bin/python benchmarks/d2l_train_ch6.py --d2l cnnlab
    .venv/bin/python benchmarks/d2l_train_ch6.py --compare 3   # both, alternated run by run, then the ratios

The timed region is the ``train_ch6`` call (training and the per-epoch test evaluation, the book's printout
included); the test accuracy is the one ``train_ch6`` printed, recomputed with ``evaluate_accuracy_gpu``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_common_args, check_source, report, result, scratch, truncate  # noqa: E402
from seed_lenet import import_d2l  # noqa: E402

BOOK_PYTHON = Path.home() / ".cache" / "cnnlab" / "d2l-venv" / "bin" / "python"


def lenet_cells(d2l, epochs: int, limit: int | None) -> dict:
    """d2l-zh 6.6's cells: the network, the loaders (batch 256) and train_ch6 at lr 0.9."""
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))
    batch_size = 256
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=batch_size)
    if limit is not None:  # --limit only: the book's code has no such knob
        for loader in (train_iter, test_iter):
            if hasattr(loader, "limit_batches"):
                loader.limit_batches = limit
            else:
                truncate(loader.dataset, limit, batch_size)
    lr, num_epochs = 0.9, epochs
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
    wall = time.perf_counter() - start
    lines = printed.getvalue().splitlines()
    train_images = min(len(train_iter.dataset), len(train_iter) * batch_size)
    test_acc = d2l.evaluate_accuracy_gpu(net, test_iter)
    return dict(train_images=train_images, wall_s=wall, test_acc=test_acc, test_samples=len(test_iter.dataset)
                if limit is None else min(len(test_iter.dataset), limit * batch_size),
                printed=[line for line in lines if not line.startswith("<Figure")][-2:])


def run_one(which: str, args: argparse.Namespace) -> dict:
    json_out = args.json_out.resolve() if args.json_out else None
    here = Path.cwd()
    with scratch(args.workdir, args.source) as root:
        notebook = root / "notebook"
        notebook.mkdir(exist_ok=True)
        os.chdir(notebook)  # d2l reads '../data'
        os.environ["CNNLAB_DATA"] = str(root / "data" / "FashionMNIST" / "raw")
        torch.manual_seed(args.seed)
        d2l, version = import_d2l(which)
        measured = lenet_cells(d2l, args.epochs, args.limit)
        os.chdir(here)
    program = "d2l 1.0.3 train_ch6" if which == "book" else "cnnlab.d2l train_ch6"
    out = result(program, epochs=args.epochs, version=version, **measured)
    report(out, json_out)
    return out


def compare(args: argparse.Namespace) -> None:
    """Run both sides ``args.compare`` times as subprocesses, alternating which goes first, and print the ratios."""
    check_source(args.source)  # here, not in the first child: one line instead of a child's failure
    if not args.book_python.is_file():
        raise SystemExit(f"expected d2l 1.0.3's virtualenv python at {args.book_python} (make it with "
                         "benchmarks/setup_d2l_venv.sh, or pass --book-python); got no such file")
    sides = {"book": str(args.book_python), "cnnlab": sys.executable}
    flags = ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    flags += ["--limit", str(args.limit)] if args.limit is not None else []
    flags += ["--source", str(args.source)] if args.source else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-ch6-") as tmp:
        for r in range(args.compare):
            order = ("book", "cnnlab") if r % 2 == 0 else ("cnnlab", "book")
            row = {}
            for which in order:
                out = Path(tmp) / f"{which}-{r}.json"
                load = os.getloadavg()[0]
                subprocess.run([sides[which], __file__, "--d2l", which, "--json-out", str(out), *flags], check=True)
                row[which] = {**json.loads(out.read_text()), "load_avg_1min_at_start": load}
            row["ratio"] = row["cnnlab"]["images_per_s"] / row["book"]["images_per_s"]
            rows.append(row)
    for r, row in enumerate(rows):
        book, ours = row["book"], row["cnnlab"]
        print(f"round {r + 1}: d2l {book['images_per_s']:,.0f} images/s (load {book['load_avg_1min_at_start']:.1f}), "
              f"cnnlab {ours['images_per_s']:,.0f} (load {ours['load_avg_1min_at_start']:.1f}), "
              f"ratio {row['ratio']:.2f}x, test acc {book['test_acc']:.4f} / {ours['test_acc']:.4f}")
    print(f"median ratio {statistics.median(r['ratio'] for r in rows):.2f}x over {len(rows)} rounds")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"command": " ".join(sys.argv), "rounds": rows}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d2l", choices=("book", "cnnlab"), help="book: the d2l 1.0.3 package; cnnlab: cnnlab.d2l")
    parser.add_argument("--compare", type=int, default=None, metavar="ROUNDS",
                        help="run both sides this many times, alternated, and report each round's ratio")
    parser.add_argument("--book-python", type=Path, default=BOOK_PYTHON, help="python of the d2l 1.0.3 venv")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.compare:
        compare(args)
    elif args.d2l:
        run_one(args.d2l, args)
    else:
        parser.error("give --d2l book|cnnlab or --compare ROUNDS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
