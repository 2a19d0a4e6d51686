"""stratified_split: a partition, proportional per class, seeded, every class keeps a training sample."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab.data.dataset
from cnnlab.data import channel_stats, stratified_split
from cnnlab.errors import CnnlabError


def check_partition(labels: torch.Tensor, train: torch.Tensor, val: torch.Tensor) -> None:
    assert train.dtype == val.dtype == torch.int64
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(len(labels)))
    assert torch.equal(train, torch.sort(train).values) and torch.equal(val, torch.sort(val).values)
    for c in torch.unique(labels):
        assert (labels[train] == c).any(), f"class {int(c)} lost all its training samples"


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=8), share=st.floats(0.01, 0.99),
       seed=st.integers(0, 2**31))
def test_fraction_is_a_proportional_partition(counts, share, seed):
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])[torch.randperm(sum(counts))]
    n, most = len(labels), len(labels) - len(counts)
    k = round(share * n)
    if not 1 <= k <= most:
        with pytest.raises(CnnlabError):
            stratified_split(labels, share, seed)
        return
    train, val = stratified_split(labels, share, seed)
    check_partition(labels, train, val)
    assert len(val) == k
    ideal = [k * c / n for c in counts]
    roomy = all(c - 1 >= math.ceil(q) for c, q in zip(counts, ideal, strict=True))
    for i, c in enumerate(counts):
        held = int((labels[val] == i).sum())
        # Largest remainder: at least the floor of the ideal share (or all but one sample); at most its ceiling
        # unless a full class passed its share on.
        assert min(math.floor(ideal[i]), c - 1) <= held <= c - 1, (held, ideal[i])
        assert not roomy or held <= math.ceil(ideal[i]), (held, ideal[i])


def test_count_and_fraction_agree_and_seed_decides():
    labels = torch.arange(600) % 3
    train, val = stratified_split(labels, 100, seed=5)
    assert len(val) == 100 and torch.bincount(labels[val]).tolist() in ([34, 33, 33], [33, 34, 33], [33, 33, 34])
    assert all(torch.equal(a, b) for a, b in zip(stratified_split(labels, 1 / 6, seed=5), (train, val), strict=True))
    other = stratified_split(labels, 100, seed=6)[1]
    assert not torch.equal(other, val)


def test_unbalanced_classes_are_held_out_in_proportion():
    labels = torch.tensor([0] * 90 + [1] * 10)
    _, val = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[val]).tolist() == [18, 2]  # a random split would often hold out 0-5 of class 1


def test_single_sample_classes_stay_in_training():
    labels = torch.tensor([0, 1, 1, 1, 2])
    train, val = stratified_split(labels, 2, seed=0)
    check_partition(labels, train, val)
    assert set(labels[val].tolist()) == {1}


@pytest.mark.parametrize("val, message", [
    (0, "fraction in \\(0, 1\\) or a whole number"), (1.0001, "whole number"), (-3, "whole number"),
    (float("nan"), "whole number"), (True, "whole number"), ("0.1", "whole number"),
    (0.001, "val=0.001 of 10 samples holds out none"), (8, "at most 7 can be held out"),
    (1 / 6, "^val=0.167 of 2 samples holds out none"),  # a folder's test split: rounded, not 0.16666666666666666
])
def test_bad_values_are_one_line(val, message):
    with pytest.raises(CnnlabError, match=message) as error:
        stratified_split(torch.arange(2 if val == 1 / 6 else 10) % 3, val)
    assert "\n" not in str(error.value)


def test_bad_labels():
    with pytest.raises(CnnlabError, match="1-d integer tensor"):
        stratified_split(torch.rand(10), 0.5)


def test_channel_stats_of_a_split_part_are_those_of_its_images_across_chunks(monkeypatch):
    # --normalize under --val-split takes the training part's statistics, gathered chunk by chunk
    monkeypatch.setattr(cnnlab.data.dataset, "_STATS_CHUNK", 7)  # several chunks, the last one short
    images = torch.randint(0, 256, (40, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    train_idx, _ = stratified_split(torch.arange(40) % 4, 0.25, seed=1)
    part = images[train_idx].double() / 255
    mean, std = channel_stats(images, train_idx)
    assert mean == pytest.approx(part.mean((0, 2, 3)).tolist(), rel=1e-12)
    assert std == pytest.approx(part.std((0, 2, 3)).tolist(), rel=1e-12)
    assert channel_stats(images) == channel_stats(images, torch.arange(40))


class _Floats(torch.Tensor):
    """A tensor that records the largest float64 tensor made from it or its slices."""

    largest = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64:
            cls.largest = max(cls.largest, out.numel() * out.element_size())
        return out


def test_channel_stats_hold_a_bounded_number_of_bytes_as_floats_whatever_the_image_size():
    # The chunk was 4,096 images whatever their size: decoding 3,600 pictures of a folder at 224 px (for an ImageNet
    # backbone in `cnnlab eval`) took 7.9 GB, a float64 copy of the whole 540 MB set and its square.
    images = torch.zeros(64, 3, 512, 512, dtype=torch.uint8).as_subclass(_Floats)
    images[::2] = 255
    assert channel_stats(images) == (pytest.approx((0.5,) * 3), pytest.approx((0.5,) * 3, rel=1e-6))
    assert 0 < _Floats.largest <= 2**28  # 256 MiB, where the 64 images are 400 MiB as float64
