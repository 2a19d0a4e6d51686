"""A seeded, stratified hold-out split: the validation set for ``--val-split`` and the test set of a folder without one.

Stratified so that every class is held out in proportion to its size (a random split of a small or unbalanced set
can leave a class out of validation entirely), and seeded so that a run and its resume hold out the same images.
And a seeded sample of a split, for what looks at only part of one (:func:`sample_indices`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from cnnlab.checks import fail, is_int, number
from cnnlab.errors import CnnlabError

__all__ = ["SPLIT_NAMES", "run_split", "sample_indices", "stratified_split"]

# The names a split goes by, as a folder (any case: Train/ and Test/ were two classes) or a CSV's split value: Roboflow
# exports valid/, others training/, testing/ or validation/.
SPLIT_NAMES = {"train": ("train", "training"), "test": ("test", "testing"), "val": ("val", "valid", "validation")}


def _holdout_count(val: float | int, n: int) -> int:
    expected = "a fraction in (0, 1) or a whole number of images >= 1"
    number(val, "val", expected=expected)
    if 0 < val < 1:
        return round(val * n)
    if val >= 1 and val == int(val):
        return int(val)
    fail("val", expected, val)


def shown_share(val: float | int) -> str:
    """``val`` as a message prints it: a fraction rounded (a folder's 1/6 is 0.167, not 0.16666666666666666)."""
    return f"{val:.3g}" if isinstance(val, float) and val < 1 else str(val)


def _quotas(counts: list[int], k: int) -> list[int]:
    """Per-class hold-out counts summing to ``k``, proportional to ``counts``, each at most ``count - 1``.

    Largest-remainder rounding (Hamilton's method), with a class's remainder going to the next class when it is
    full; ties go to the lower label.
    """
    n = sum(counts)
    ideal = [k * c / n for c in counts]
    quota = [min(math.floor(q), c - 1) for q, c in zip(ideal, counts, strict=True)]
    while sum(quota) < k:
        room = [i for i, c in enumerate(counts) if quota[i] < c - 1]
        room.sort(key=lambda i: (quota[i] - ideal[i], i))  # furthest below its ideal share first
        for i in room[: k - sum(quota)]:
            quota[i] += 1
    return quota


def stratified_split(labels: torch.Tensor | Sequence[int], val: float | int, seed: int = 0,
                     name: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into training and held-out parts, class by class.

    Args:
        labels: integer class labels, one per sample.
        val: the held-out share: a fraction in (0, 1) of all samples (``round(val * len(labels))`` of them) or
            a whole number of samples.
        seed: which samples are held out; the same ``(labels, val, seed)`` always gives the same split.
        name: what a refusal calls ``val`` (``"test-split"`` where a folder's test split is drawn).

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index tensors that partition ``range(len(labels))``. Each class
        contributes in proportion to its size and keeps at least one training sample.

    Raises:
        CnnlabError: ``val`` is not a fraction or a positive count, rounds to no sample, or would leave a class
            without training samples.

    Example:
        >>> train_idx, val_idx = stratified_split(torch.tensor([0, 0, 0, 1, 1, 1]), 2, seed=0)
        >>> len(train_idx), len(val_idx)
        (4, 2)
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise CnnlabError(f"labels must be a 1-d integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if not is_int(seed):
        fail("seed", "an integer", seed)
    labels = labels.cpu().long()
    n = len(labels)
    k = _holdout_count(val, n)
    classes = torch.unique(labels)
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    counts = [len(m) for m in members]
    most = n - len(classes)  # every class keeps one training sample
    if k < 1:
        raise CnnlabError(f"{name}={shown_share(val)} of {n} samples holds out none; expected at least one sample")
    if k > most:
        raise CnnlabError(f"{name}={shown_share(val)} holds out {k} of {n} samples, but at most {most} can be held out "
                          f"while each of the {len(classes)} classes keeps a training sample")
    generator = torch.Generator().manual_seed(seed)
    held = [m[torch.randperm(len(m), generator=generator)[:q]]
            for m, q in zip(members, _quotas(counts, k), strict=True)]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.cat(held)] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def run_split(config: Mapping, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (training, validation) indices a run's ``--val-split`` drew of its training ``labels``, drawn again from
    its recorded config (``val_split`` and ``seed``, as :func:`stratified_split` drew them); None for a run without
    one."""
    if config.get("val_split") is None:
        return None
    return stratified_split(labels, config["val_split"], config.get("seed", 0))


def sample_indices(count: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices of ``range(count)`` drawn with ``seed``, sorted (all of them where there are no more).

    For what can look at only ``n`` images of a split (an export's check, the explorer's search for mistakes): a
    folder's splits are sorted by class, so their first ``n`` images would stand for their first classes alone.
    """
    if n >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values
