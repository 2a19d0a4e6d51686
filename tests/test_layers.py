"""cnnlab.layers against their torch.nn twins: init, state_dict keys, loading both ways, outputs, train/eval."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from cnnlab import layers
from cnnlab.errors import CnnlabError
from cnnlab.layers import Conv2D, layer_set
from cnnlab.models.init import init_cnn
from torch_support import BATCH_NORM_TAKES_BIAS

# (class name, constructor args, kwargs, input shape): the configurations the model zoo and torch users reach for.
CASES = [
    ("Conv2d", (1, 6, 5), dict(padding=2), (4, 1, 12, 12)),
    ("Conv2d", (4, 8, 3), dict(stride=2, padding=1, bias=False), (3, 4, 9, 9)),
    ("Conv2d", (4, 6, (3, 1)), dict(padding="same", dilation=2, groups=2), (2, 4, 7, 8)),
    ("Conv2d", (3, 3, 3), dict(padding=1, padding_mode="reflect"), (2, 3, 6, 6)),
    ("Conv2d", (8, 16, 1), dict(stride=2), (2, 8, 6, 6)),
    ("MaxPool2d", (3,), dict(stride=2, padding=1), (2, 3, 9, 9)),
    ("MaxPool2d", (2,), dict(ceil_mode=True, dilation=2), (2, 3, 9, 8)),
    ("AvgPool2d", (2,), dict(stride=2), (2, 3, 8, 8)),
    ("AvgPool2d", (3,), dict(stride=2, padding=1, count_include_pad=False, ceil_mode=True), (2, 3, 8, 8)),
    ("BatchNorm2d", (5,), dict(), (4, 5, 3, 3)),
    ("BatchNorm2d", (5,), dict(momentum=None), (4, 5, 3, 3)),
    ("BatchNorm2d", (5,), dict(affine=False, track_running_stats=False), (4, 5, 3, 3)),
    ("BatchNorm1d", (6,), dict(), (8, 6)),
    ("BatchNorm1d", (6,), dict(eps=1e-3, bias=False), (8, 6, 5)),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def build_pair(name, args, kwargs, seed=0, dtype=torch.float64):
    """The torch.nn layer and cnnlab's, each built right after seeding the global RNG with ``seed``."""
    if name.startswith("BatchNorm") and "bias" in kwargs and not BATCH_NORM_TAKES_BIAS:
        pytest.skip(f"torch {torch.__version__}'s {name} has no bias argument")
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(*args, **kwargs).to(dtype)
    torch.manual_seed(seed)
    ours = getattr(layers, name)(*args, **kwargs).to(dtype)
    return ours, theirs


def assert_states_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-12, atol=1e-12, msg=key)


def test_layer_set_gives_the_two_families():
    scratch, torch_set = layer_set("scratch"), layer_set("torch")
    for name in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d"):
        cls = getattr(scratch, name)
        assert cls.__name__ == name and cls.__module__ == "cnnlab.layers"
        assert getattr(torch_set, name) is getattr(nn, name)
        assert issubclass(cls, nn.Module) and not issubclass(cls, getattr(nn, name))
    with pytest.raises(CnnlabError, match="expected ops 'torch' or 'scratch', got 'numpy'"):
        layer_set("numpy")


@pytest.mark.parametrize(("name", "args", "kwargs", "shape"), CASES, ids=IDS)
def test_same_init_keys_and_outputs_as_torch(name, args, kwargs, shape):
    ours, theirs = build_pair(name, args, kwargs)
    assert type(ours).__name__ == name
    assert_states_equal(ours, theirs)  # same seed, same init calls: identical parameters
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    gen = torch.Generator().manual_seed(1)
    for step in range(3):  # a few training steps (batch norm updates its running stats), then eval
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
        grad = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
        ya.backward(grad)
        yb.backward(grad)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
        for (n, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-10, msg=n)
        assert_states_equal(ours, theirs)  # running_mean / running_var / num_batches_tracked move together
    ours.eval()
    theirs.eval()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "args", "kwargs", "shape"), CASES, ids=IDS)
def test_state_dicts_load_both_ways(name, args, kwargs, shape):
    ours, theirs = build_pair(name, args, kwargs, seed=2)
    donor_ours, donor_theirs = build_pair(name, args, kwargs, seed=3)
    x = torch.randn(shape, dtype=torch.float64)
    donor_ours.train()(x)  # non-trivial running statistics
    donor_theirs.train()(x)
    theirs.load_state_dict(donor_ours.state_dict())
    ours.load_state_dict(donor_theirs.state_dict())
    assert_states_equal(ours, donor_theirs)
    assert_states_equal(theirs, donor_ours)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d"])
def test_a_batch_norm_state_dict_of_version_1_loads_as_into_torch(name):
    # torch's layers load a state_dict from before num_batches_tracked (version 1), keeping their own count; ours
    # refused it as a missing key
    old = nn.Sequential(getattr(nn, name)(3)).state_dict()
    del old["0.num_batches_tracked"]
    old._metadata["0"]["version"] = 1
    ours, theirs = nn.Sequential(getattr(layers, name)(3)), nn.Sequential(getattr(nn, name)(3))
    for model in (ours, theirs):
        model[0].num_batches_tracked.fill_(5)
        model.load_state_dict(old)
    assert ours[0].num_batches_tracked.item() == theirs[0].num_batches_tracked.item() == 5


@pytest.mark.parametrize(("name", "args", "kwargs"), [
    ("Conv2d", (1, 6, 5), dict(padding=2)),
    ("Conv2d", (4, 6, (3, 1)), dict(padding="same", dilation=2, groups=2, bias=False, padding_mode="circular")),
    ("MaxPool2d", (3,), dict(stride=2, padding=1)),
    ("AvgPool2d", (2,), dict()),
    ("BatchNorm2d", (5,), dict(momentum=None, affine=False)),
    ("BatchNorm1d", (6,), dict(eps=1e-3, bias=False)),
])
def test_repr_matches_torch(name, args, kwargs):
    ours, theirs = build_pair(name, args, kwargs)
    # cnnlab's batch norm shows bias= as torch 2.14 does (a convolution's bias=False is in every torch's repr)
    takes_bias = BATCH_NORM_TAKES_BIAS or not name.startswith("BatchNorm")
    shown = repr(ours) if takes_bias else re.sub(r", bias=(True|False)", "", repr(ours))
    assert shown == repr(theirs)


def small_net(ops: str) -> nn.Sequential:
    """Conv-BN-ReLU-pool stages and a BN-ed dense head, as the models build them."""
    L = layer_set(ops)
    return nn.Sequential(
        L.Conv2d(1, 8, kernel_size=3, padding=1), L.BatchNorm2d(8), nn.ReLU(), L.MaxPool2d(3, stride=2, padding=1),
        L.Conv2d(8, 16, kernel_size=3, stride=2, groups=2), L.BatchNorm2d(16), nn.ReLU(), L.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16, 10), L.BatchNorm1d(10),
    )


def test_models_on_either_family_train_identically():
    torch.manual_seed(0)
    theirs = small_net("torch").double()
    torch.manual_seed(0)
    ours = small_net("scratch").double()
    assert_states_equal(ours, theirs)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ours, theirs)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.rand(8, 1, 16, 16, generator=gen, dtype=torch.float64), torch.randint(10, (8,), generator=gen)
        for model, opt in zip((ours, theirs), opts, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert_states_equal(ours, theirs)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-9, atol=1e-9)


def test_init_cnn_and_dtype_moves_reach_the_scratch_layers():
    net = small_net("scratch")
    before = net[0].weight.detach().clone()
    torch.manual_seed(0)
    net.apply(init_cnn)  # matches on the class name Conv2d
    assert not torch.equal(net[0].weight, before)
    net = net.to(torch.float64)
    assert net[0].weight.dtype == torch.float64 and net[1].running_mean.dtype == torch.float64
    assert net[1].num_batches_tracked.dtype == torch.long
    assert net(torch.rand(2, 1, 16, 16, dtype=torch.float64)).dtype == torch.float64


def test_scratch_layers_run_on_the_meta_device():
    """The model registry probes input sizes on the meta device."""
    with torch.device("meta"):
        net = small_net("scratch").eval()
    assert net(torch.zeros(1, 1, 16, 16, device="meta")).shape == (1, 10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scratch_layers_on_cuda_match_torch():
    torch.manual_seed(0)
    theirs = small_net("torch").cuda()
    ours = small_net("scratch").cuda()
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(8, 1, 16, 16, device="cuda")
    # cuDNN convolves in TF32 by default (10-bit mantissa, errors near 1e-3): the oracle is full float32 here
    # (conftest.py puts the flags back after each test).
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    assert ours[1].running_mean.device.type == "cuda"


def test_book_conv2d_learns_an_edge_kernel():  # d2l 7.2.2-7.2.4 with the book's own layer
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    Y = torch.zeros(6, 7)
    Y[:, 1], Y[:, 5] = 1.0, -1.0
    torch.manual_seed(0)
    conv = Conv2D((1, 2))
    assert conv.weight.shape == (1, 2) and torch.equal(conv.bias, torch.zeros(1))
    # The book trains a bias-free kernel at lr 3e-2; this layer's bias sums 42 outputs, so a smaller step.
    opt = torch.optim.SGD(conv.parameters(), lr=5e-3)
    for _ in range(100):
        opt.zero_grad()
        ((conv(X) - Y) ** 2).sum().backward()
        opt.step()
    torch.testing.assert_close(conv.weight.detach(), torch.tensor([[1.0, -1.0]]), atol=0.1, rtol=0)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: layers.Conv2d(3, 4, 3, groups=2), r"Conv2d: expected in_channels 3 and out_channels 4 divisible by"),
    (lambda: layers.Conv2d(0, 4, 3), r"Conv2d: expected in_channels to be a positive int, got 0"),
    (lambda: layers.Conv2d(3, 4, 3, padding_mode="mirror"), r"expected padding_mode in"),
    (lambda: layers.Conv2d(3, 4, 3, stride=2, padding="same"), r"expected stride 1 with padding='same'"),
    (lambda: layers.Conv2d(3, 4, 0), r"expected kernel_size to be positive"),
    (lambda: layers.MaxPool2d(2, padding=2), r"MaxPool2d: expected padding at most half the kernel size"),
    (lambda: layers.AvgPool2d(2, stride=0), r"AvgPool2d: expected stride to be positive"),
    (lambda: layers.BatchNorm2d(0), r"BatchNorm2d: expected num_features to be a positive int"),
    (lambda: layers.BatchNorm2d(3)(torch.zeros(2, 3, 4)), r"BatchNorm2d: expected input of shape \(N, C, H, W\)"),
    (lambda: layers.BatchNorm1d(3)(torch.zeros(2, 4)), r"BatchNorm1d: expected 3 channels \(dimension 1\)"),
    (lambda: layers.BatchNorm1d(3)(torch.zeros(1, 3)), r"expected more than 1 value per channel when training"),
    (lambda: layers.Conv2d(3, 4, 3)(torch.zeros(1, 2, 8, 8)), r"conv2d: expected weight.shape\[1\] \* groups"),
])
def test_bad_construction_or_input_raises(make, message):
    with pytest.raises(CnnlabError, match=message):
        make()
