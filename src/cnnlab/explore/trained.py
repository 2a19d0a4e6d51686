"""The one place the explorer turns a checkpoint into a model and a run into its test images.

Models come from :func:`cnnlab.inference.load_trained` (weights-only read; ``.model``, ``.preprocess``, ``.meta``,
``.logits``), the path every other command shares. Test images come from the dataset registry by the name the
checkpoint records (``meta.dataset``), read from disk only: the explorer never starts a download inside a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab import inference
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError


def load_trained(path: str | Path) -> inference.Trained:
    """The trained model of a checkpoint on the CPU, in eval mode (a :class:`cnnlab.inference.Trained`).

    Raises:
        CheckpointError: the file is missing, corrupt or not a cnnlab checkpoint.
    """
    return inference.load_trained(path, device="cpu")


@dataclass(frozen=True)
class TestSet:
    """A dataset's test split as the explorer shows it.

    Attributes:
        images: uint8 ``N x C x H x W``.
        labels: int64 ``N``.
        classes: class names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


def load_test_set(meta) -> TestSet:
    """The test images of a model's dataset (``meta`` is a :class:`cnnlab.inference.Meta`).

    Raises:
        CnnlabError: the dataset is not on this machine, or its images do not fit the model.
    """
    data = load_dataset(meta.dataset, download=False, image_size=meta.image_size, channels=meta.channels)
    images, labels, classes = data.test_images, data.test_labels, tuple(data.classes)
    if tuple(images.shape[1:]) != (meta.channels, meta.image_size, meta.image_size):
        raise CnnlabError(f"the test images of {meta.dataset} are {' x '.join(map(str, images.shape[1:]))}, "
                          f"expected {meta.channels} x {meta.image_size} x {meta.image_size} for this model")
    return TestSet(images, labels, classes)
