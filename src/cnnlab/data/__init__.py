"""Datasets as values: uint8 images, labels, classes, statistics and a flip policy, from a small registry.

Sources (one file each): the IDX family (Fashion-MNIST, MNIST, KMNIST), CIFAR-10/100 binary and ``folder:PATH``;
then device-resident, resized batches (see docs/design.md, "Data").
"""

from cnnlab.data.dataset import ImageDataset, channel_stats, conform
from cnnlab.data.registry import (
    DatasetInfo,
    dataset_info,
    datasets_table,
    list_datasets,
    load_dataset,
    register_dataset,
)
from cnnlab.data.split import stratified_split

# Importing a source registers its datasets, in the order `cnnlab datasets` lists them.
from cnnlab.data import idx_family, cifar, folder  # noqa: E402, F401  isort: skip
from cnnlab.data.fashion_mnist import CLASSES, MEAN, STD, FashionMNIST, load_fashion_mnist, resolve_data_dir
from cnnlab.data.idx import read_idx
from cnnlab.data.loader import DeviceLoader, balanced_class_weights
from cnnlab.data.transforms import AUGMENTS, BatchMix, Preprocess, augment_batch, augment_images

__all__ = [
    "ImageDataset", "DatasetInfo", "load_dataset", "list_datasets", "dataset_info", "register_dataset",
    "datasets_table", "stratified_split", "channel_stats", "conform",
    "CLASSES", "MEAN", "STD", "FashionMNIST", "load_fashion_mnist", "resolve_data_dir", "read_idx",
    "DeviceLoader", "Preprocess", "augment_batch", "AUGMENTS", "BatchMix", "augment_images",
    "balanced_class_weights",
]
