"""Held-out images that are pixel for pixel a training image: a picture copied into both splits is scored as unseen
though the model trains on it, so the held-out accuracy flatters the model.

One notice for every such split, in one wording: a folder's ``test/`` and ``val/`` (:mod:`cnnlab.data.folder`, from
the pixels as decoded) and the part ``--val-split`` holds out of the training images (:mod:`cnnlab.train.build`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch

__all__ = ["image_digest", "images_seen_in_training", "seen_in_training", "split_seen_in_training"]


def image_digest(pixels: np.ndarray) -> bytes:
    """A short hash of one image's pixels: equal digests, equal pixels (up to a 128-bit collision)."""
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).digest()


def seen_in_training(training: Sequence[tuple[bytes, Hashable]], held: Sequence[tuple[bytes, Hashable]],
                     what: str, named: Callable[[Hashable, Hashable], tuple[str, str]] | None = None) -> str | None:
    """The notice for the ``held`` images whose digest is a ``training`` image's, or None when there are none.

    Args:
        training, held: ``(digest, name)`` of each image (:func:`image_digest`; the name the notice shows, or a key
            ``named`` turns into it).
        what: the held-out split as the notice names it, e.g. ``"test"`` or ``"validation"``.
        named: the words for the first held image found and its training twin, from their keys; called for that
            pair alone, so that names kept in a file are read only when there is a notice to make.
    """
    names = {digest: name for digest, name in training}
    same = [(name, names[digest]) for digest, name in held if digest in names]
    if not same:
        return None
    held_name, twin = same[0] if named is None else named(*same[0])
    return (f"{len(same)} of {len(held)} {what} images are pixel for pixel a training image as decoded (first: "
            f"{held_name} = {twin}); the {what} accuracy scores them as unseen, though the model trains on them")


def split_seen_in_training(images: torch.Tensor, train_idx: torch.Tensor, held_idx: torch.Tensor,
                           what: str, digests: torch.Tensor | None = None,
                           files: Callable[[], Sequence[str]] | None = None) -> str | None:
    """:func:`seen_in_training` for a split of one set of uint8 images by index (``--val-split``), the images named
    by their file where ``files()`` gives one per image (:attr:`~cnnlab.data.ImageDataset.file_names`; read only
    for a notice), else by their index among ``images`` (``training image 12``). ``digests``: the images' own, where
    the loader keeps them (:attr:`~cnnlab.data.ImageDataset.train_digests`); else each image is hashed here."""
    name = _namer("training image", files, len(images))
    return seen_in_training(_digests(images, train_idx, digests), _digests(images, held_idx, digests), what,
                            lambda held, twin: (name(held), name(twin)))


def images_seen_in_training(training: torch.Tensor, held: torch.Tensor, what: str,
                            training_digests: torch.Tensor | None = None,
                            held_digests: torch.Tensor | None = None,
                            trained_on: torch.Tensor | None = None,
                            training_files: Callable[[], Sequence[str]] | None = None,
                            held_files: Callable[[], Sequence[str]] | None = None) -> str | None:
    """:func:`seen_in_training` for two sets of uint8 images (a run's training images, the images it is scored on
    elsewhere). The digests, where given, are the images' own (a folder's cache keeps them), and those images are
    not hashed again. ``trained_on``: the indices of the training images the model trained on (the training part of
    a ``--val-split`` run), where not all of them.

    Each image is named by its file where its set's ``*_files()`` gives one per image, in order (two folders:
    ``new/cat/a.jpg = pets/train/cat/b.jpg``, :attr:`~cnnlab.data.ImageDataset.file_names`; read only when there is
    a notice), else by its index (``evaluation image 3 = training image 12``).
    """
    held_name = _namer(f"{what} image", held_files, len(held))
    twin_name = _namer("training image", training_files, len(training))
    return seen_in_training(_digests(training, trained_on, stored=training_digests),
                            _digests(held, stored=held_digests), what,
                            lambda held_at, twin_at: (held_name(held_at), twin_name(twin_at)))


def _namer(word: str, files: Callable[[], Sequence[str]] | None, count: int) -> Callable[[int], str]:
    """The name of the image at an index of a set of ``count``: its file (``files()``, one per image), else the
    ``word`` and its index; the index too where the files listed are not one per image (a set read otherwise)."""
    # read once, at the first name asked for: a --val-split notice names two images of one set, from one file
    listing = (lambda: None) if files is None else functools.cache(files)

    def name(at: int) -> str:
        listed = listing()
        return listed[at] if listed is not None and len(listed) == count else f"{word} {at}"
    return name


def _digests(images: torch.Tensor, idx: torch.Tensor | None = None,
             stored: torch.Tensor | None = None) -> list[tuple[bytes, int]]:
    """``(digest, index)`` of each image of ``images`` (those at ``idx``), from the ``stored`` rows where given."""
    order = range(len(images)) if idx is None else idx.tolist()
    if stored is not None:  # the loader's digests of these images, one row each
        rows = stored.numpy()
        return [(rows[i].tobytes(), i) for i in order]
    pixels = images.numpy()  # a view: a memory-mapped set is read image by image, never copied whole
    return [(image_digest(pixels[i]), i) for i in order]
