"""Datasets as values: uint8 images, labels, classes, statistics and a flip policy, from a small registry.

Sources (one file each): the IDX family (Fashion-MNIST, MNIST, KMNIST), CIFAR-10/100 binary and ``folder:PATH``;
then device-resident, resized batches (see docs/design.md, "Data").

The names below are imported on first use, so that what only names a dataset (the CLI's flags, through
:mod:`cnnlab.train.config`) loads without torch. The sources register their datasets when
:mod:`cnnlab.data.registry` is imported, as anything that looks a dataset up does.
"""

from __future__ import annotations

import importlib
from typing import Any

# How datasets are named: a registered name, or this prefix and the path of a folder of the user's own images.
FOLDER_PREFIX = "folder:"
DEFAULT_DATASET = "fashion-mnist"

_WHERE = {
    "ImageDataset": "dataset", "channel_stats": "dataset", "conform": "dataset",
    "DatasetInfo": "registry", "load_dataset": "registry", "list_datasets": "registry", "dataset_info": "registry",
    "register_dataset": "registry", "datasets_table": "registry", "stratified_split": "split",
    "CLASSES": "fashion_mnist", "MEAN": "fashion_mnist", "STD": "fashion_mnist", "FashionMNIST": "fashion_mnist",
    "load_fashion_mnist": "fashion_mnist", "resolve_data_dir": "fashion_mnist", "read_idx": "idx",
    "DeviceLoader": "loader", "balanced_class_weights": "loader", "Preprocess": "transforms",
    "augment_batch": "transforms", "AUGMENTS": "transforms", "BatchMix": "transforms", "augment_images": "transforms",
}

__all__ = ["FOLDER_PREFIX", "DEFAULT_DATASET", *_WHERE]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
