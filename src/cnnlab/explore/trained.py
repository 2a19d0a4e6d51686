"""The one place the explorer turns a checkpoint into a model and a run into its test images.

Models come from :func:`cnnlab.inference.load_trained` (weights-only read; ``.model``, ``.preprocess``, ``.meta``,
``.logits``), the path every other command shares. Test images come from the dataset the checkpoint records
(``meta.dataset``) with the run's own settings, as ``cnnlab eval`` reads them, from disk only: the explorer never
starts a download inside a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab import inference
from cnnlab.data import holds_out_nothing
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
        name: the dataset's name, as :class:`cnnlab.data.ImageDataset` has it.
        held_out: the identity of a test split the loader drew out of the files (``ImageDataset.held_out``).
        split: which split of the dataset the images are: "test", or "validation" where the run held out no test
            split (``--test-split 0``; :meth:`cnnlab.inference.Trained.held_out_images`); None, and no images, where
            it held out nothing (no ``--val-split`` either).
        training_files: the identity of the files it was drawn from (``ImageDataset.training_files``), which a run
            without a test split is held to (:func:`cnnlab.inference.check_same_test_split`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    held_out: tuple[int, str] | None
    split: str | None = "test"
    training_files: tuple[int, str] | None = None


def test_set_key(trained: inference.Trained) -> tuple:
    """What decides which test images a run's dataset gives: the arguments :func:`load_test_set` loads it with."""
    config = trained.config
    # without a test split the run's validation split is shown, which its --val-split and seed draw
    drawn = (config.get("val_split"), config.get("seed")) if config.get("test_split") == 0 else ()
    return (*inference.dataset_args(config, name=trained.meta.dataset, decoded=trained.meta.decoded).items(), *drawn)


def load_test_set(trained: inference.Trained) -> TestSet:
    """The test images of the dataset a run trained on, read as the run read it (its validation images where it held
    out no test split; none, unread, where it held out nothing).

    The run's own ``--data-dir``, image size, channels and ``--skip-bad-images`` apply, as in ``cnnlab eval``; the
    folder is only read (the explorer never starts a download inside a request). Check a run against the result
    with :meth:`cnnlab.inference.Trained.check_dataset`: runs with the same :func:`test_set_key` share it.

    Raises:
        CnnlabError: the dataset is not on this machine, or its images do not fit the model.
    """
    meta = trained.meta
    if holds_out_nothing(trained.config):  # none of its images is shown: the folder is not read (it may have moved)
        return TestSet(torch.empty(0, meta.channels, meta.image_size, meta.image_size, dtype=torch.uint8),
                       torch.empty(0, dtype=torch.int64), tuple(meta.classes), meta.dataset, None, None)
    data = trained.dataset(download=False, training=False)
    images, labels, classes = data.test_images, data.test_labels, tuple(data.classes)
    split = trained.held_out_split(data)
    if split == "validation":
        images, labels, _ = trained.held_out_images(data)
    if tuple(images.shape[1:]) != (meta.channels, meta.image_size, meta.image_size):
        raise CnnlabError(f"the {split} images of {meta.dataset} are {' x '.join(map(str, images.shape[1:]))}, "
                          f"expected {meta.channels} x {meta.image_size} x {meta.image_size} for this model")
    return TestSet(images, labels, classes, data.name, data.held_out, split, data.training_files)
