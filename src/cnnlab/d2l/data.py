"""The book's data classes (d2l 3.2.4, 4.2): ``DataModule`` and ``FashionMNIST``, plus ``show_images`` and the
function-style API's ``load_data_fashion_mnist`` (d2l-zh 3.5), which returns the same loaders.

``FashionMNIST`` is built on ``cnnlab.data``: the files come from ``load_fashion_mnist`` (offline: the ``root``
argument, else ``$CNNLAB_DATA``, else the cache folder; a download only when they are missing), and its loaders
are ``DeviceLoader`` s over the uint8 images with a ``Preprocess`` resize per batch. The batches are what the
book's torchvision pipeline yields: float ``N x 1 x H x W`` in [0, 1] and int64 labels, a fresh shuffle every
time a training loader is iterated, and the last partial batch kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from cnnlab.checks import is_int, positive_int
from cnnlab.d2l.arrays import TensorLoader
from cnnlab.d2l.core import HyperParameters
from cnnlab.data import CLASSES, DeviceLoader, Preprocess, load_fashion_mnist
from cnnlab.errors import CnnlabError, DataError

__all__ = ["DataModule", "FashionMNIST", "show_images", "load_data_fashion_mnist", "get_dataloader_workers",
           "get_fashion_mnist_labels"]


class DataModule(HyperParameters):
    """Base class of the book's datasets: subclasses define ``get_dataloader(train)``.

    Args:
        root: data folder of the book's own datasets (d2l's ``'../data'``, where ``d2l.download`` saves);
            ``FashionMNIST`` takes None there, meaning cnnlab's lookup (``$CNNLAB_DATA``, then the cache).
        num_workers: kept for d2l compatibility; cnnlab's loaders build batches in the main process.
    """

    def __init__(self, root: str | os.PathLike | None = "../data", num_workers: int = 4):
        self.save_hyperparameters()
        self.device = torch.device("cpu")

    def get_dataloader(self, train: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        return self.get_dataloader(train=True)

    def val_dataloader(self) -> Any:
        return self.get_dataloader(train=False)

    def to(self, device: str | torch.device) -> DataModule:
        """Build later loaders' batches on ``device`` (the Trainer calls this when it trains on a GPU)."""
        self.device = torch.device(device)
        return self

    def get_tensorloader(self, tensors: Sequence[torch.Tensor], train: bool,
                         indices: slice | torch.Tensor = slice(0, None)) -> TensorLoader:
        """Batches of ``tensors[indices]`` of ``self.batch_size``, shuffled anew each pass when ``train``."""
        tensors = tuple(a[indices] for a in tensors)
        return TensorLoader(tensors, self.batch_size, shuffle=train)


class _Split(torch.utils.data.Dataset):
    """One split as a map-style dataset of ``(float 1 x H x W image in [0, 1], int label)`` pairs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, preprocess: Preprocess):
        self.data, self.targets, self.preprocess = images, labels, preprocess  # torchvision's attribute names

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.data[i].float().div(255).reshape(1, 1, *self.data.shape[1:])
        return self.preprocess(x)[0], int(self.targets[i])


class _BookLoader(DeviceLoader):
    """A DeviceLoader iterated as a torch DataLoader is: each iteration has an order of its own, shuffled (for the
    training split) from a seed drawn from torch's global generator when its first batch is asked for, after the
    draw of the iterator's base seed when it is made; the same two draws, and the same ``randperm``, as a
    DataLoader's iterator and its RandomSampler. So ``torch.manual_seed(s)`` before a pass fixes that pass's order,
    which is the book's own for that seed, and two iterations at once do not disturb each other. Batches are
    ``[X, y]`` lists, as the DataLoader's default collate gives them.

    ``dataset`` is the split, as a DataLoader's (``len(train_iter.dataset)``, ``train_iter.dataset[0]``).
    """

    dataset: _Split
    owner: FashionMNIST

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_()  # the iterator's base seed (its workers'), drawn as it is made
        return self._pass()

    def _pass(self) -> Iterator[list[torch.Tensor]]:
        order = self._order
        if self.shuffle:  # RandomSampler draws its seed when asked for the first index
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            order = self._order_from(torch.Generator().manual_seed(seed))
        for b in range(len(self)):
            yield list(self._batch_in(order, b))

    def to(self, device: str | torch.device) -> _BookLoader:
        """The same loader (split, batches) with its images resident on ``device``, made once per device."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = vars(self).setdefault("_moved", {})
        if device not in moved:
            moved[device] = self.owner._loader(self.shuffle, device)
        moved[device].limit_batches = self.limit_batches
        return moved[device]


def on_device(loader: Any, device: str | torch.device) -> Any:
    """``loader`` with its data on ``device`` when it is one of this module's loaders; any other loader as it is
    (the loops then move each batch, as the book's do)."""
    return loader.to(device) if isinstance(loader, _BookLoader) else loader


class FashionMNIST(DataModule):
    """The Fashion-MNIST dataset as the book uses it (d2l 4.2), read offline through ``cnnlab.data``.

    Args:
        batch_size: images per batch.
        resize: side of the square images the loaders yield, an int or an ``(h, w)`` pair with ``h == w``.
        root: folder with the four ``.gz`` files, or a d2l data root holding ``FashionMNIST/raw/``
            (default: ``$CNNLAB_DATA``, then ``~/.cache/cnnlab/fashion-mnist``).
        device: where the loaders keep the images and build batches (the Trainer moves it to its GPU).

    Attributes:
        train, val: the 60,000 training and 10,000 test images as datasets of ``(image, label)`` pairs.

    Example:
        >>> data = FashionMNIST(batch_size=128, resize=(32, 32))  # doctest: +SKIP
        >>> X, y = next(iter(data.train_dataloader()))  # doctest: +SKIP
        >>> X.shape, y.dtype  # doctest: +SKIP
        (torch.Size([128, 1, 32, 32]), torch.int64)
    """

    def __init__(self, batch_size: int = 64, resize: int | Sequence[int] = (28, 28), *,
                 root: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__(root=root)
        self.save_hyperparameters()
        positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self.preprocess = Preprocess(_square_side(resize), antialias=True)  # torchvision's Resize, shrinking too
        dataset = load_fashion_mnist(_data_dir(root))
        self.train = _Split(dataset.train_images, dataset.train_labels, self.preprocess)
        self.val = _Split(dataset.test_images, dataset.test_labels, self.preprocess)
        self._resident: dict[tuple[torch.device, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def text_labels(self, indices: Sequence[int] | torch.Tensor) -> list[str]:
        """The class names of label indices (d2l 4.2.1)."""
        return [CLASSES[int(i)] for i in indices]

    def get_dataloader(self, train: bool) -> DeviceLoader:
        """Batches of the training (shuffled anew each pass) or validation split, the last one possibly smaller."""
        return self._loader(bool(train), self.device)

    def _loader(self, train: bool, device: torch.device) -> _BookLoader:
        key = (device, train)
        split = self.train if train else self.val
        if key not in self._resident:  # one device copy per split and device, shared by all loaders
            self._resident[key] = (split.data.to(device), split.targets.to(device))
        images, labels = self._resident[key]
        loader = _BookLoader(images, labels, self.batch_size, shuffle=train, preprocess=self.preprocess,
                             device=device, drop_last=False)
        loader.dataset, loader.owner = split, self
        return loader

    def visualize(self, batch: Sequence[torch.Tensor], nrows: int = 1, ncols: int = 8,
                  labels: Sequence[str] = ()) -> None:
        """Show the first ``nrows * ncols`` images of ``batch`` titled with their labels (d2l 4.2.3).

        Returns None, as d2l's does: a returned figure would be shown a second time as the cell's value in
        Jupyter. In a script nothing is shown; ``d2l.show_images`` returns the axes (``axes[0].figure``).
        """
        X, y = batch
        if not labels:
            labels = self.text_labels(y)
        show_images(X.squeeze(1), nrows, ncols, titles=list(labels))


def _square_side(resize: int | Sequence[int]) -> int:
    if is_int(resize):
        return resize
    if isinstance(resize, Sequence) and len(resize) == 2 and resize[0] == resize[1]:
        return int(resize[0])
    # Preprocess resizes to squares; the book only ever asks for squares (d2l 7-8: 28, 64, 96, 224).
    raise CnnlabError(f"resize must be an int or a square (h, w) pair, got {resize!r}")


def _data_dir(root: str | os.PathLike | None) -> Path | None:
    """``root`` itself, or ``root/FashionMNIST/raw`` where torchvision (d2l 1.0.3's loader) downloaded to."""
    if root is None:
        return None
    if not Path(root).expanduser().is_dir():  # said here: cnnlab.data's own line names --data-dir, not root=
        raise DataError(f"FashionMNIST(root={str(root)!r}): {root} is not a folder; expected one with the four "
                        f"Fashion-MNIST .gz files, or with FashionMNIST/raw/ holding them (without root, cnnlab "
                        f"reads $CNNLAB_DATA, else its cache folder)")
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    return raw if (raw / "train-images-idx3-ubyte.gz").is_file() else Path(root).expanduser()


def show_images(imgs: Sequence[Any], num_rows: int, num_cols: int, titles: Sequence[str] | None = None,
                scale: float = 1.5) -> Any:
    """Plot images on a ``num_rows x num_cols`` grid without axes (d2l 4.2.3); returns the flat array of axes.

    The figure is pyplot's, as in the book: in Jupyter it appears under the cell, and a script shows or saves it
    with ``d2l.plt.show()`` or ``d2l.plt.savefig(...)``, which a bare Figure (what the training boards draw on in a
    script) would leave blank.
    """
    from matplotlib import pyplot as plt

    fig = plt.figure(figsize=(num_cols * scale, num_rows * scale))
    axes = fig.subplots(num_rows, num_cols, squeeze=False).flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs, strict=False)):
        if isinstance(img, torch.Tensor):
            img = img.detach().cpu().numpy()
        ax.imshow(img)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    return axes


def get_dataloader_workers() -> int:
    """The book's worker-process count (4); cnnlab's loaders build batches on the device, in the main process."""
    return 4


def get_fashion_mnist_labels(labels: Sequence[int] | torch.Tensor) -> list[str]:
    """The Fashion-MNIST class names of label indices (d2l-zh 3.5.1)."""
    return [CLASSES[int(i)] for i in labels]


def load_data_fashion_mnist(batch_size: int, resize: int | Sequence[int] | None = None,
                            ) -> tuple[DeviceLoader, DeviceLoader]:
    """The training loader (shuffled anew each pass) and the test loader of Fashion-MNIST (d2l-zh 3.5.3).

    They are ``FashionMNIST(batch_size, resize).get_dataloader(True/False)``: float ``N x 1 x H x W`` images in
    [0, 1] resized on the device (``resize``: an int or a square pair; None keeps 28 px), int64 labels, the last
    partial batch kept; ``len()`` counts batches and ``.dataset`` is the split, as with the book's DataLoaders.
    The files are read offline (``$CNNLAB_DATA``, then the cache folder), not from ``'../data'``.
    """
    data = FashionMNIST(batch_size=batch_size, resize=resize or 28)
    return data.get_dataloader(True), data.get_dataloader(False)
