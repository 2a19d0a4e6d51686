"""Fashion-MNIST under its original names: the constants and ``load_fashion_mnist``, on top of the IDX family.

The dataset (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) is what d2l 4.2 loads through torchvision and what
every CNN of chapters 7-8 trains on. The files are found in the first of: the ``data_dir`` argument (the CLI's
``--data-dir``), ``$CNNLAB_DATA``, ``~/.cache/cnnlab/fashion-mnist`` (``$CNNLAB_CACHE/fashion-mnist`` when that is
set). Loading, layouts and downloads are :mod:`cnnlab.data.idx_family`'s; this module keeps the names the rest of
cnnlab and the book-compatible face import, and the ``N x 28 x 28`` tensors of :class:`FashionMNIST`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.dataset import ImageDataset
from cnnlab.data.fetch import MARKER, locate
from cnnlab.data.idx_family import FASHION_FILES, SPECS, load_idx_dataset
from cnnlab.data.store import cache_root

__all__ = [
    "FILES", "CLASSES", "MEAN", "STD", "MIRRORS", "MARKER", "ENV_VAR", "FashionMNIST", "resolve_data_dir",
    "load_fashion_mnist",
]

_SPEC = SPECS["fashion-mnist"]
FILES: dict[str, str] = FASHION_FILES  # the official gz files and their md5 sums (torchvision's resources)
MIRRORS: tuple[str, ...] = _SPEC.mirrors  # torchvision.datasets.FashionMNIST.mirrors
CLASSES: tuple[str, ...] = _SPEC.classes
# Pixel mean and standard deviation of the 60,000 training images scaled to [0, 1] (recomputed by a test).
MEAN: float = _SPEC.stats[0][0]
STD: float = _SPEC.stats[1][0]
ENV_VAR = "CNNLAB_DATA"


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors elementwise is not what == should mean here
class FashionMNIST:
    """The whole dataset in memory: uint8 images ``N x 28 x 28`` and int64 labels in ``0..9``.

    Loads are cached per process, so instances may share storage: treat the tensors as read-only.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES


def default_cache_dir() -> Path:
    """``~/.cache/cnnlab/fashion-mnist`` (under ``$CNNLAB_CACHE`` when set), the folder cnnlab may download into."""
    return cache_root() / "fashion-mnist"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST folder: ``data_dir`` if given, else ``$CNNLAB_DATA`` if non-empty, else the cache.

    Raises:
        DataError: ``data_dir`` or ``$CNNLAB_DATA`` names a file or a folder that does not exist.
    """
    return locate(_SPEC.name, data_dir, _SPEC.expected, ENV_VAR).path


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> FashionMNIST:
    """Load the four Fashion-MNIST files into memory, verifying md5 sums and IDX headers.

    Args:
        data_dir: folder with the four files (default: ``$CNNLAB_DATA``, then the cache folder); read as found
            (``.gz``, uncompressed, or torchvision's ``FashionMNIST/raw/``) and never written to.
        download: fetch missing files from the official mirror, only into the cache folder.

    Returns:
        The dataset; repeated calls for the same unchanged folder return the cached tensors at no cost.

    Raises:
        DataError: a file is missing and cannot be downloaded, fails its md5 check, or is malformed.

    Example:
        >>> data = load_fashion_mnist()  # doctest: +SKIP
        >>> data.train_images.shape, data.classes[data.train_labels[0]]  # doctest: +SKIP
        (torch.Size([60000, 28, 28]), 'ankle boot')
    """
    return _as_fashion_mnist(load_idx_dataset(_SPEC.name, data_dir, download))


@functools.lru_cache(maxsize=4)
def _as_fashion_mnist(data: ImageDataset) -> FashionMNIST:
    """The three-dimensional views of a cached load (same object for the same load)."""
    return FashionMNIST(data.train_images.squeeze(1), data.train_labels, data.test_images.squeeze(1),
                        data.test_labels, data.classes)
