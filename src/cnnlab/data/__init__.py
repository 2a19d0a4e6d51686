"""Datasets as values: uint8 images, labels, classes, statistics and a flip policy, from a small registry.

Sources (one file each): the IDX family (Fashion-MNIST, MNIST, KMNIST), CIFAR-10/100 binary and ``folder:PATH``;
then device-resident, resized batches (see docs/design.md, "Data").

The names below are imported on first use, so that what only names a dataset (the CLI's flags, through
:mod:`cnnlab.train.config`) loads without torch. The sources register their datasets when
:mod:`cnnlab.data.registry` is imported, as anything that looks a dataset up does.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

# How datasets are named: a registered name, or this prefix and the path of a folder of the user's own images.
FOLDER_PREFIX = "folder:"
DEFAULT_DATASET = "fashion-mnist"

if TYPE_CHECKING:  # what type checkers and editors see (the package is typed): the same names, eagerly
    from cnnlab.data.dataset import ImageDataset, channel_stats, conform
    from cnnlab.data.fashion_mnist import CLASSES, MEAN, STD, FashionMNIST, load_fashion_mnist, resolve_data_dir
    from cnnlab.data.idx import read_idx
    from cnnlab.data.loader import DeviceLoader, balanced_class_weights
    from cnnlab.data.registry import (
        DatasetInfo,
        dataset_info,
        datasets_table,
        list_datasets,
        load_dataset,
        register_dataset,
    )
    from cnnlab.data.split import stratified_split
    from cnnlab.data.transforms import AUGMENTS, BatchMix, Preprocess, augment_batch, augment_images

_WHERE = {
    "ImageDataset": "dataset", "channel_stats": "dataset", "conform": "dataset",
    "DatasetInfo": "registry", "load_dataset": "registry", "list_datasets": "registry", "dataset_info": "registry",
    "register_dataset": "registry", "datasets_table": "registry", "stratified_split": "split",
    "CLASSES": "fashion_mnist", "MEAN": "fashion_mnist", "STD": "fashion_mnist", "FashionMNIST": "fashion_mnist",
    "load_fashion_mnist": "fashion_mnist", "resolve_data_dir": "fashion_mnist", "read_idx": "idx",
    "DeviceLoader": "loader", "balanced_class_weights": "loader", "Preprocess": "transforms",
    "augment_batch": "transforms", "AUGMENTS": "transforms", "BatchMix": "transforms", "augment_images": "transforms",
}

__all__ = [
    "FOLDER_PREFIX", "DEFAULT_DATASET", "ImageDataset", "DatasetInfo", "load_dataset", "list_datasets", "dataset_info",
    "register_dataset", "datasets_table", "stratified_split", "channel_stats", "conform", "CLASSES", "MEAN", "STD",
    "FashionMNIST", "load_fashion_mnist", "resolve_data_dir", "read_idx", "DeviceLoader", "Preprocess",
    "augment_batch", "AUGMENTS", "BatchMix", "augment_images", "balanced_class_weights", "holds_out_nothing",
]


def holds_out_nothing(config: Mapping[str, Any]) -> bool:
    """Whether a run's config (a TrainConfig's fields, or config.json's "config") holds out no image: ``--test-split
    0`` without ``--val-split``, a final refit on every labelled image. ``--test-split`` is taken only by a folder with
    no test or validation split of its own, so the config alone tells."""
    return config.get("test_split") == 0 and config.get("val_split") is None


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
