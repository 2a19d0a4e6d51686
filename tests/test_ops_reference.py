"""The book's loops (d2l 7.2, 7.4, 7.5) give the book's printed outputs, and agree with torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.ops import (
    avg_pool2d,
    conv2d,
    corr2d,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
    max_pool2d,
    pool2d,
)

X3 = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
# d2l 7.4.1's two-channel input and kernel.
X_MULTI = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
K_MULTI = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])


def edge_image() -> torch.Tensor:
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    return X


def test_corr2d_book_example():  # d2l 7.2.1
    assert torch.equal(corr2d(X3, torch.tensor([[0.0, 1.0], [2.0, 3.0]])), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


def test_corr2d_accepts_the_book_s_integer_arange_and_a_list_kernel():
    Y = corr2d(torch.arange(9).reshape(3, 3).float(), [[0, 1], [2, 3]])
    assert Y.dtype == torch.float32 and torch.equal(Y, torch.tensor([[19.0, 25.0], [37.0, 43.0]]))
    assert torch.equal(corr2d(torch.arange(9).reshape(3, 3), [[0, 1], [2, 3]]), Y)  # ints give floats, as the book


def test_corr2d_edge_detection():  # d2l 7.2.3
    X, K = edge_image(), torch.tensor([[1.0, -1.0]])
    row = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0])
    assert torch.equal(corr2d(X, K), row.repeat(6, 1))
    assert torch.equal(corr2d(X.t(), K), torch.zeros(8, 5))  # the kernel only sees vertical edges


def test_corr2d_multi_in_book_example():  # d2l 7.4.1
    assert torch.equal(corr2d_multi_in(X_MULTI, K_MULTI), torch.tensor([[56.0, 72.0], [104.0, 120.0]]))


def test_corr2d_multi_in_out_book_example():  # d2l 7.4.2
    K = torch.stack((K_MULTI, K_MULTI + 1, K_MULTI + 2), 0)
    assert K.shape == (3, 2, 2, 2)
    expected = torch.tensor([[[56.0, 72.0], [104.0, 120.0]],
                             [[76.0, 100.0], [148.0, 172.0]],
                             [[96.0, 128.0], [192.0, 224.0]]])
    assert torch.equal(corr2d_multi_in_out(X_MULTI, K), expected)


def test_1x1_convolution_is_a_matrix_product():  # d2l 7.4.3
    gen = torch.Generator().manual_seed(0)
    X = torch.normal(0, 1, (3, 3, 3), generator=gen)
    K = torch.normal(0, 1, (2, 3, 1, 1), generator=gen)
    Y1 = corr2d_multi_in_out_1x1(X, K)
    Y2 = corr2d_multi_in_out(X, K)
    assert float(torch.abs(Y1 - Y2).sum()) < 1e-6


def test_pool2d_book_examples():  # d2l 7.5.1
    assert torch.equal(pool2d(X3, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    assert torch.equal(pool2d(X3, (2, 2), "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_pooling_padding_and_stride_book_examples():  # d2l 7.5.2, with cnnlab's vectorised pooling
    X = torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))
    assert torch.equal(max_pool2d(X, 3), torch.tensor([[[[10.0]]]]))
    assert torch.equal(max_pool2d(X, 3, padding=1, stride=2), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    assert torch.equal(max_pool2d(X, (2, 3), stride=(2, 3), padding=(0, 1)),
                       torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    X2 = torch.cat((X, X + 1), 1)  # d2l 7.5.3: pooling keeps the channels apart
    assert torch.equal(max_pool2d(X2, 3, padding=1, stride=2),
                       torch.tensor([[[[5.0, 7.0], [13.0, 15.0]], [[6.0, 8.0], [14.0, 16.0]]]]))


@pytest.mark.parametrize("seed", range(5))
def test_reference_loops_agree_with_torch_and_the_fast_ops(seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64)
    K = torch.randn(4, 3, 2, 3, generator=gen, dtype=torch.float64)
    expected = F.conv2d(X[None], K)[0]
    torch.testing.assert_close(corr2d_multi_in_out(X, K), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv2d(X[None], K)[0], expected, rtol=1e-12, atol=1e-12)
    plane = X[0]
    torch.testing.assert_close(pool2d(plane, (2, 3)), F.max_pool2d(plane[None], (2, 3), stride=1)[0])
    torch.testing.assert_close(pool2d(plane, (2, 3), "avg"), avg_pool2d(plane[None], (2, 3), stride=1)[0])


def test_book_conv2d_learns_through_corr2d():
    """The book's Conv2D trains through corr2d's element assignments: autograd must reach the kernel."""
    K = torch.tensor([[0.5, -0.25]], requires_grad=True)
    corr2d(edge_image(), K).sum().backward()
    # Each tap reads a 6x7 slice of the edge image, which holds 6 * 3 ones.
    torch.testing.assert_close(K.grad, torch.tensor([[18.0, 18.0]]))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: corr2d(torch.zeros(3, 3, 1), torch.zeros(2, 2)), r"corr2d: expected X with 2 dimensions, got shape"),
    (lambda: corr2d(torch.zeros(3, 3), torch.zeros(4, 2)), r"corr2d: expected a window .* at most the input's 3x3"),
    (lambda: corr2d_multi_in(X_MULTI, K_MULTI[:1]), r"expected one kernel per input channel \(2\), got 1 kernels"),
    (lambda: corr2d_multi_in_out(X_MULTI, K_MULTI), r"expected K with 4 dimensions, got shape \(2, 2, 2\)"),
    (lambda: corr2d_multi_in_out_1x1(X_MULTI, torch.zeros(2, 2, 3, 3)), r"expected K of shape \(2, 2, 1, 1\)"),
    (lambda: pool2d(X3, (2, 2), "min"), r"pool2d: expected mode 'max' or 'avg', got 'min'"),
    (lambda: pool2d(X3, (4, 1)), r"pool2d: expected a window"),
])
def test_reference_bad_input_raises(call, message):
    with pytest.raises(CnnlabError, match=message):
        call()
