"""Fashion-MNIST from the IDX files to device-resident, resized batches (see docs/design.md, "Data")."""

from cnnlab.data.fashion_mnist import CLASSES, MEAN, STD, FashionMNIST, load_fashion_mnist, resolve_data_dir
from cnnlab.data.idx import read_idx
from cnnlab.data.loader import DeviceLoader
from cnnlab.data.transforms import Preprocess, augment_batch

__all__ = [
    "CLASSES", "MEAN", "STD", "FashionMNIST", "load_fashion_mnist", "resolve_data_dir", "read_idx",
    "DeviceLoader", "Preprocess", "augment_batch",
]
