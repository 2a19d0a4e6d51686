"""conv2d as im2col + one matrix product per group, with a hand-written backward.

The book's corr2d (d2l 7.2) loops over output pixels; here the loop is replaced by linear algebra. With the
channel axis first and the batch second ("CNHW"), every window of every image becomes a column of one
(C*kh*kw) x (N*OH*OW) matrix, and the whole layer is one product with the (O) x (C*kh*kw) weight matrix
(d2l 7.4.3: a 1x1 conv is exactly a fully connected layer applied at every pixel; im2col reduces any kernel
to that case). The same layout makes both backward products single GEMMs without copying the big matrix:

    out     = W    @ cols          (O, NL)
    grad_W  = dOut @ cols^T        (O, C*kh*kw)
    d_cols  = W^T  @ dOut          (C*kh*kw, NL), then scattered back onto the input (col2im)

Autograd through unfold/as_strided gives the same numbers but its generic as_strided backward was 2-6x slower
on this CPU (measured in benchmarks/ops.py's development), hence the custom autograd.Function. Groups reshape
the products into one batched matmul over the groups (ResNeXt, d2l 8.6.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import check_image_batch, check_like, check_vector, pair
from cnnlab.ops._windows import add_windows, unpad, window_view
from cnnlab.ops.shapes import Padding, resolve_padding, spatial_output


class _Geometry(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    groups: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _im2col(x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """The (C*kh*kw, N*OH*OW) matrix whose columns are the input's windows, rows ordered (c, i, j)."""
    n, c, h, w = x.shape
    top, bottom, left, right = geo.pads
    if any(geo.pads):
        # Zero-pad straight into the CNHW layout: one copy, instead of F.pad followed by a transpose.
        buffer = x.new_zeros(c, n, h + top + bottom, w + left + right)
        buffer[:, :, top:top + h, left:left + w] = x.transpose(0, 1)
    else:
        buffer = x.transpose(0, 1)  # a view: window_view reads any strides
    windows = window_view(buffer, geo.kernel, geo.stride, geo.dilation, geo.out_hw)  # C, N, OH, OW, kh, kw
    kh, kw = geo.kernel
    return windows.permute(0, 4, 5, 1, 2, 3).reshape(c * kh * kw, n * geo.out_hw[0] * geo.out_hw[1])


def _col2im(cols_grad: torch.Tensor, n: int, c: int, geo: _Geometry) -> torch.Tensor:
    """Adjoint of :func:`_im2col`: the (N, C, H, W) input gradient from the (C*kh*kw, N*OH*OW) column gradient."""
    (kh, kw), (oh, ow), (h, w) = geo.kernel, geo.out_hw, geo.in_hw
    taps = cols_grad.view(c, kh, kw, n, oh, ow)
    if (kh, kw) == (1, 1) and geo.stride == (1, 1) and not any(geo.pads):
        return taps.view(c, n, h, w).transpose(0, 1)  # 1x1 conv: the columns are the pixels
    top, bottom, left, right = geo.pads
    buffer = cols_grad.new_zeros(c, n, h + top + bottom, w + left + right)
    add_windows(buffer, lambda i, j: taps[:, i, j], geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    return unpad(buffer, geo.pads).transpose(0, 1)


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    return t.reshape(groups, t.shape[0] // groups, -1)


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             geo: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, O, OH, OW) output and the im2col matrix (kept for the backward)."""
    n, o = x.shape[0], weight.shape[0]
    cols = _im2col(x, geo)
    if geo.groups == 1:
        w2 = weight.reshape(o, -1)
        out = torch.addmm(bias.unsqueeze(1), w2, cols) if bias is not None else w2 @ cols
    else:
        wg, cg = _grouped(weight, geo.groups), _grouped(cols, geo.groups)
        out = torch.baddbmm(_grouped(bias, geo.groups), wg, cg) if bias is not None else torch.bmm(wg, cg)
    # Back to the (N, O, H, W) layout everyone expects: one copy of the (small) output.
    return out.view(o, n, *geo.out_hw).transpose(0, 1).contiguous(), cols


class _Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geo):
        out, cols = _forward(x, weight, bias, geo)
        ctx.save_for_backward(cols, weight)
        ctx.geo, ctx.n, ctx.has_bias = geo, x.shape[0], bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        cols, weight = ctx.saved_tensors
        geo, groups, o = ctx.geo, ctx.geo.groups, weight.shape[0]
        g2 = grad_out.transpose(0, 1).reshape(o, -1)  # (O, N*OH*OW), the output gradient as a matrix
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if groups == 1:
                cols_grad = weight.reshape(o, -1).t() @ g2
            else:
                cols_grad = torch.bmm(_grouped(weight, groups).transpose(1, 2), _grouped(g2, groups))
            grad_x = _col2im(cols_grad.view(cols.shape), ctx.n, cols.shape[0] // (geo.kernel[0] * geo.kernel[1]), geo)
        if ctx.needs_input_grad[1]:
            if groups == 1:
                grad_w = (g2 @ cols.t()).view(weight.shape)
            else:
                grad_w = torch.bmm(_grouped(g2, groups), _grouped(cols, groups).transpose(1, 2)).view(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(1)
        return grad_x, grad_w, grad_b, None


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | Sequence[int] = 1, padding: Padding = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> torch.Tensor:
    """2-D cross-correlation with the signature and results of ``torch.nn.functional.conv2d``.

    Args:
        input: (N, C, H, W), or (C, H, W) for one unbatched image.
        weight: (O, C / groups, kh, kw).
        bias: optional (O,).
        stride, dilation: int or (h, w) pair, positive.
        padding: int or (h, w) pair of zeros added on both sides, or 'valid' (none) or 'same' (stride 1 only).
        groups: split the channels into this many independent convolutions.

    Returns:
        (N, O, OH, OW) (or (O, OH, OW) for unbatched input); gradients flow to input, weight and bias.

    Raises:
        CnnlabError: on mismatched shapes, dtypes or devices, or a kernel larger than the padded input.

    Example:
        >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
        >>> conv2d(x, torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))  # d2l 7.2.1
        tensor([[[[19., 25.],
                  [37., 43.]]]])
    """
    op = "conv2d"
    unbatched = check_image_batch(input, op)
    check_like(input, weight, "weight", op)
    check_like(input, bias, "bias", op)
    if weight.dim() != 4:
        raise CnnlabError(f"{op}: expected weight of shape (out_channels, in_channels/groups, kH, kW), "
                          f"got shape {tuple(weight.shape)}")
    x = input.unsqueeze(0) if unbatched else input
    c, o = x.shape[1], weight.shape[0]
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise CnnlabError(f"{op}: expected groups to be a positive int, got {groups!r}")
    if c % groups or o % groups:
        raise CnnlabError(f"{op}: expected in_channels {c} and out_channels {o} divisible by groups, "
                          f"got groups={groups}")
    if weight.shape[1] * groups != c:
        raise CnnlabError(f"{op}: expected weight.shape[1] * groups == in_channels {c}, "
                          f"got weight shape {tuple(weight.shape)} with groups={groups}")
    check_vector(bias, o, "bias", op)
    kernel = (weight.shape[2], weight.shape[3])
    strides, dilations = pair(stride, "stride", op), pair(dilation, "dilation", op)
    pads = resolve_padding(padding, kernel, strides, dilations, op)
    in_hw = (x.shape[2], x.shape[3])
    geo = _Geometry(kernel, strides, pads, dilations, groups, in_hw,
                    spatial_output(in_hw, kernel, strides, pads, dilations, op))
    wants_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if wants_grad and torch.is_grad_enabled():
        out = _Conv2dFunction.apply(x, weight, bias, geo)
    else:
        out = _forward(x, weight, bias, geo)[0]  # inference: plain tensor ops, nothing kept for a backward
    return out.squeeze(0) if unbatched else out
