"""Why a short BatchNorm run can sit at chance in evaluation mode while it fits its training images.

``python benchmarks/bn_running_stats.py [--epochs 3] [--batch-size 256] [--image-size 64] [--model resnet18]``

Trains the model on scikit-learn's handwritten digits as a folder (``practitioner_demo.digits_folder``, written
once into the cache) with a 10% validation split, then scores the same weights three ways: in evaluation mode (the
running statistics), in training mode (each batch's own statistics), and in evaluation mode after the running
statistics are recomputed over the training set. Per BatchNorm layer it prints how far the running mean and
variance are from the training set's batch statistics. The chance warning's BatchNorm clause
(``cnnlab.train.health``) rests on these figures.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from bench import environment
from cnnlab.train import build_trainer, make_config
from practitioner_demo import digits_folder


@torch.no_grad()
def accuracy(net: nn.Module, loader, train_mode: bool = False) -> float:
    net.train(train_mode)
    loader.set_epoch(0)
    right = n = 0
    for x, y in loader:
        right += int((net(x).argmax(1) == y).sum())
        n += len(y)
    return right / n


@torch.no_grad()
def batch_statistics(model: nn.Module, loader) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the mean over the training batches of each batch's per-channel mean and variance."""
    sums: dict[str, list] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0], s[1], s[2] = s[0] + 1, s[1] + x.mean((0, 2, 3)), s[2] + x.var((0, 2, 3))
        return record

    probe = copy.deepcopy(model).eval()
    handles = [m.register_forward_hook(hook(n)) for n, m in probe.named_modules() if isinstance(m, nn.BatchNorm2d)]
    loader.set_epoch(0)
    for x, _ in loader:
        probe(x)
    for h in handles:
        h.remove()
    return {name: (mean / k, var / k) for name, (k, mean, var) in sums.items()}


@torch.no_grad()
def recomputed(model: nn.Module, loader) -> nn.Module:
    """A copy whose running statistics are the cumulative average over one pass of the training set."""
    net = copy.deepcopy(model)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    loader.set_epoch(0)
    for x, _ in loader:
        net(x)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    print(environment())
    with tempfile.TemporaryDirectory(prefix="cnnlab-bn-") as tmp:
        config = make_config(args.model, dataset=f"folder:{digits_folder() / 'train'}", image_size=args.image_size,
                             batch_size=args.batch_size, epochs=args.epochs, val_split=0.1, device="cpu",
                             out=str(Path(tmp) / "run"))
        trainer = build_trainer(config, quiet=True, report=False)
        print(f"cnnlab train {args.model} --dataset folder:DIGITS/train --image-size {args.image_size} --batch-size "
              f"{args.batch_size} --epochs {args.epochs} --val-split 0.1: {trainer.parts.steps_per_epoch} steps an "
              "epoch")
        for row in trainer.fit():
            print(f"epoch {row['epoch']}: train_acc {row['train_acc']:.4f} val_acc {row['val_acc']:.4f}")
        model, train, val, test = trainer.model, trainer.train_loader, trainer.val_loader, trainer.test_loader
        bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        print(f"{len(bns)} BatchNorm layers, {int(bns[0][1].num_batches_tracked)} updates each")
        print(f"evaluation mode (running statistics): val {accuracy(model, val):.4f} test {accuracy(model, test):.4f}")
        print(f"training mode (batch statistics):     val {accuracy(copy.deepcopy(model), val, True):.4f} "
              f"test {accuracy(copy.deepcopy(model), test, True):.4f}")
        fixed = recomputed(model, train)
        print(f"running statistics recomputed:        val {accuracy(fixed, val):.4f} test {accuracy(fixed, test):.4f}")
        stats = batch_statistics(model, train)
        print(f"{'layer':<20}{'|run mean - mean| / sd':>24}{'run var / var':>16}{'batch var':>12}  (medians)")
        for name, m in bns:
            mean, var = stats[name]
            gap = ((m.running_mean - mean).abs() / var.sqrt()).median()
            print(f"{name:<20}{gap:>24.3g}{(m.running_var / var).median():>16.3g}{var.median():>12.3g}")


if __name__ == "__main__":
    main()
