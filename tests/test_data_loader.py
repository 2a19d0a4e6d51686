"""DeviceLoader (order, sharding, resumption), augment_batch and Preprocess, judged against plain torch code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import DeviceLoader, Preprocess, augment_batch
from cnnlab.data.loader import order_seed
from cnnlab.errors import CnnlabError

N = 50


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (N, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(N)  # label = sample index, so every batch says which samples it holds


def epoch_batches(loader: DeviceLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def shifted(img: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Reference for one sample: zero-pad, crop at offset (dy, dx), then mirror; out[i, j] = img[i + dy, j + dx]."""
    _, h, w = img.shape
    p = max(abs(dy), abs(dx))
    out = F.pad(img, (p, p, p, p))[:, p + dy: p + dy + h, p + dx: p + dx + w]
    return out.flip(-1) if flip else out


# -- batches ------------------------------------------------------------------------------------------------------
def test_batches_are_the_indexed_samples_scaled_to_unit_range(images, labels):
    loader = DeviceLoader(images, labels, 16, shuffle=True, seed=3)
    assert loader.images.data_ptr() == images.data_ptr()  # no copy of the dataset on its own device
    for x, y in epoch_batches(loader, 0):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (len(y), 1, 28, 28)
        assert 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, images[y].unsqueeze(1).float() / 255)


@pytest.mark.parametrize("size", [28, 96])
def test_preprocessed_batches(images, labels, size):
    pre = Preprocess(size, mean=0.2860, std=0.3530)
    (x, y), *_ = epoch_batches(DeviceLoader(images, labels, 8, preprocess=pre), 0)
    assert x.shape == (8, 1, size, size)
    expected = images[:8].unsqueeze(1).float() / 255
    if size != 28:
        expected = F.interpolate(expected, size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (expected - 0.2860) / 0.3530, rtol=0, atol=1e-6)


def test_unshuffled_order_is_the_stored_order(images, labels):
    loader = DeviceLoader(images, labels, 16)
    assert torch.cat([y for _, y in epoch_batches(loader, 5)]).tolist() == list(range(N))


def test_permutation_is_randperm_seeded_with_seed_and_epoch_mixed(images, labels):
    loader = DeviceLoader(images, labels, 16, shuffle=True, seed=10)
    for epoch in (0, 4):
        order = torch.cat([y for _, y in epoch_batches(loader, epoch)])
        assert torch.equal(order, torch.randperm(N, generator=torch.Generator().manual_seed(order_seed(10, epoch))))


@pytest.mark.parametrize("balance", [False, True])
def test_neighbouring_seeds_share_no_orders(balance):
    """Seeded with seed + epoch, seed 1's epoch e drew seed 0's epoch e + 1 (the same orders, one epoch later)."""
    images, labels = torch.zeros(64, 4, 4, dtype=torch.uint8), torch.arange(64)  # a label per sample: y is the order
    drawn = []
    for seed in (0, 1, 2):
        loader = DeviceLoader(images, labels, 16, shuffle=True, balance=balance, num_classes=64, seed=seed)
        drawn += [tuple(torch.cat([y for _, y in epoch_batches(loader, e)]).tolist()) for e in range(4)]
    assert len(set(drawn)) == len(drawn) == 12


def test_shuffle_is_seeded_and_changes_every_epoch(images, labels):
    make = lambda seed: DeviceLoader(images, labels, 16, shuffle=True, augment=True, seed=seed)  # noqa: E731
    assert_same_batches(epoch_batches(make(0), 2), epoch_batches(make(0), 2))
    orders = [torch.cat([y for _, y in epoch_batches(make(0), e)]) for e in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    for order in orders:  # every sample exactly once per epoch
        assert sorted(order.tolist()) == list(range(N))
    assert not torch.equal(epoch_batches(make(1), 0)[0][1], epoch_batches(make(0), 0)[0][1])


@pytest.mark.parametrize("drop_last, sizes", [(False, [16, 16, 16, 2]), (True, [16, 16, 16])])
def test_last_partial_batch(images, labels, drop_last, sizes):
    loader = DeviceLoader(images, labels, 16, drop_last=drop_last)
    assert [len(y) for _, y in epoch_batches(loader, 0)] == sizes
    assert len(loader) == len(sizes) and loader.num_samples == sum(sizes)


def test_limit_batches(images, labels):
    loader = DeviceLoader(images, labels, 16, limit_batches=2)
    assert len(loader) == 2 and loader.num_samples == 32 and len(epoch_batches(loader, 0)) == 2
    assert len(DeviceLoader(images, labels, 16, limit_batches=9)) == 4


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_rank_shards_are_disjoint_equal_and_cover(images, labels, world_size):
    shards = []
    for rank in range(world_size):
        loader = DeviceLoader(images, labels, 4, shuffle=True, seed=2, rank=rank, world_size=world_size)
        shards.append(torch.cat([y for _, y in epoch_batches(loader, 1)]).tolist())
        assert loader.num_samples == N // world_size and len(loader) == -(-(N // world_size) // 4)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(order_seed(2, 1)))
    assert shards == [perm[r::world_size][: N // world_size].tolist() for r in range(world_size)]
    covered = {i for shard in shards for i in shard}
    assert len(covered) == world_size * (N // world_size) and N - len(covered) < world_size


def test_flip_off_never_mirrors(images, labels):
    """Digits and characters (flip=False datasets) get shifted crops only, as augment_batch(flip=False) makes."""
    loaders = {flip: DeviceLoader(images, labels, 16, shuffle=True, augment=True, seed=3, flip=flip)
               for flip in (False, True)}
    plain = DeviceLoader(images, labels, 16, shuffle=True, seed=3)
    differs = False
    for b, ((x, y), (xf, _), (x0, y0)) in enumerate(zip(*(epoch_batches(loaders[f], 1) for f in (False, True)),
                                                          epoch_batches(plain, 1), strict=True)):
        assert torch.equal(y, y0)
        generator = torch.Generator().manual_seed(loaders[False]._augment_seed(b))
        assert torch.equal(x, augment_batch(x0, generator, flip=False))
        differs = differs or not torch.equal(x, xf)
    assert differs  # with flip=True some samples are mirrored: the flag is what changed


def test_indices_select_samples_without_copying(images, labels):
    keep = torch.tensor([3, 5, 8, 13, 21, 34, 44])
    loader = DeviceLoader(images, labels, 3, shuffle=True, seed=1, indices=keep)
    assert loader.images.data_ptr() == images.data_ptr() and len(loader) == 3 and loader.num_samples == 7
    for epoch in (0, 1):
        seen = torch.cat([y for _, y in epoch_batches(loader, epoch)])
        assert sorted(seen.tolist()) == keep.tolist()
        perm = torch.randperm(len(keep), generator=torch.Generator().manual_seed(order_seed(1, epoch)))
        assert torch.equal(seen, keep[perm])
    for bad in (torch.tensor([0, N]), torch.tensor([0.5]), torch.tensor([-1])):
        with pytest.raises(CnnlabError, match="indices"):
            DeviceLoader(images, labels, 3, indices=bad)


def test_non_resident_images_give_the_same_batches(images, labels):
    kwargs = dict(shuffle=True, augment=True, seed=2, preprocess=Preprocess(32, 0.5, 0.25))
    resident, streamed = (DeviceLoader(images, labels, 16, resident=r, **kwargs) for r in (True, False))
    assert resident.resident and not streamed.resident
    assert_same_batches(epoch_batches(resident, 0), epoch_batches(streamed, 0))


# -- resumption ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [0, 1, 3, 4])
def test_resume_mid_epoch_is_bitwise_identical(images, labels, stop):
    make = lambda: DeviceLoader(images, labels, 16, shuffle=True, augment=True, seed=7,  # noqa: E731
                                preprocess=Preprocess(32, 0.5, 0.25))
    full = epoch_batches(make(), 3) + epoch_batches(make(), 4)

    first = make()
    first.set_epoch(3)
    batches = iter(first)
    for _ in range(stop):
        next(batches)
    state = first.state_dict()
    assert state == {"epoch": 3, "batch": stop}

    resumed = make()
    resumed.load_state_dict(dict(state))
    resumed.set_epoch(3)  # what a training loop does at the top of the epoch: keeps the position
    rest = [(x.clone(), y.clone()) for x, y in resumed]
    assert resumed.state_dict() == {"epoch": 3, "batch": 4}
    assert_same_batches(rest + epoch_batches(resumed, 4), full[stop:])


def test_load_state_dict_alone_positions_the_next_iteration(images, labels):
    loader = DeviceLoader(images, labels, 16, shuffle=True)
    loader.load_state_dict({"epoch": 2, "batch": 3})
    assert [y.tolist() for _, y in loader] == [epoch_batches(DeviceLoader(images, labels, 16, shuffle=True), 2)[3][1]
                                               .tolist()]
    assert len(epoch_batches(loader, 2)) == 4  # a later pass over the same epoch starts from the top again


@pytest.mark.parametrize("state", [{"epoch": 0}, {"epoch": 0, "batch": 5}, {"epoch": -1, "batch": 0}, None])
def test_bad_state(images, labels, state):
    with pytest.raises(CnnlabError):
        DeviceLoader(images, labels, 16).load_state_dict(state)


# -- augmentation ---------------------------------------------------------------------------------------------------
def test_reference_crop_and_flip_by_hand():
    img = torch.arange(1.0, 10.0).view(1, 3, 3)
    assert shifted(img, 1, 0, False).tolist() == [[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]
    assert shifted(img, 0, -1, True).tolist() == [[[2, 1, 0], [5, 4, 0], [8, 7, 0]]]
    assert shifted(img, -2, 2, False).tolist() == [[[0, 0, 0], [0, 0, 0], [3, 0, 0]]]


def test_augment_matches_one_of_the_candidates_and_all_happen():
    img = torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(0))
    candidates = {(dy, dx, f): shifted(img, dy, dx, f) for dy in range(-2, 3) for dx in range(-2, 3) for f in (0, 1)}
    out = augment_batch(img.expand(1000, 1, 5, 6).contiguous(), torch.Generator().manual_seed(0))
    seen = set()
    for sample in out:
        match = [key for key, cand in candidates.items() if torch.equal(sample, cand)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(candidates)  # every shift, with and without the flip, occurs


def test_augment_is_deterministic_per_generator_and_channel_consistent():
    x = torch.rand(64, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment_batch(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(6)))
    assert a.shape == x.shape and a.dtype == x.dtype
    same = augment_batch(x[:, :1].expand(64, 3, 8, 8).contiguous(), torch.Generator().manual_seed(5))
    assert torch.equal(same[:, 0], same[:, 2])  # one transform per sample, shared by its channels


def test_augment_options():
    x = torch.rand(200, 1, 4, 4)
    assert augment_batch(x, torch.Generator(), pad=0, flip=False) is x
    flipped = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    is_flip = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x, strict=True)])
    is_same = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, x, strict=True)])
    assert bool((is_flip | is_same).all()) and 60 < int(is_flip.sum()) < 140
    cropped = augment_batch(x, torch.Generator().manual_seed(0), pad=1, flip=False)
    assert all(any(torch.equal(a, shifted(b, dy, dx, False)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
               for a, b in zip(cropped, x, strict=True))


@pytest.mark.parametrize("args", [dict(x=torch.rand(2, 4, 4)), dict(x=torch.zeros(2, 1, 4, 4, dtype=torch.uint8)),
                                  dict(x=torch.rand(2, 1, 4, 4), pad=-1)])
def test_augment_rejects_bad_input(args):
    with pytest.raises(CnnlabError):
        augment_batch(generator=torch.Generator(), **args)


# -- preprocessing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [20, 28, 96, 224])
@pytest.mark.parametrize("norm", [None, (0.2860, 0.3530)])
def test_preprocess_equals_interpolate_then_normalise(size, norm):
    x = torch.rand(3, 1, 28, 28)
    expected = x if size == 28 else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if norm:
        expected = (expected - norm[0]) / norm[1]
    out = Preprocess(size, *(norm or (None, None)))(x)
    assert torch.equal(out, expected)
    if size == 28 and norm is None:
        assert out is x  # nothing to do, nothing done


def test_preprocess_per_channel_statistics():
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    x = torch.rand(4, 3, 32, 32)
    pre = Preprocess(32, mean, std)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(pre(x), expected)
    assert torch.equal(Preprocess(32, [0.5], 0.25)(x), (x - 0.5) / 0.25)  # one value serves every channel
    assert pre.state_dict() == {}  # the statistics are not weights: checkpoints' keys do not change
    assert "mean=(0.49, 0.48, 0.45)" in repr(pre)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_per_channel_preprocess_scripts_and_exports():
    pre = Preprocess(48, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(torch.jit.script(pre)(x), pre(x))
    exported = torch.export.export(pre, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    y = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(exported.module()(y), pre(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(input_size=0), dict(input_size=2.5), dict(mean=0.5), dict(mean=0.5, std=0.0),
                                    dict(mean=(0.5, 0.5), std=(0.2, 0.2, 0.2)), dict(mean=(), std=()),
                                    dict(mean="0.5", std=0.2), dict(mean=float("nan"), std=1.0),
                                    dict(mean=0.5, std=(0.2, -0.1))])
def test_preprocess_rejects_bad_arguments(kwargs):
    with pytest.raises(CnnlabError):
        Preprocess(**kwargs)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_preprocess_scripts():
    pre = Preprocess(64, 0.25, 0.5)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(torch.jit.script(pre)(x), pre(x))


@pytest.mark.slow
def test_preprocess_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pre = Preprocess(96, 0.2860, 0.3530).eval()
    program = torch.onnx.export(pre, (torch.rand(2, 1, 28, 28),), dynamo=True,
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    program.save(str(tmp_path / "pre.onnx"))
    session = ort.InferenceSession(str(tmp_path / "pre.onnx"))
    x = torch.rand(5, 1, 28, 28)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), pre(x), rtol=0, atol=1e-5)


# -- arguments and devices ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(rank=2, world_size=2), dict(world_size=0),
                                    dict(limit_batches=0), dict(images=torch.rand(N, 28, 28)),
                                    dict(labels=torch.arange(N - 1)), dict(world_size=N + 1)])
def test_loader_rejects_bad_arguments(images, labels, kwargs):
    args = dict(images=images, labels=labels, batch_size=16) | kwargs
    with pytest.raises(CnnlabError) as error:
        DeviceLoader(args.pop("images"), args.pop("labels"), args.pop("batch_size"), **args)
    assert "\n" not in str(error.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu(images, labels):
    kwargs = dict(shuffle=True, augment=True, seed=4, preprocess=Preprocess(96, 0.2860, 0.3530))
    cpu = epoch_batches(DeviceLoader(images, labels, 16, **kwargs), 1)
    gpu = epoch_batches(DeviceLoader(images, labels, 16, device="cuda", **kwargs), 1)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.device.type == "cuda" and torch.equal(yg.cpu(), yc)
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-5)
