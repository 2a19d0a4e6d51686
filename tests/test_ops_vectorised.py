"""cnnlab.ops' vectorised conv2d / max_pool2d / avg_pool2d / batch_norm against torch.nn.functional.

Hypothesis draws small random geometries (shapes, strides, paddings, dilations, groups, memory layouts); each
case compares the forward result and the gradients of every input in float64 at 1e-9. About 1,200 cases run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.errors import CnnlabError
from cnnlab.ops import avg_pool2d, batch_norm, conv2d, conv_output_shape, max_pool2d
from cnnlab.ops import conv as conv_module
from torch_support import BATCH_NORM_TAKES_EPS_0

TOL = {"rtol": 1e-9, "atol": 1e-9}
DT = torch.float64


def _randn(gen: torch.Generator, *shape: int, layout: str = "contiguous", requires_grad: bool = True) -> torch.Tensor:
    """A random float64 tensor in one of three memory layouts (the ops must read any strides)."""
    if layout == "channels_last" and len(shape) == 4:
        t = torch.randn(*shape, generator=gen, dtype=DT).contiguous(memory_format=torch.channels_last)
    elif layout == "offset_view":
        big = torch.randn(*shape[:-1], shape[-1] + 2, generator=gen, dtype=DT)
        t = big[..., 1:-1]  # non-zero storage offset, row stride larger than the width
    else:
        t = torch.randn(*shape, generator=gen, dtype=DT)
    return t.requires_grad_(requires_grad)


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, inputs: list[torch.Tensor], gen: torch.Generator) -> None:
    """Same forward values and the same gradients of ``inputs`` for a random upstream gradient."""
    torch.testing.assert_close(ours, theirs, **TOL)
    grad = torch.randn(ours.shape, generator=gen, dtype=DT)
    ours_g = torch.autograd.grad(ours, inputs, grad)
    theirs_g = torch.autograd.grad(theirs, inputs, grad)
    for a, b in zip(ours_g, theirs_g, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: on a busy 2-core machine OpenMP's second thread only adds spin-waiting (one case
    took 50 ms instead of 0.2 ms), so run this module single-threaded and restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


layouts = st.sampled_from(["contiguous", "channels_last", "offset_view"])


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        pad = (0, 0) if padding == "valid" else tuple(d * (k - 1) for d, k in zip(dilation, kernel, strict=True))
    else:
        pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        padding = pad if draw(st.booleans()) else pad[0] if pad[0] == pad[1] else pad
        pad = (2 * pad[0], 2 * pad[1])  # total over both sides
    eff = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    hw = [draw(st.integers(max(1, e - p), max(1, e - p) + 6)) for e, p in zip(eff, pad, strict=True)]
    return dict(n=draw(st.integers(1, 3)), cin=cin, cout=cout, kernel=kernel, hw=hw, stride=stride,
                padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                unbatched=draw(st.integers(0, 5)) == 0, layout=draw(layouts), seed=draw(st.integers(0, 2**31)),
                weight_layout=draw(layouts))  # a channels-last weight failed in backward: the book's loop makes one


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # torch's, about its own copy
@settings(max_examples=400, deadline=None)
@given(conv_cases())
def test_conv2d_matches_torch(case):
    _compare_conv(case)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=60, deadline=None)
@given(conv_cases(), st.sampled_from(["batch", "channels"]))
def test_conv2d_empty_batch_or_channels_matches_torch(case, empty):
    """F.conv2d returns an empty output (no output channels when there are no input channels) with zero
    gradients; cnnlab used to raise IndexError or return the wrong shape."""
    _compare_conv({**case, "n": 0, "unbatched": False} if empty == "batch" else {**case, "cin": 0})


def _conv_inputs(case, gen):
    """(x, weight, bias or None, the positional arguments after them) of a drawn conv case."""
    shape = (case["cin"], *case["hw"]) if case["unbatched"] else (case["n"], case["cin"], *case["hw"])
    x = _randn(gen, *shape, layout=case["layout"])
    w = _randn(gen, case["cout"], case["cin"] // case["groups"], *case["kernel"], layout=case["weight_layout"])
    b = _randn(gen, case["cout"]) if case["bias"] else None
    return x, w, b, (case["stride"], case["padding"], case["dilation"], case["groups"])


def _compare_conv(case):
    gen = torch.Generator().manual_seed(case["seed"])
    x, w, b, args = _conv_inputs(case, gen)
    inputs = [x, w] + ([b] if b is not None else [])
    _assert_same(conv2d(x, w, b, *args), F.conv2d(x, w, b, *args), inputs, gen)


def _second_order(conv, x, w, b, args, upstream, probes):
    """The gradients of <first-order gradients of x and w, probes>: what a gradient penalty differentiates."""
    out = conv(x, w, b, *args)
    first = torch.autograd.grad(out, [x, w], upstream, create_graph=True)
    scalar = sum((g * v).sum() for g, v in zip(first, probes, strict=True))
    inputs = [x, w, upstream] + ([b] if b is not None else [])
    grads = torch.autograd.grad(scalar, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs, strict=True)]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=80, deadline=None)
@given(conv_cases())
def test_conv2d_second_order_gradients_match_torch(case):
    # The backward was first-order only: a gradient penalty's gradient came back None (allow_unused) or raised.
    gen = torch.Generator().manual_seed(case["seed"])
    x, w, b, args = _conv_inputs(case, gen)
    out_shape = F.conv2d(x, w, b, *args).shape
    upstream = torch.randn(out_shape, generator=gen, dtype=DT).requires_grad_()
    probes = [torch.randn(x.shape, generator=gen, dtype=DT), torch.randn(w.shape, generator=gen, dtype=DT)]
    ours = _second_order(conv2d, x, w, b, args, upstream, probes)
    theirs = _second_order(F.conv2d, x, w, b, args, upstream, probes)
    for a, c in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, c, **TOL)


def test_conv2d_gradgradcheck_chunked(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    x, w, b = _randn(gen, 3, 2, 5, 4), _randn(gen, 4, 1, 2, 3), _randn(gen, 4)
    monkeypatch.setattr(conv_module, "COLS_BUDGET", 2 * 6 * 4 * 2)  # one image per chunk in the forward
    assert torch.autograd.gradgradcheck(lambda *t: conv2d(*t, stride=(2, 1), padding=(1, 0), groups=2), (x, w, b))


@st.composite
def pool_cases(draw, dilated: bool):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = None if draw(st.booleans()) else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    eff = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    # from a little below the kernel: rounding up, a kernel larger than the padded input can still give a window
    hw = [draw(st.integers(max(1, e - 2 * p - 2), max(1, e - 2 * p) + 6)) for e, p in zip(eff, padding, strict=True)]
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, hw=hw, ceil_mode=draw(st.booleans()), unbatched=draw(st.integers(0, 5)) == 0,
                layout=draw(layouts), seed=draw(st.integers(0, 2**31)))


def _pool_input(case, gen):
    shape = (case["c"], *case["hw"]) if case["unbatched"] else (case["n"], case["c"], *case["hw"])
    return _randn(gen, *shape, layout=case["layout"])


@settings(max_examples=250, deadline=None)
@given(pool_cases(dilated=True))
def test_max_pool2d_matches_torch(case):
    gen = torch.Generator().manual_seed(case["seed"])
    x = _pool_input(case, gen)
    args = (case["kernel"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    try:
        theirs, their_idx = F.max_pool2d(x, *args, return_indices=True)
    except RuntimeError:  # an input too small for the kernel: refused by both
        with pytest.raises(CnnlabError, match="at least as large as the"):
            max_pool2d(x, *args)
        return
    try:
        ours, our_idx = max_pool2d(x, *args, return_indices=True)
    except CnnlabError as error:
        # Dilated windows of only padding: PyTorch answers -inf there; cnnlab refuses the geometry.
        assert "window of only padding" in str(error) and torch.isinf(theirs).any()
        return
    assert not torch.isinf(theirs).any()
    assert torch.equal(our_idx, their_idx)
    _assert_same(ours, theirs, [x], gen)


@settings(max_examples=250, deadline=None)
@given(pool_cases(dilated=False), st.booleans(), st.sampled_from([None, None, 1, 3, 5]))
def test_avg_pool2d_matches_torch(case, count_include_pad, divisor_override):
    gen = torch.Generator().manual_seed(case["seed"])
    x = _pool_input(case, gen)
    args = (case["kernel"], case["stride"], case["padding"], case["ceil_mode"], count_include_pad, divisor_override)
    try:
        theirs = F.avg_pool2d(x, *args)
    except RuntimeError:  # an input too small for the kernel: refused by both
        with pytest.raises(CnnlabError, match="at least as large as the"):
            avg_pool2d(x, *args)
        return
    _assert_same(avg_pool2d(x, *args), theirs, [x], gen)


@st.composite
def norm_cases(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))  # (N, C), (N, C, L), (N, C, H, W)
    training = draw(st.booleans())
    if training and n * max(1, int(torch.tensor(spatial).prod())) < 2:
        n = 2  # training needs more than one value per channel (tested as an error below)
    return dict(shape=(n, c, *spatial), training=training, affine=draw(st.booleans()),
                running=draw(st.booleans()) or not training, momentum=draw(st.floats(0.0, 1.0)),
                eps=draw(st.sampled_from([1e-5, 1e-3, 0.1] + ([] if training or not BATCH_NORM_TAKES_EPS_0 else
                                                               [0.0]))),  # eps 0: eval only
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=200, deadline=None)
@given(norm_cases())
def test_batch_norm_matches_torch_and_updates_running_stats(case):
    gen = torch.Generator().manual_seed(case["seed"])
    x = _randn(gen, *case["shape"]) * 3 + 1
    c = case["shape"][1]
    weight = _randn(gen, c) if case["affine"] else None
    bias = _randn(gen, c) if case["affine"] else None
    stats = (torch.randn(c, generator=gen, dtype=DT), torch.rand(c, generator=gen, dtype=DT) + 0.5)
    ours_stats = [s.clone() for s in stats] if case["running"] else [None, None]
    theirs_stats = [s.clone() for s in stats] if case["running"] else [None, None]
    kw = dict(training=case["training"], momentum=case["momentum"], eps=case["eps"])
    ours = batch_norm(x, *ours_stats, weight, bias, **kw)
    theirs = F.batch_norm(x, *theirs_stats, weight, bias, **kw)
    if case["running"]:
        for a, b in zip(ours_stats, theirs_stats, strict=True):
            torch.testing.assert_close(a, b, **TOL)
    _assert_same(ours, theirs, [t for t in (x, weight, bias) if t is not None], gen)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 6), st.integers(1, 4), st.integers(0, 3),
       st.integers(1, 3))
def test_conv_output_shape_matches_torch(h, w, k, s, p, d):
    eff = d * (k - 1) + 1
    if h + 2 * p < eff or w + 2 * p < eff:
        with pytest.raises(CnnlabError, match="expected a padded input at least as large"):
            conv_output_shape((h, w), k, s, p, d)
        return
    y = F.conv2d(torch.zeros(1, 1, h, w), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert conv_output_shape((h, w), k, s, p, d) == tuple(y.shape[2:])


def test_conv_output_shape_book_examples():
    assert conv_output_shape((8, 8), 3, padding=1) == (8, 8)  # d2l 7.3.1
    assert conv_output_shape((8, 8), (5, 3), padding=(2, 1)) == (8, 8)
    assert conv_output_shape((8, 8), 3, padding=1, stride=2) == (4, 4)  # d2l 7.3.2
    assert conv_output_shape((8, 8), (3, 5), padding=(0, 1), stride=(3, 4)) == (2, 2)
    assert conv_output_shape((8, 8), 4, padding="same", dilation=2) == (8, 8)


def test_conv2d_gradcheck_and_no_grad_path():
    gen = torch.Generator().manual_seed(0)
    x, w, b = _randn(gen, 2, 4, 6, 5), _randn(gen, 6, 2, 3, 2), _randn(gen, 6)
    assert torch.autograd.gradcheck(lambda *t: conv2d(*t, stride=(2, 1), padding=1, groups=2), (x, w, b))
    with torch.no_grad():
        y = conv2d(x, w, b, padding=1, groups=2)
    assert not y.requires_grad and y.is_contiguous()
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1, groups=2).detach(), **TOL)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_chunks_big_batches_with_the_same_result(monkeypatch, stride):
    """Past COLS_BUDGET the batch runs in chunks and the backward rebuilds im2col per chunk."""
    gen = torch.Generator().manual_seed(2)
    x, w, b = _randn(gen, 5, 4, 7, 6), _randn(gen, 6, 2, 3, 3), _randn(gen, 6)
    monkeypatch.setattr(conv_module, "COLS_BUDGET", 2 * 36 * 7 * 6)  # two images' (4*3*3) x (7*6) matrices
    assert len(conv_module._chunks(x, conv_module._Geometry((3, 3), (1, 1), (1,) * 4, (1, 1), 2, (7, 6), (7, 6)))) == 3
    args = dict(stride=stride, padding=1, groups=2)
    _assert_same(conv2d(x, w, b, **args), F.conv2d(x, w, b, **args), [x, w, b], gen)
    with torch.no_grad():
        torch.testing.assert_close(conv2d(x, w, b, **args), F.conv2d(x, w, b, **args), **TOL)


def test_conv2d_input_without_grad_gives_weight_grad_only():
    gen = torch.Generator().manual_seed(1)
    x, w = _randn(gen, 2, 1, 9, 9, requires_grad=False), _randn(gen, 3, 1, 7, 7)
    _assert_same(conv2d(x, w, stride=2, padding=3), F.conv2d(x, w, stride=2, padding=3), [w], gen)


def test_max_pool2d_of_a_window_of_minus_infinity_points_inside_it_like_torch():
    # The window of output 0 reads a padding row and the -inf pixel 1 (dilation 2): its index was the padding tap
    # clamped into the plane, pixel 0, outside the window, and with a gradient its value became pixel 0's 1.0.
    x = torch.tensor([[[[1.0], [float("-inf")], [2.0]]]], dtype=DT)
    args = dict(kernel_size=(2, 1), stride=1, padding=(1, 0), dilation=(2, 1), return_indices=True)
    for grad in (False, True):
        ours, theirs = max_pool2d(x.clone().requires_grad_(grad), **args), F.max_pool2d(x, **args)
        assert torch.equal(ours[0].detach(), theirs[0]) and torch.equal(ours[1], theirs[1])
    leaf = x.clone().requires_grad_()
    (got,) = torch.autograd.grad(max_pool2d(leaf, **args)[0].sum(), leaf)
    assert got.flatten().tolist() == [0.0, 2.0, 1.0]  # torch's: the -inf pixel 1 is both -inf windows' maximum


def test_max_pool2d_ties_pick_the_first_maximum_like_torch():
    x = torch.zeros(1, 1, 4, 4, dtype=DT, requires_grad=True)
    _assert_same(max_pool2d(x, 2, 1, 1), F.max_pool2d(x, 2, 1, 1), [x], torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [(0, 2, 5, 4), (0, 1, 2, 2)])
def test_pools_take_an_empty_batch_like_torch(shape):
    gen = torch.Generator().manual_seed(3)
    x = _randn(gen, *shape)
    ours, our_idx = max_pool2d(x, 2, 1, 1, return_indices=True)
    theirs, their_idx = F.max_pool2d(x, 2, 1, 1, return_indices=True)
    assert ours.shape == theirs.shape and torch.equal(our_idx, their_idx)
    _assert_same(ours, theirs, [x], gen)
    args = ((2, 1), 1, (1, 0), True, False)  # kernel, stride, padding, ceil_mode, count_include_pad
    _assert_same(avg_pool2d(x, *args), F.avg_pool2d(x, *args), [x], gen)


@pytest.mark.parametrize("shape", [(0, 3, 2, 2), (0, 3), (2, 3, 0, 2), (2, 0, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_of_an_empty_input_matches_torch(shape, training):
    """torch returns the empty input, in training too, and leaves the running statistics alone."""
    gen = torch.Generator().manual_seed(4)
    c = shape[1]
    x = _randn(gen, *shape)
    weight, bias = (_randn(gen, c), _randn(gen, c)) if c else (None, None)  # torch fails on empty weights
    ours_stats, theirs_stats = ([torch.zeros(c, dtype=DT) + 0.3, torch.ones(c, dtype=DT)] for _ in range(2))
    ours = batch_norm(x, *ours_stats, weight, bias, training=training)
    theirs = F.batch_norm(x, *theirs_stats, weight, bias, training=training)
    for a, b in zip(ours_stats, theirs_stats, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _assert_same(ours, theirs, [t for t in (x, weight, bias) if t is not None], gen)


X4 = torch.zeros(2, 3, 8, 8)
W = torch.zeros(4, 3, 3, 3)

BAD_CONV = [
    (dict(input=torch.zeros(8, 8), weight=W), r"expected input of shape \(N, C, H, W\) or \(C, H, W\), got shape"),
    (dict(input=X4, weight=torch.zeros(4, 3, 3)), r"expected weight of shape .*got shape \(4, 3, 3\)"),
    (dict(input=X4, weight=torch.zeros(4, 2, 3, 3)), r"expected weight.shape\[1\] \* groups == in_channels 3"),
    (dict(input=X4, weight=torch.zeros(4, 1, 3, 3), groups=2), r"divisible by groups, got groups=2"),
    (dict(input=X4, weight=torch.zeros(4, 3, 3, 3), groups=0), r"expected groups to be a positive int, got 0"),
    (dict(input=X4, weight=torch.zeros(4, 3, 9, 3)), r"expected a padded input at least as large .* got padded input"),
    (dict(input=X4, weight=W, stride=0), r"expected stride to be positive, got 0"),
    (dict(input=X4, weight=W, dilation=(1, -1)), r"expected dilation to be positive, got \(1, -1\)"),
    (dict(input=X4, weight=W, padding=-1), r"expected padding to be non-negative, got -1"),
    (dict(input=X4, weight=W, padding="full"), r"expected padding to be an int, a pair, 'valid' or 'same'"),
    (dict(input=X4, weight=W, padding="same", stride=2), r"expected stride 1 with padding='same'"),
    (dict(input=X4, weight=W, stride=(1, 2, 3)), r"expected stride to be an int or a pair of ints"),
    (dict(input=X4, weight=W, bias=torch.zeros(3)), r"expected bias of shape \(4,\)"),
    (dict(input=X4, weight=W.double()), r"expected weight of dtype torch.float32"),
    (dict(input=X4.long(), weight=W), r"expected input to be a floating-point tensor, got dtype torch.int64"),
    (dict(input=[[1.0]], weight=W), r"expected input to be a torch.Tensor, got list"),
    # torch refuses these; cnnlab once returned results, or raised IndexError / RuntimeError.
    (dict(input=torch.zeros(4, 5, 0, 1), weight=torch.zeros(1, 5, 1, 1), stride=2, padding=4, dilation=2),
     r"expected non-empty images \(only the batch or the channels may be empty\), got input shape \(4, 5, 0, 1\)"),
    (dict(input=torch.zeros(5, 1, 0), weight=torch.zeros(1, 5, 1, 1), padding=1), r"expected non-empty images"),
    (dict(input=X4, weight=torch.zeros(4, 3, 0, 2)), r"expected a kernel of at least 1x1, got weight shape"),
    (dict(input=X4, weight=torch.zeros(0, 3, 3, 3)), r"expected at least groups=1 out_channels, got weight shape"),
    (dict(input=torch.zeros(2, 0, 8, 8), weight=torch.zeros(0, 0, 3, 3), groups=2), r"at least groups=2 out_"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CONV)
def test_conv2d_bad_input_raises_one_line(kwargs, message):
    with pytest.raises(CnnlabError, match=message) as info:
        conv2d(**kwargs)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


@pytest.mark.parametrize(("fn", "kwargs", "message"), [
    (max_pool2d, dict(input=torch.zeros(8, 8), kernel_size=2), r"expected input of shape \(N, C, H, W\)"),
    (max_pool2d, dict(input=X4, kernel_size=3, padding=2), r"expected padding at most half the kernel size"),
    (max_pool2d, dict(input=X4, kernel_size=9), r"expected a padded input at least as large"),
    (max_pool2d, dict(input=X4, kernel_size=2, stride=0), r"expected stride to be positive"),
    (max_pool2d, dict(input=X4, kernel_size=2, dilation=0), r"expected dilation to be positive"),
    (avg_pool2d, dict(input=X4, kernel_size=2, padding=-1), r"expected padding to be non-negative"),
    (avg_pool2d, dict(input=X4, kernel_size=0), r"expected kernel_size to be positive"),
    (avg_pool2d, dict(input=X4, kernel_size=2, divisor_override=0), r"expected divisor_override to be a positive"),
    (batch_norm, dict(input=torch.zeros(4), running_mean=None, running_var=None), r"expected input of shape \(N, C\)"),
    (batch_norm, dict(input=X4, running_mean=torch.zeros(2), running_var=torch.ones(3)),
     r"expected running_mean of shape \(3,\), one per channel, got shape \(2,\)"),
    (batch_norm, dict(input=X4, running_mean=None, running_var=None), r"expected running_mean and running_var"),
    (batch_norm, dict(input=torch.zeros(1, 3), running_mean=None, running_var=None, training=True),
     r"expected more than 1 value per channel when training"),
    (batch_norm, dict(input=X4, running_mean=None, running_var=None, weight=torch.ones(3).double(), training=True),
     r"expected weight of dtype torch.float32"),
    (conv_output_shape, dict(hw=(8, 8), kernel_size=3, stride=-1), r"expected stride to be positive"),
    # torch refuses these; cnnlab once returned results.
    (avg_pool2d, dict(input=torch.zeros(2, 1, 4, 0), kernel_size=(3, 2), padding=1, count_include_pad=False),
     r"expected non-empty channels and images \(only the batch may be empty\), got channels x height x width 1x4x0"),
    (avg_pool2d, dict(input=torch.zeros(2, 0, 4, 4), kernel_size=2), r"got channels x height x width 0x4x4"),
    (max_pool2d, dict(input=torch.zeros(0, 4, 4), kernel_size=2), r"got channels x height x width 0x4x4"),
    (max_pool2d, dict(input=torch.zeros(0, 1, 4, 0), kernel_size=1), r"expected non-empty channels and images"),
    (batch_norm, dict(input=X4, running_mean=torch.zeros(3), running_var=torch.ones(3), eps=-1e-3),
     r"expected eps > 0 in training \(>= 0 in evaluation\), got -0.001"),
    (batch_norm, dict(input=X4, running_mean=None, running_var=None, training=True, eps=0.0), r"got 0.0"),
    (batch_norm, dict(input=X4, running_mean=torch.zeros(3), running_var=None, training=True),
     r"expected running_mean and running_var both given or both None, got only running_mean"),
    (batch_norm, dict(input=X4, running_mean=None, running_var=torch.ones(3)), r"got only running_var"),
    (batch_norm, dict(input=torch.zeros(2, 0, 4), running_mean=None, running_var=None, weight=torch.ones(0),
                      training=True), r"expected at least one channel when weight or bias is given"),
])
def test_pool_norm_bad_input_raises_one_line(fn, kwargs, message):
    with pytest.raises(CnnlabError, match=message) as info:
        fn(**kwargs)
    assert "\n" not in str(info.value)
