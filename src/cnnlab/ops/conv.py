"""conv2d as im2col + one matrix product per group, with a hand-written backward.

The book's corr2d (d2l 7.2) loops over output pixels; here the loop is replaced by linear algebra. With the
channel axis first and the batch second ("CNHW"), every window of every image becomes a column of one
(C*kh*kw) x (N*OH*OW) matrix, and the whole layer is one product with the (O) x (C*kh*kw) weight matrix
(d2l 7.4.3: a 1x1 conv is exactly a fully connected layer applied at every pixel; im2col reduces any kernel
to that case). The same layout makes both backward products single GEMMs without copying the big matrix:

    out     = W    @ cols          (O, NL)
    grad_W  = dOut @ cols^T        (O, C*kh*kw)
    d_cols  = W^T  @ dOut          (C*kh*kw, NL), folded back onto the input (col2im)

For stride 1 the input gradient is instead computed as a forward conv of the output gradient with the flipped
kernel, which needs no scatter. Autograd through unfold/as_strided gives the same numbers, but its generic
as_strided backward was 2-6x slower here, hence the custom autograd.Function. Groups turn each product into one
batched matmul over the groups (ResNeXt, d2l 8.6.5). A backward whose gradients are differentiated again
(``create_graph=True``: a gradient penalty, a Hessian-vector product) computes the same products out of place from
the saved input, so autograd can go through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import check_image_batch, check_like, check_vector, empty_result, pair
from cnnlab.ops._windows import unpad, window_view
from cnnlab.ops.shapes import Padding, resolve_padding, spatial_output

# Most elements of an im2col matrix held at once (128 MB in float32). A 3x3 conv over 64 channels at 224x224
# (VGG, d2l 8.2) needs 29M per image; past this budget the batch runs in chunks and the backward rebuilds the
# matrix from the input rather than keeping it, so memory stays bounded.
COLS_BUDGET = 1 << 25


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


def _input_grad(grad_out: torch.Tensor, g2: torch.Tensor, weight: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """The (N, C, H, W) input gradient from the output gradient (and ``g2``, the same as an (O, N*OH*OW) matrix)."""
    (kh, kw), (dh, dw), (h, w) = geo.kernel, geo.dilation, geo.in_hw
    top, bottom, left, right = geo.pads
    n, o, groups = grad_out.shape[0], weight.shape[0], geo.groups
    c = weight.shape[1] * groups
    if geo.stride == (1, 1) and (kh, kw) == (1, 1) and not any(geo.pads):  # the columns are the pixels
        return _cols_grad(weight, g2, groups).view(c, n, h, w).transpose(0, 1)
    if (geo.stride == (1, 1) and max(top, bottom) <= dh * (kh - 1) and max(left, right) <= dw * (kw - 1)
            and o * h * w <= c * geo.out_hw[0] * geo.out_hw[1]):
        # d2l 7.2.5: the adjoint of a cross-correlation is a cross-correlation with the flipped kernel over the
        # 'fully' padded output, input and output channels swapping roles within each group. Reusing the forward
        # path avoids scattering the column gradient back (col2im), which was slower here for the 3x3 layers of
        # ResNet; it is used when its im2col matrix is no larger than the column gradient (not for LeNet's 6->16).
        flipped = weight.flip(2, 3).reshape(groups, o // groups, c // groups, kh, kw).transpose(1, 2)
        adjoint = _Geometry(geo.kernel, (1, 1), (dh * (kh - 1) - top, dh * (kh - 1) - bottom, dw * (kw - 1) - left,
                            dw * (kw - 1) - right), geo.dilation, groups, geo.out_hw, geo.in_hw)
        return _forward(grad_out, flipped.reshape(c, o // groups, kh, kw), None, adjoint)
    # Otherwise scatter the column gradient back (col2im, i.e. F.fold, which wants the batch dimension first);
    # with a stride the flipped-kernel trick would need zeros between the output pixels.
    cols_grad = _cols_grad(weight, g2, groups).view(c * kh * kw, n, -1).transpose(0, 1)
    fold = dict(kernel_size=geo.kernel, dilation=geo.dilation, stride=geo.stride)
    if top == bottom and left == right:
        return F.fold(cols_grad, geo.in_hw, padding=(top, left), **fold)
    # F.fold pads symmetrically; padding='same' with an even kernel is not: fold onto the padded plane, then crop.
    return unpad(F.fold(cols_grad, (h + top + bottom, w + left + right), **fold), geo.pads)


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    return t.reshape(groups, t.shape[0] // groups, -1)


def _cols_grad(weight: torch.Tensor, g2: torch.Tensor, groups: int) -> torch.Tensor:
    """W^T @ dOut: the gradient of the (C*kh*kw, N*OH*OW) im2col matrix."""
    if groups == 1:
        return weight.reshape(weight.shape[0], -1).t() @ g2
    return torch.bmm(_grouped(weight, groups).transpose(1, 2), _grouped(g2, groups)).view(-1, g2.shape[1])


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geo: _Geometry,
             cols: torch.Tensor | None = None) -> torch.Tensor:
    """The (N, O, OH, OW) output, from ``cols`` = ``_im2col(x, geo)`` when the caller already has it."""
    n, o = x.shape[0], weight.shape[0]
    cols = _im2col(x, geo) if cols is None else cols
    if geo.groups == 1:
        w2 = weight.reshape(o, -1)
        out = torch.addmm(bias.unsqueeze(1), w2, cols) if bias is not None else w2 @ cols
    else:
        wg, cg = _grouped(weight, geo.groups), _grouped(cols, geo.groups)
        out = torch.baddbmm(_grouped(bias, geo.groups), wg, cg) if bias is not None else torch.bmm(wg, cg)
    # Back to the (N, O, H, W) layout everyone expects: one copy of the (small) output.
    return out.view(o, n, *geo.out_hw).transpose(0, 1).contiguous()


def _chunks(x: torch.Tensor, geo: _Geometry) -> list[slice]:
    """Batch slices whose im2col matrices stay within COLS_BUDGET elements (at least one image each)."""
    per_image = x.shape[1] * geo.kernel[0] * geo.kernel[1] * geo.out_hw[0] * geo.out_hw[1]
    step = max(1, COLS_BUDGET // max(per_image, 1))
    return [slice(start, start + step) for start in range(0, x.shape[0], step)]


def _run_chunked(x: torch.Tensor, geo: _Geometry, fn) -> torch.Tensor | None:
    """``fn(x_chunk, chunk)`` over the batch chunks, results concatenated along the batch; None if fn gives None."""
    parts = [fn(x[chunk], chunk) for chunk in _chunks(x, geo)]
    return parts[0] if len(parts) == 1 or parts[0] is None else torch.cat(parts)


class _Conv2dFunction(torch.autograd.Function):
    """conv2d with its backward written as three matrix products (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, geo):
        chunks = _chunks(x, geo)
        if len(chunks) == 1:
            cols = _im2col(x, geo)
            out = _forward(x, weight, bias, geo, cols)
        else:  # too big to keep: the backward rebuilds each chunk's matrix from the input
            cols = None
            out = _run_chunked(x, geo, lambda xc, _: _forward(xc, weight, bias, geo))
        # x as well as its columns, as F.conv2d saves its input: a second-order backward needs the columns' graph
        ctx.save_for_backward(x, cols, weight)
        ctx.geo = geo
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, cols, weight = ctx.saved_tensors
        geo, groups, o = ctx.geo, ctx.geo.groups, weight.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: these gradients will be differentiated in turn
            return (*_differentiable_grads(x, weight, grad_out, geo, need_x, need_w, need_b), None)
        # contiguous whatever the weight's layout (channels-last, as the book's loop sets it): filled through views
        grad_w = weight.new_zeros(weight.shape) if need_w else None
        grad_b = grad_out.sum((0, 2, 3)) if need_b else None

        def chunk_grads(x_chunk, chunk):
            g = grad_out[chunk]
            g2 = g.transpose(0, 1).reshape(o, -1)  # (O, N*OH*OW), the output gradient as a matrix
            if need_w:
                chunk_cols = cols if cols is not None else _im2col(x_chunk, geo)
                if groups == 1:
                    grad_w.view(o, -1).addmm_(g2, chunk_cols.t())
                else:
                    grad_w.view(groups, o // groups, -1).baddbmm_(_grouped(g2, groups),
                                                                _grouped(chunk_cols, groups).transpose(1, 2))
            return _input_grad(g, g2, weight, geo) if need_x else None

        grad_x = chunk_grads(None, slice(None)) if cols is not None else _run_chunked(x, geo, chunk_grads)
        return grad_x, grad_w, grad_b, None


def _differentiable_grads(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, geo: _Geometry,
                          need_x: bool, need_w: bool, need_b: bool) -> tuple[torch.Tensor | None, ...]:
    """The backward's three products, out of place and from columns rebuilt from ``x``, so that autograd records
    them (the first-order backward accumulates in place into buffers it made, and reuses columns without a graph)."""
    o, groups = weight.shape[0], geo.groups
    g2 = grad_out.transpose(0, 1).reshape(o, -1)
    grad_w = None
    if need_w:
        cols = _im2col(x, geo)
        if groups == 1:
            grad_w = (g2 @ cols.t()).view(weight.shape)
        else:
            grad_w = torch.bmm(_grouped(g2, groups), _grouped(cols, groups).transpose(1, 2)).reshape(weight.shape)
    grad_x = _input_grad(grad_out, g2, weight, geo) if need_x else None
    return grad_x, grad_w, grad_out.sum((0, 2, 3)) if need_b else None


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
        CnnlabError: on mismatched shapes, dtypes or devices, a kernel larger than the padded input, or empty
            images (an empty batch, or no input channels, gives an empty output as F.conv2d does).

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
    if o < groups:  # also the zero out_channels that the divisibility test below lets through
        raise CnnlabError(f"{op}: expected at least groups={groups} out_channels, got weight shape "
                          f"{tuple(weight.shape)}")
    if c % groups or o % groups:
        raise CnnlabError(f"{op}: expected in_channels {c} and out_channels {o} divisible by groups, "
                          f"got groups={groups}")
    if weight.shape[1] * groups != c:
        raise CnnlabError(f"{op}: expected weight.shape[1] * groups == in_channels {c}, "
                          f"got weight shape {tuple(weight.shape)} with groups={groups}")
    check_vector(bias, o, "bias", op)
    kernel = (weight.shape[2], weight.shape[3])
    if kernel[0] < 1 or kernel[1] < 1:
        raise CnnlabError(f"{op}: expected a kernel of at least 1x1, got weight shape {tuple(weight.shape)}")
    strides, dilations = pair(stride, "stride", op), pair(dilation, "dilation", op)
    pads = resolve_padding(padding, kernel, strides, dilations, op)
    in_hw = (x.shape[2], x.shape[3])
    geo = _Geometry(kernel, strides, pads, dilations, groups, in_hw,
                    spatial_output(in_hw, kernel, strides, pads, dilations, op))
    # F.conv2d's rules for empty input (ATen's Convolution.cpp, ConvBackend::Empty): an empty batch gives an empty
    # batch of the usual shape, no input channels give no output channels either, empty images are refused.
    empty = x.numel() == 0
    if empty and x.shape[0] and c:
        raise CnnlabError(f"{op}: expected non-empty images (only the batch or the channels may be empty), "
                          f"got input shape {tuple(input.shape)}")
    wants_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if empty:
        out = empty_result((x.shape[0], o if c else 0, *geo.out_hw), x, weight, bias)
    elif wants_grad and torch.is_grad_enabled():
        out = _Conv2dFunction.apply(x, weight, bias, geo)
    else:  # inference: plain tensor ops, nothing kept for a backward
        out = _run_chunked(x, geo, lambda xc, _: _forward(xc, weight, bias, geo))
    return out.squeeze(0) if unbatched else out
