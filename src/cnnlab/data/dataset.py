"""The dataset value every source produces: uint8 images, int64 labels, class names, statistics and a flip policy.

A source (IDX family, CIFAR binary, a folder of images) only has to fill an :class:`ImageDataset`; the loader, the
trainer and the report read nothing else. Images are stored once as uint8 ``N x C x H x W`` (square) at their own
size and turned into model inputs per batch on the device (:class:`~cnnlab.data.transforms.Preprocess`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from cnnlab.checks import positive_int
from cnnlab.errors import CnnlabError

__all__ = ["ImageDataset", "channel_stats", "conform", "training_files_change"]

_STATS_CHUNK = 4096  # images per float64 chunk: bounded extra memory even for a memory-mapped 15 GB set
# ... and at most this many bytes of them as float64: 4,096 pictures of 224 px are 4.9 GB so (and their square)
_STATS_BYTES = 2**27


@dataclass(frozen=True, eq=False)  # eq=False: identity, not elementwise tensor comparison (and hashable)
class ImageDataset:
    """A labelled image dataset held as uint8 tensors.

    Attributes:
        name: the registry name it was loaded under, e.g. ``"mnist"`` or ``"folder:/data/pets"``.
        train_images: uint8 ``N x C x H x W`` with ``H == W``, as every loader stores images, but a folder loaded at
            a ``(height, width)`` for a model of another shape (``cnnlab eval`` of a model from elsewhere).
        train_labels: int64 ``N`` in ``0..num_classes-1``.
        test_images: uint8 ``M x C x H x W``, the same ``C, H, W``.
        test_labels: int64 ``M``.
        classes: one name per label.
        mean: per-channel pixel mean of the training images in the [0, 1] scale.
        std: per-channel standard deviation, same scale.
        flip: whether a horizontal mirror keeps the class (clothes, objects: yes; digits, characters: no).
        description: where the data came from and anything done to it (held-out split, skipped files).
        memory_mapped: the images are read from a file in the cache on demand rather than held in memory.
        held_out: ``(count, hash of the files' sorted relative paths)`` of a test split the loader drew out of the
            training images itself (a folder without ``test/``), else None. A run records it, so that a later
            load drawing another split (a file deleted or added since) is refused rather than tested on images
            the model trained on.
        notices: lines to show whoever trains on the data: choices the loader made about the files on its own
            (unreadable files skipped, colour files read as grey).
        training_files: ``(count, hash of the files' sorted relative paths)`` of a folder's training images (before
            any ``--val-split``), else None. A run records it, so that its resume refuses a folder whose training
            images were added to or removed since it started.
        training_bytes: a hash of the training files' contents (their bytes, in the split's order), else None: a
            run records it beside ``training_files``, so that its resume refuses the same names with other pictures.
            Bytes, not decoded pixels, so that decoding them again with another Pillow is not taken for a change.
        val_images, val_labels: a validation split the data brings itself (a folder's ``val/`` beside ``train/``
            and ``test/``), else None: a run validates on it and tests on the test split.
        train_digests, test_digests, val_digests: uint8 ``N x 16``, the
            :func:`~cnnlab.data.duplicates.image_digest` of each image of the split in order, where the loader
            keeps them (a folder's cache computes them as it decodes), else None: the check for images that are a
            run's training images reads them rather than hashing every image again. A copy with other images
            (``dataclasses.replace``) takes their rows too, or None.
        file_names: ``file_names(*splits)`` (each "train", "test" or "val"): the file each image of those splits,
            one split after another, was decoded from, in order, as a notice names it (the folder's name, then the
            path in it: ``pets/train/cat/1.jpg``), where the loader knows them (a folder's cache keeps them in a
            file, read once at each call, so that 100,000 names are not held for a whole run), else None. The
            notice of images that are a run's training images names files by it rather than by index. A
            conversion keeps the images' order, and so their names.

    Loads are cached per process, so instances may share storage: treat the tensors as read-only.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    description: str = ""
    memory_mapped: bool = False
    held_out: tuple[int, str] | None = None
    notices: tuple[str, ...] = ()
    training_files: tuple[int, str] | None = None
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    train_digests: torch.Tensor | None = None
    test_digests: torch.Tensor | None = None
    val_digests: torch.Tensor | None = None
    training_bytes: str | None = None
    file_names: Callable[..., list[str]] | None = None

    def __post_init__(self):
        others = ("test",) + (("val",) if self.val_images is not None else ())
        for split in ("train", *others):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise CnnlabError(f"{self.name}: {split}_images must be uint8 N x C x H x W, got "
                                  f"{images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise CnnlabError(f"{self.name}: {split}_labels must be int64 of shape ({len(images)},), got "
                                  f"{labels.dtype} {tuple(labels.shape)}")
            digests = getattr(self, f"{split}_digests")
            if digests is not None and (digests.dtype != torch.uint8 or digests.shape != (len(images), 16)):
                # another image's digest would name a wrong twin, or miss one, without a word
                raise CnnlabError(f"{self.name}: {split}_digests must be uint8 of shape ({len(images)}, 16), got "
                                  f"{digests.dtype} {tuple(digests.shape)}")
        for other in others:
            shape = getattr(self, f"{other}_images").shape[1:]
            if self.train_images.shape[1:] != shape:
                raise CnnlabError(f"{self.name}: train and {other} images differ in shape: "
                                  f"{tuple(self.train_images.shape[1:])} vs {tuple(shape)}")
        if not len(self.mean) == len(self.std) == self.channels:
            raise CnnlabError(f"{self.name}: mean and std need one value per channel ({self.channels}), got "
                              f"{len(self.mean)} and {len(self.std)}")

    @property
    def channels(self) -> int:
        """1 for grey, 3 for RGB."""
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the stored square images (the width of a folder loaded at another height and width)."""
        return int(self.train_images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def files_of(self, *splits: str) -> Callable[[], list[str]] | None:
        """:attr:`file_names` of ``splits``, one after another, read when called (once for them all); None where the
        loader knows none."""
        return None if self.file_names is None else functools.partial(self.file_names, *splits)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, train={len(self.train_images)}, test={len(self.test_images)}, "
                f"classes={self.num_classes}, channels={self.channels}, image_size={self.image_size}, "
                f"flip={self.flip})")


def training_files_change(then: Sequence, now: Sequence) -> str:
    """How a folder's training files ``now`` (:attr:`ImageDataset.training_files`) differ from those a run recorded
    ``then``, in words for its refusal; '' where they are the same (a checkpoint's record is a list)."""
    if [int(now[0]), str(now[1])] == [int(then[0]), str(then[1])]:
        return ""
    return f"{then[0]} files then, {now[0]} now" if int(now[0]) != int(then[0]) else \
        f"{then[0]} files then and now, but other ones, or other labels"


def channel_stats(images: torch.Tensor,
                  indices: torch.Tensor | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) standard deviation of uint8 ``N x C x H x W`` images in the [0, 1] scale.

    Sums run in float64 over chunks of images, so a memory-mapped set is read once and never held as floats.

    Args:
        images: the images.
        indices: only these of them (the training part of a ``--val-split``), gathered chunk by chunk.
    """
    count = len(images) if indices is None else len(indices)
    if images.dim() != 4 or count == 0:
        raise CnnlabError(f"channel statistics need a non-empty N x C x H x W tensor, got {tuple(images.shape)}"
                          + ("" if indices is None else f" and {count} indices"))
    c = images.shape[1]
    step = max(1, min(_STATS_CHUNK, _STATS_BYTES // (8 * images[0].numel())))
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for start in range(0, count, step):
        chunk = images[start:start + step] if indices is None else images[indices[start:start + step]]
        chunk = chunk.to(torch.float64).transpose(0, 1).reshape(c, -1)
        total += chunk.sum(1)
        squares += chunk.square().sum(1)
    n = count * images[0].numel() // c
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)
    return (tuple(float(m) / 255 for m in mean),
            tuple(math.sqrt(max(float(v), 0.0)) / 255 for v in var))


def _convert(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF  # deferred: importing torchvision is slow

    out = torch.empty(len(images), channels, image_size, image_size, dtype=torch.uint8)
    for start in range(0, len(images), _STATS_CHUNK):
        x = images[start:start + _STATS_CHUNK]
        if x.shape[1] != channels:
            # grey -> RGB repeats the channel; RGB -> grey is ITU-R 601-2 luma, as PIL's convert("L")
            x = x.expand(-1, 3, -1, -1) if channels == 3 else TF.rgb_to_grayscale(x, num_output_channels=1)
        if x.shape[-1] != image_size:
            x = TF.resize(x, [image_size, image_size], antialias=True)  # uint8 in, uint8 out (rounded)
        out[start:start + len(x)] = x
    return out


def conform(data: ImageDataset, image_size: int | None = None, channels: int | None = None,
            training: bool = True) -> ImageDataset:
    """``data`` with its images resized to ``image_size`` and converted to ``channels`` (1 or 3) where asked.

    Returns ``data`` itself when nothing changes; otherwise the statistics are recomputed from the new training
    images.

    Args:
        data: the dataset as its source loaded it.
        image_size: side of the square images wanted (default: ``data``'s).
        channels: 1 or 3 (default: ``data``'s).
        training: False for a reader of the test (and validation) images alone, such as an evaluation, which a
            checkpoint's own statistics normalise: the training images are then not converted (60,000 Fashion-MNIST
            pictures at 224 px are 3 GB, to read 10,000 others), and the result's ``train_images`` and
            ``train_labels`` are empty and its ``mean`` and ``std`` NaN, as nothing computed them.
    """
    if image_size is not None:
        positive_int(image_size, "image_size")
    if channels not in (None, 1, 3):
        raise CnnlabError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    size, chans = image_size or data.image_size, channels or data.channels
    if (size, chans) == (data.image_size, data.channels):
        return data
    # ``training`` is part of the cache's key, so a value without training images is never handed to a caller of
    # them (passed positionally, as the others are: lru_cache keys a keyword apart from the same value by position)
    return _converted(data, size, chans, training)


@functools.lru_cache(maxsize=2)  # keyed by the (cached, identity-hashed) source value: a second call is free
def _converted(data: ImageDataset, size: int, chans: int, training: bool) -> ImageDataset:
    if training:
        train, labels = _convert(data.train_images, size, chans), data.train_labels
        mean, std = channel_stats(train)
        note = f"; converted to {chans} channel(s) at {size} px"
    else:
        train, labels = torch.empty(0, chans, size, size, dtype=torch.uint8), data.train_labels[:0]
        mean = std = (math.nan,) * chans
        note = f"; converted to {chans} channel(s) at {size} px (all but the training images, not read)"
    test = _convert(data.test_images, size, chans)
    val = None if data.val_images is None else _convert(data.val_images, size, chans)
    return replace(data, train_images=train, train_labels=labels, test_images=test, val_images=val, mean=mean,
                   std=std, description=data.description + note, memory_mapped=False,
                   train_digests=None, test_digests=None, val_digests=None)  # of the pixels before converting
