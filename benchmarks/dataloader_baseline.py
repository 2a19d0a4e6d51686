"""The idiomatic PyTorch baseline for the book's LeNet recipe: torchvision dataset + transforms + DataLoader.

What a PyTorch user writes from the tutorials (the yardstick ``cnnlab train lenet --recipe book`` is held to):
``torchvision.datasets.FashionMNIST`` with ``transforms.ToTensor()``, a shuffling ``DataLoader`` of batch 128,
plain SGD at lr 0.1, and a validation pass over the test set after every epoch. The model is cnnlab's ``lenet``
with the book's Xavier init, so the two programs run the same network and differ only in how batches are made
and in the loop around them.

Usage:
    .venv/bin/python benchmarks/dataloader_baseline.py --epochs 10 [--workers 2] [--json-out r.json]

torchvision reads a scratch copy of the data (``--workdir``, default a temporary folder): it extracts the
archives beside the .gz files, which the shared read-only folder must not get.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from cnnlab.models import create_model
from cnnlab.models.init import init_cnn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import accuracy, add_common_args, report, result, scratch, truncate  # noqa: E402


def fit(model: torch.nn.Module, train_loader: DataLoader, test_loader: DataLoader, epochs: int,
        lr: float) -> float:
    """Train with SGD, validating after every epoch; returns the last validation accuracy."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    acc = float("nan")
    for epoch in range(epochs):
        model.train()
        total_loss, seen = 0.0, 0
        for X, y in train_loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            seen += len(y)
        acc, _ = accuracy(model, test_loader)
        print(f"epoch {epoch + 1}/{epochs}  train_loss {total_loss / seen:.4f}  val_acc {acc:.4f}", flush=True)
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: the main one)")
    args = parser.parse_args(argv)
    with scratch(args.workdir, args.source) as root:
        transform = transforms.ToTensor()
        train_set = torchvision.datasets.FashionMNIST(root / "data", train=True, transform=transform, download=True)
        test_set = torchvision.datasets.FashionMNIST(root / "data", train=False, transform=transform, download=True)
        truncate(train_set, args.limit, args.batch_size)
        truncate(test_set, args.limit, args.batch_size)
        loader = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=args.workers > 0)
        train_loader = DataLoader(train_set, shuffle=True, **loader)
        test_loader = DataLoader(test_set, shuffle=False, **loader)
        torch.manual_seed(args.seed)
        model = create_model("lenet")
        model.apply(init_cnn)
        start = time.perf_counter()
        test_acc = fit(model, train_loader, test_loader, args.epochs, args.lr)
        wall = time.perf_counter() - start
    report(result("DataLoader + torchvision transforms", epochs=args.epochs, train_images=len(train_set),
                  wall_s=wall, test_acc=test_acc, test_samples=len(test_set), workers=args.workers,
                  batch_size=args.batch_size), args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
