"""DeviceLoader: the dataset lives on the device as uint8, each batch is gathered, scaled and resized there.

Why not ``torch.utils.data.DataLoader``: Fashion-MNIST is 47 MB of uint8, so it fits on any device, and
per-sample Python transforms in worker processes (d2l 4.2) cost more than a LeNet step on 2 CPU cores. Keeping
the uint8 tensor resident and doing ``index_select -> float -> augment -> resize`` per batch turns loading into a
handful of kernel launches (the approach of airbench's ``CifarLoader``), and never materialises a float or
resized copy of the dataset (60000 x 224 x 224 floats would be 12 GB).

Order and randomness are pure functions of ``(seed, epoch, rank, batch)``, which makes runs reproducible,
ranks consistent under torchrun, and resumption exact from ``{"epoch", "batch"}`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from cnnlab.checks import int_at_least, int_in_range, positive_int
from cnnlab.data.store import is_memory_mapped
from cnnlab.data.transforms import BatchMix, augment_images, augment_preset
from cnnlab.errors import CnnlabError

__all__ = ["DeviceLoader", "balanced_class_weights"]


def balanced_class_weights(labels: torch.Tensor, num_classes: int,
                           classes: Sequence[str] | None = None) -> torch.Tensor:
    """``n / (num_classes * count[c])`` per class (float64, on the CPU): scikit-learn's ``"balanced"`` class weight,
    under which every class weighs as much in total. Raises a one-line CnnlabError when a class has no sample (its
    weight would be infinite), naming the class (``classes``) when the names are given."""
    positive_int(num_classes, "num_classes")
    labels = torch.as_tensor(labels).cpu().long()
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        names = [repr(classes[i]) if classes is not None else str(i) for i in empty]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CnnlabError(f"balancing the classes needs at least one training image of each of the {num_classes} "
                          f"classes, got none of class {shown}")
    return len(labels) / (num_classes * counts.double())


def _mixed_seed(*words: int, spawn_key: tuple[int, ...] = ()) -> int:
    """A generator seed (63 bits) of ``words`` mixed by numpy's SeedSequence: well spread and version-stable (its
    documented algorithm); streams of the same words differ by ``spawn_key``."""
    return int(np.random.SeedSequence(list(words), spawn_key=spawn_key).generate_state(1, np.uint64)[0]) >> 1


def order_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order for a loader seeded with ``seed`` (its permutation, or its balanced draw).

    Seeded with seed + epoch, seed s + 1 drew seed s's orders one epoch later, so runs of different seeds were not
    independent draws of the data order (what a spread over seeds assumes); the two are mixed instead, in a stream
    of their own (the spawn key keeps it apart from the augmentation's).
    """
    return _mixed_seed(seed % 2**64, epoch, spawn_key=(1,))


class DeviceLoader:
    """Batches ``(x float N x C x H x W in the model's input space, y int64 N)`` from a device-resident dataset.

    Args:
        images: uint8 ``N x H x W`` (a channel dim is added per batch) or ``N x C x H x W``; moved to ``device``
            once and kept as uint8.
        labels: int labels ``N``.
        batch_size: samples per batch on this rank.
        shuffle: a new permutation every epoch (``torch.randperm`` on the CPU, seeded from ``seed`` and the epoch
            mixed, so that every device and rank computes the same one and no two seeds share orders); otherwise the
            stored order.
        preprocess: applied to each float [0, 1] batch after augmentation (a :class:`Preprocess`), on the device
            (a module is moved there).
        augment: an augmentation preset (:data:`~cnnlab.data.transforms.AUGMENTS`), each image drawing its own:
            ``crop-flip`` (or True) is a random crop (padding 2) and, with ``flip``, horizontal flip
            (:func:`~cnnlab.data.transforms.augment_batch`); ``trivial``, ``randaugment`` and ``autoaugment`` add
            torchvision's policy after it; ``none`` (or False) nothing.
        flip: mirror half of the augmented samples; False for data whose mirror image is another class or none
            (digits, characters: :attr:`ImageDataset.flip`).
        mixup, cutmix: MixUp / CutMix Beta parameters in [0, 1] (0: off; :class:`~cnnlab.data.transforms.BatchMix`):
            the batches' labels become soft, float ``N x num_classes``.
        num_classes: the class count (mixing and balancing); default ``labels.max() + 1``.
        balance: class-balanced sampling: each epoch draws as many samples as it has, with replacement, each
            with probability proportional to ``1 / count[its class]`` (``torch.multinomial``, seeded as the
            permutation is, so the order stays a function of seed and epoch); needs ``shuffle``.
        device: where the data and the batches live.
        seed: seeds the order and the augmentation.
        rank: this process's index among ``world_size`` (torchrun's RANK / WORLD_SIZE).
        world_size: number of processes sharing the epoch; rank ``r`` takes ``perm[r::world_size]`` truncated to
            ``N // world_size`` samples so all ranks run the same number of steps. At most ``world_size - 1``
            samples are dropped per epoch (none for 60000 with any world size that divides it); they differ from
            epoch to epoch when shuffling.
        drop_last: drop the last batch of the shard when it is smaller than ``batch_size``.
        limit_batches: at most this many batches per epoch (quick runs, ``--limit-train-batches``).
        indices: use only these samples of ``images`` (e.g. the training part of :func:`stratified_split`)
            without copying them; ``None``: all.
        resident: True moves ``images`` to ``device`` once; False keeps them where they are and moves each
            gathered batch instead; ``None`` (the default) chooses False for images memory-mapped from the cache
            (:attr:`ImageDataset.memory_mapped`: a set larger than memory) and True otherwise.

    Example:
        >>> loader = DeviceLoader(data.train_images, data.train_labels, 128, shuffle=True)  # doctest: +SKIP
        >>> for epoch in range(10):  # doctest: +SKIP
        ...     loader.set_epoch(epoch)
        ...     for x, y in loader:
        ...         ...
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None, augment: bool | str = False,
                 device: str | torch.device = "cpu", seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, limit_batches: int | None = None, flip: bool = True,
                 indices: torch.Tensor | None = None, resident: bool | None = None, mixup: float = 0.0,
                 cutmix: float = 0.0, num_classes: int | None = None, balance: bool = False):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() not in (3, 4):
            got = f"{images.dim()}-d {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise CnnlabError(f"images must be a uint8 tensor N x H x W or N x C x H x W, got {got}")
        if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
            got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise CnnlabError(f"labels must be an integer tensor of shape ({len(images)},), got {got}")
        positive_int(batch_size, "batch_size")
        positive_int(world_size, "world_size")
        if limit_batches is not None:
            positive_int(limit_batches, "limit_batches")
        int_in_range(rank, "rank", 0, world_size)
        self.device = torch.device(device)
        if resident is None:
            resident = not is_memory_mapped(images)
        # Resident: stays uint8, the only copy of the dataset. Not resident: a memory-mapped file stays on disk
        # and the page cache; only the gathered batch is copied to the device.
        self.images = images.to(self.device).contiguous() if resident else images
        self.resident = bool(resident)
        self.labels = labels.to(self.images.device, torch.int64)
        if indices is not None:
            indices = torch.as_tensor(indices)
            if indices.dim() != 1 or indices.is_floating_point() or indices.dtype == torch.bool:
                raise CnnlabError(f"indices must be a 1-d integer tensor, got {indices.dtype} {tuple(indices.shape)}")
            if len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < len(images):
                raise CnnlabError(f"indices must lie in [0, {len(images)}), got values from {int(indices.min())} "
                                  f"to {int(indices.max())}")
            indices = indices.long().cpu()
        self.indices = indices
        self.num_items = len(images) if indices is None else len(indices)
        if self.num_items < world_size:
            raise CnnlabError(f"need at least one sample per rank, got {self.num_items} samples for {world_size} "
                              f"ranks")
        if isinstance(preprocess, torch.nn.Module):  # its mean and std meet the batch on the device
            preprocess = preprocess.to(self.device)
        self.batch_size, self.shuffle, self.preprocess = batch_size, shuffle, preprocess
        self.augment = augment_preset(augment)
        self.flip = bool(flip)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 1
        self.mix = BatchMix(num_classes, mixup, cutmix) if mixup or cutmix else None
        self.balance = bool(balance)
        self._sample_weights = None
        if self.balance:
            if not shuffle:
                raise CnnlabError("balance (class-balanced sampling) needs shuffle=True, got shuffle=False")
            kept = labels if indices is None else labels[indices]
            weights = balanced_class_weights(kept, num_classes)
            self._sample_weights = weights[kept.cpu().long()]  # per sample of the (indexed) training set
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last, self.limit_batches = drop_last, limit_batches
        self.shard_size = self.num_items // world_size
        self._aug_gen = torch.Generator()  # CPU: the same draws whatever the device
        self._epoch, self._batch, self._resume_batch = 0, 0, 0
        self._order = self._make_order(0)

    # -- order -------------------------------------------------------------------------------------------------
    def _make_order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, on the device."""
        return self._order_from(torch.Generator().manual_seed(order_seed(self.seed, epoch)))

    def _order_from(self, generator: torch.Generator) -> torch.Tensor:
        """This rank's sample indices, shuffled (or balanced) with ``generator``, else in order; on the device."""
        n = self.num_items
        if self.balance:
            perm = torch.multinomial(self._sample_weights, n, replacement=True, generator=generator)
        elif self.shuffle:
            perm = torch.randperm(n, generator=generator)  # as torch's RandomSampler draws from its generator
        else:
            perm = torch.arange(n)
        if self.indices is not None:
            perm = self.indices[perm]
        return perm[self.rank::self.world_size][: self.shard_size].to(self.images.device)

    def set_epoch(self, epoch: int) -> None:
        """Fix the order (and augmentation) of ``epoch``; call it before iterating, as with DistributedSampler.

        After :meth:`load_state_dict`, calling it with the restored epoch keeps the restored batch position.
        """
        int_at_least(epoch, "epoch", 0)
        if epoch != self._epoch:
            self._order = self._make_order(epoch)
            self._epoch, self._resume_batch = epoch, 0
        self._batch = self._resume_batch

    @property
    def epoch(self) -> int:
        return self._epoch

    # -- sizes -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        full, rest = divmod(self.shard_size, self.batch_size)
        batches = full if self.drop_last or rest == 0 else full + 1
        return batches if self.limit_batches is None else min(batches, self.limit_batches)

    @property
    def num_samples(self) -> int:
        """Samples per epoch on this rank (after drop_last and limit_batches)."""
        return min(len(self) * self.batch_size, self.shard_size)

    # -- batches -----------------------------------------------------------------------------------------------
    def _augment_seed(self, batch: int) -> int:
        # batch b of epoch e gets the same randomness whether or not the run was resumed
        return _mixed_seed(self.seed % 2**64, self._epoch, self.rank, batch)

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` of the current epoch (random access, no position change); with mixing, its labels are soft
        (float ``N x num_classes``)."""
        return self._batch_in(self._order, b)

    def _batch_in(self, order: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` of the sample indices ``order``."""
        idx = order[b * self.batch_size: (b + 1) * self.batch_size]
        x = self.images.index_select(0, idx)  # B x H x W uint8: the only per-batch copy at the stored size
        y = self.labels.index_select(0, idx)
        if not self.resident:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if x.dim() == 3:
            x = x.unsqueeze(1)  # B x 1 x H x W
        x = x.float().div_(255)  # as torchvision's ToTensor (d2l 4.2); in place on the fresh float copy
        if self.augment != "none" or self.mix is not None:
            generator = self._aug_gen.manual_seed(self._augment_seed(b))
            x = augment_images(x, self.augment, generator, flip=self.flip)
            if self.mix is not None:  # after the augmentation's draws, from the same stream
                x, y = self.mix(x, y, generator)
        if self.preprocess is not None:
            x = self.preprocess(x)
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._resume_batch = self._resume_batch, 0
        for b in range(start, len(self)):
            x, y = self.batch(b)
            self._batch = b + 1  # counted before the yield: a checkpoint taken after this step resumes at b + 1
            yield x, y

    # -- resumption --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batch": b}``: ``b`` batches of epoch ``e`` were already yielded (``len(self)``: done)."""
        return {"epoch": self._epoch, "batch": self._batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue epoch ``state["epoch"]`` at batch ``state["batch"]`` as if never stopped."""
        try:
            epoch, batch = state["epoch"], state["batch"]
        except (KeyError, TypeError) as e:
            raise CnnlabError(f"loader state must be a dict with 'epoch' and 'batch', got {state!r}") from e
        int_in_range(batch, "loader state batch", 0, len(self) + 1, expected=f"an integer in [0, {len(self)}]")
        self.set_epoch(epoch)
        self._batch = self._resume_batch = batch

    def __repr__(self) -> str:
        return (f"DeviceLoader(samples={self.num_items}, batch_size={self.batch_size}, batches={len(self)}, "
                f"shuffle={self.shuffle}, augment={self.augment!r}, flip={self.flip}, mix={self.mix}, "
                f"balance={self.balance}, device={self.device}, "
                f"rank={self.rank}/{self.world_size})")
