"""The book's readable loops (d2l 7.2, 7.4, 7.5): one output element per Python iteration.

They are kept exactly as the book writes them (plus input checks, and outputs that follow the inputs' dtype and
device instead of always float32 on the CPU) because they define what the fast ops in this package must compute;
the tests hold both to torch.nn.functional. Use them to read, not to train: they are thousands of times slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import pair


def _as_tensor(t: torch.Tensor | Sequence, name: str, op: str, dim: int) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() != dim:
        raise CnnlabError(f"{op}: expected {name} with {dim} dimensions, got shape {tuple(t.shape)}")
    return t


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # The book's outputs are torch.zeros (float32): integer inputs give floats, float64 inputs stay float64.
    dtype = torch.result_type(*tensors) if len(tensors) == 2 else tensors[0].dtype
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _check_fits(x: torch.Tensor, h: int, w: int, op: str) -> None:
    if h > x.shape[-2] or w > x.shape[-1] or h < 1 or w < 1:
        raise CnnlabError(f"{op}: expected a window of at least 1x1 and at most the input's "
                          f"{x.shape[-2]}x{x.shape[-1]}, got {h}x{w}")


def corr2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """2-D cross-correlation of one (h, w) input with one (kh, kw) kernel (d2l 7.2.1).

    Example:
        >>> corr2d(torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        tensor([[19., 25.],
                [37., 43.]])
    """
    X, K = _as_tensor(X, "X", "corr2d", 2), _as_tensor(K, "K", "corr2d", 2)
    h, w = K.shape
    _check_fits(X, h, w, "corr2d")
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=_float_dtype(X, K), device=X.device)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def corr2d_multi_in(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Cross-correlate each of the c input channels with its own kernel and sum the results (d2l 7.4.1).

    Args:
        X: (c, h, w).
        K: (c, kh, kw).

    Example:
        >>> X = torch.tensor([[[0.0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]])
        >>> K = torch.tensor([[[0.0, 1], [2, 3]], [[1.0, 2], [3, 4]]])
        >>> corr2d_multi_in(X, K)
        tensor([[ 56.,  72.],
                [104., 120.]])
    """
    X, K = _as_tensor(X, "X", "corr2d_multi_in", 3), _as_tensor(K, "K", "corr2d_multi_in", 3)
    if X.shape[0] != K.shape[0]:
        # zip() would silently drop the extra channels.
        raise CnnlabError(f"corr2d_multi_in: expected one kernel per input channel ({X.shape[0]}), "
                          f"got {K.shape[0]} kernels")
    return sum(corr2d(x, k) for x, k in zip(X, K, strict=True))


def corr2d_multi_in_out(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """One multi-input cross-correlation per output channel, stacked (d2l 7.4.2).

    Args:
        X: (c_i, h, w).
        K: (c_o, c_i, kh, kw).

    Returns:
        (c_o, h - kh + 1, w - kw + 1).
    """
    K = _as_tensor(K, "K", "corr2d_multi_in_out", 4)
    return torch.stack([corr2d_multi_in(X, k) for k in K], 0)


def corr2d_multi_in_out_1x1(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution as one matrix product, a fully connected layer at every pixel (d2l 7.4.3).

    Args:
        X: (c_i, h, w).
        K: (c_o, c_i, 1, 1).
    """
    X, K = _as_tensor(X, "X", "corr2d_multi_in_out_1x1", 3), _as_tensor(K, "K", "corr2d_multi_in_out_1x1", 4)
    c_i, h, w = X.shape
    c_o = K.shape[0]
    if tuple(K.shape[1:]) != (c_i, 1, 1):
        raise CnnlabError(f"corr2d_multi_in_out_1x1: expected K of shape ({c_o}, {c_i}, 1, 1), got {tuple(K.shape)}")
    X = X.reshape((c_i, h * w))
    K = K.reshape((c_o, c_i))
    # Matrix multiplication in the fully connected layer
    Y = torch.matmul(K, X)
    return Y.reshape((c_o, h, w))


def pool2d(X: torch.Tensor, pool_size: tuple[int, int], mode: str = "max") -> torch.Tensor:
    """Maximum or average over every (p_h, p_w) window of a 2-D input, stride 1, no padding (d2l 7.5.1).

    Example:
        >>> pool2d(torch.arange(9.0).reshape(3, 3), (2, 2), "avg")
        tensor([[2., 3.],
                [5., 6.]])
    """
    X = _as_tensor(X, "X", "pool2d", 2)
    if mode not in ("max", "avg"):
        # The book's loop would silently return zeros.
        raise CnnlabError(f"pool2d: expected mode 'max' or 'avg', got {mode!r}")
    p_h, p_w = pair(pool_size, "pool_size", "pool2d")
    _check_fits(X, p_h, p_w, "pool2d")
    X = X.to(_float_dtype(X))
    Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1), dtype=X.dtype, device=X.device)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            if mode == "max":
                Y[i, j] = X[i: i + p_h, j: j + p_w].max()
            elif mode == "avg":
                Y[i, j] = X[i: i + p_h, j: j + p_w].mean()
    return Y
