"""What the torchvision-based benchmark programs share: flags, a scratch copy of the data, accuracy, the result file.

Standard library and torch only: ``seed_lenet.py --d2l book`` imports this inside the separate d2l 1.0.3
virtualenv, where cnnlab is not installed.

Every program reports the same figures, so ``cnnlab bench`` can put them side by side:
``images_per_s`` = training images / wall seconds of the whole fit (training and the per-epoch validation),
``test_acc`` = exact accuracy over the (possibly ``--limit``-ed) test split after the fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every benchmark program takes (the book's LeNet recipe is the default)."""
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set (the book: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, metavar="BATCHES",
                        help="keep only this many batches of each split (smoke runs)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder; the data are copied to WORKDIR/data/FashionMNIST/raw "
                             "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--source", type=Path, default=os.environ.get("CNNLAB_DATA"),
                        help="folder with the four Fashion-MNIST .gz files (default: $CNNLAB_DATA)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the result here as JSON")


def check_source(source: Path | None) -> Path:
    """``source`` if it holds the four Fashion-MNIST .gz files; else stop with one line saying what was expected."""
    if source is None or not all((Path(source) / name).is_file() for name in FILES):
        raise SystemExit(f"expected --source or $CNNLAB_DATA to name a folder with {', '.join(FILES)}; got {source}")
    return Path(source)


@contextmanager
def scratch(workdir: Path | None, source: Path | None) -> Iterator[Path]:
    """Yield a scratch folder whose ``data/FashionMNIST/raw`` holds a copy of the four .gz files.

    torchvision extracts the archives next to them, so it must never see the shared read-only folder: it gets
    this copy (made once; a later run with the same ``workdir`` reuses it). Without ``workdir`` the folder is
    temporary and removed afterwards.
    """
    source = check_source(source)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
            yield _copy_data(Path(tmp), source)
    else:
        yield _copy_data(Path(workdir), source)


def _copy_data(root: Path, source: Path) -> Path:
    raw = root / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (raw / name).is_file():
            shutil.copyfile(source / name, raw / name)
    return root


def truncate(dataset, limit: int | None, batch_size: int) -> None:
    """Keep the first ``limit * batch_size`` samples of a dataset with torchvision's ``data``/``targets``."""
    if limit is not None:
        dataset.data = dataset.data[: limit * batch_size]
        dataset.targets = dataset.targets[: limit * batch_size]


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Iterable) -> tuple[float, int]:
    """Exact accuracy (correct / count, not a mean of batch means) of ``model`` over ``(X, y)`` batches."""
    was_training = model.training
    model.eval()
    correct = count = 0
    for X, y in batches:
        correct += int((model(X).argmax(dim=1) == y).sum())
        count += len(y)
    model.train(was_training)
    return correct / count, count


def report(result: dict, json_out: Path | None) -> None:
    """Print the result as one line and write it as JSON when asked."""
    print(f"{result['program']}: {result['images_per_s']:,.0f} images/s, test_acc {result['test_acc']:.4f}, "
          f"{result['epochs']} epochs in {result['wall_s']:.1f} s", flush=True)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


def result(program: str, *, epochs: int, train_images: int, wall_s: float, test_acc: float, test_samples: int,
           **extra) -> dict:
    """The record every program writes (``images_per_s`` counts training images over the whole fit)."""
    return {"program": program, "epochs": epochs, "train_images": train_images, "wall_s": wall_s,
            "images_per_s": train_images * epochs / wall_s, "test_acc": test_acc, "test_samples": test_samples,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), **extra}
