"""The book's LeNet recipe in PyTorch Lightning, written as its docs tell a user: a LightningModule, its Trainer and
torchvision's FashionMNIST in DataLoaders.

Run it with the peers' virtualenv (benchmarks/setup_peers_venv.sh); ``bench.py --only peers`` alternates it with
``cnnlab train lenet --recipe book``:

    ~/.cache/cnnlab/peers-venv/bin/python benchmarks/peer_lightning.py --epochs 10 [--recipe best] [--json-out r.json]

``--recipe book`` (Lightning's quick start): ``training_step`` returns the cross-entropy and logs it,
``validation_step`` logs the loss and accuracy, ``configure_optimizers`` returns SGD at lr 0.1; batch 128 of
``transforms.ToTensor()`` pixels; ``L.Trainer(max_epochs=E)`` with ``trainer.fit(model, train_loader, val_loader)``,
which validates on the test set after every epoch. ``--recipe best`` (Lightning's "CIFAR10 ~94% Baseline"
tutorial, the small-CNN recipe its docs carry): SGD with momentum 0.9, lr 0.05, weight decay 5e-4, ``OneCycleLR``
to 0.1 stepped every batch over ``trainer.estimated_stepping_batches``, batch 64 as the tutorial takes without a
GPU, normalised pixels; its random-crop and flip augmentation is left out, as the ``fast`` recipe leaves it out
(it costs accuracy in a short schedule of a small net, and flips are out of distribution for Fashion-MNIST).
torch's default init for ``best``, as the tutorial's model keeps it; the book's Xavier init for ``book``.

Per step, beyond cnnlab's loop: every image goes through PIL and ``ToTensor`` in a DataLoader worker (``--workers``,
default 2, as benchmarks/dataloader_baseline.py) and is collated one by one; the Trainer runs its hooks and
callbacks around each batch (``training_step`` through the automatic-optimisation closure, ``self.log`` of the
loss, a logger write every 50 steps), two sanity validation batches before the first epoch and a checkpoint at
every epoch's end (its defaults, kept). Not kept: the progress bar (``enable_progress_bar=False``, as ``cnnlab
train --quiet``), and ``accelerator="cpu"`` so that a GPU, when present, is not taken, as ``--device cpu``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import accuracy, report, result, scratch, truncate  # noqa: E402
from peer_common import EpochClock, add_peer_args, init_cnn, lenet  # noqa: E402

BATCH_SIZE = {"book": 128, "best": 64}


class LitLeNet(L.LightningModule):
    """LeNet (``book``) or BN-LeNet (``best``) with the recipe's optimizer."""

    def __init__(self, recipe: str):
        super().__init__()
        self.recipe = recipe
        self.net = lenet(recipe)
        if recipe == "book":
            self.net.apply(init_cnn)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        X, y = batch
        loss = F.cross_entropy(self(X), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        X, y = batch
        logits = self(X)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        if self.recipe == "book":
            return torch.optim.SGD(self.parameters(), lr=0.1)
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1,
                                                        total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Clock(L.Callback):
    """Records the end of each epoch (Lightning validates before ``on_train_epoch_end``)."""

    def __init__(self) -> None:
        self.clock = EpochClock()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.clock = EpochClock()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.clock.lap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_peer_args(parser)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: the main one)")
    args = parser.parse_args(argv)
    batch_size = BATCH_SIZE[args.recipe]
    with scratch(args.workdir, args.source) as root:
        transform = transforms.ToTensor()
        train_set = torchvision.datasets.FashionMNIST(root / "data", train=True, transform=transform, download=True)
        if args.recipe == "best":  # the training set's statistics, as the tutorial's normalisation constants are
            pixels = train_set.data.float() / 255
            transform = transforms.Compose([transform, transforms.Normalize((pixels.mean(),), (pixels.std(),))])
            train_set.transform = transform
        test_set = torchvision.datasets.FashionMNIST(root / "data", train=False, transform=transform, download=True)
        truncate(train_set, args.limit, batch_size)
        truncate(test_set, args.limit, batch_size)
        loader = dict(batch_size=batch_size, num_workers=args.workers, persistent_workers=args.workers > 0)
        train_loader = DataLoader(train_set, shuffle=True, **loader)
        test_loader = DataLoader(test_set, shuffle=False, **loader)
        L.seed_everything(args.seed)
        model = LitLeNet(args.recipe)
        clock = Clock()
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, enable_progress_bar=False,
                            default_root_dir=root / "lightning", callbacks=[clock])
        start = time.perf_counter()
        trainer.fit(model, train_loader, test_loader)
        wall = time.perf_counter() - start
        test_acc, test_samples = accuracy(model.net, test_loader)
    report(result(f"PyTorch Lightning ({args.recipe})", epochs=args.epochs, train_images=len(train_set),
                  wall_s=wall, test_acc=test_acc, test_samples=test_samples, version=L.__version__,
                  recipe=args.recipe, batch_size=batch_size, workers=args.workers, epoch_end_s=clock.clock.laps),
           args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
