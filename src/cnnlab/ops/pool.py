"""Max and average pooling (d2l 7.5) over an as_strided window view, with torch.nn.functional's semantics.

Max pooling takes the arg-max of every window in one reduction, then gathers those input pixels, so autograd's
gather backward (a scatter-add) routes each gradient to the pixel that won, as PyTorch does. Average pooling
sums each window and divides by PyTorch's divisor; its backward spreads the gradient back over the window with
one strided add per kernel tap (:func:`cnnlab.ops._windows.add_windows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import check_image_batch, pair
from cnnlab.ops._windows import add_windows, pad_value, unpad, window_view
from cnnlab.ops.shapes import spatial_output

IntPair = int | Sequence[int]


def pool_args(op: str, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, dilation: IntPair):
    """(kernel, stride, padding, dilation) as pairs, stride defaulting to the kernel; raises on bad values."""
    kernel = pair(kernel_size, "kernel_size", op)
    strides = kernel if stride is None else pair(stride, "stride", op)
    pad = pair(padding, "padding", op, minimum=0)
    dilations = pair(dilation, "dilation", op)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        # PyTorch's rule too: otherwise an undilated window could hold only padding.
        raise CnnlabError(f"{op}: expected padding at most half the kernel size {kernel}, got padding {pad}")
    return kernel, strides, pad, dilations


def _geometry(x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, dilation: IntPair,
              ceil_mode: bool, op: str):
    """Parsed arguments, output size, and the (top, bottom, left, right) padding the window view needs."""
    kernel, strides, pad, dilations = pool_args(op, kernel_size, stride, padding, dilation)
    if 0 in x.shape[1:]:
        # PyTorch's pool2d_shape_check: only the batch may be empty (an unbatched input here has a batch of 1).
        raise CnnlabError(f"{op}: expected non-empty channels and images (only the batch may be empty), "
                          f"got channels x height x width {x.shape[1]}x{x.shape[2]}x{x.shape[3]}")
    in_hw = (x.shape[-2], x.shape[-1])
    out_hw = spatial_output(in_hw, kernel, strides, (pad[0], pad[0], pad[1], pad[1]), dilations, op, ceil_mode)
    for a in (0, 1):
        if _padding_only_window(in_hw[a], kernel[a], strides[a], pad[a], dilations[a]):
            # PyTorch returns -inf and an out-of-range index there; a silent -inf is worse than an error.
            raise CnnlabError(f"{op}: expected every window to reach the input, got a window of only padding "
                              f"(input {in_hw}, kernel {kernel}, stride {strides}, padding {pad}, "
                              f"dilation {dilations})")
    # ceil_mode's last window may run past the padding: pad the far side just enough for the view.
    far = [max(pad[a], (out_hw[a] - 1) * strides[a] + dilations[a] * (kernel[a] - 1) + 1 - in_hw[a] - pad[a])
           for a in (0, 1)]
    return kernel, strides, pad, dilations, in_hw, out_hw, (pad[0], far[0], pad[1], far[1])


def _padding_only_window(size: int, kernel: int, stride: int, pad: int, dilation: int) -> bool:
    """Whether a dilated window's taps all fall in the padding. Only windows starting inside the left padding
    can (the last window always starts before the input's end), so this loops over at most ``pad`` starts."""
    if dilation == 1 or pad == 0:
        return False  # with pad <= kernel // 2 an undilated window always reaches the input
    for start in range(0, pad, stride):
        if not any(pad <= start + t * dilation < pad + size for t in range(kernel)):
            return True
    return False


def max_pool2d(input: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Maximum over each window, as ``torch.nn.functional.max_pool2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: window (h, w) or int.
        stride: defaults to ``kernel_size``.
        padding: implicit -inf border on both sides, at most half the kernel.
        dilation: spacing between window taps.
        ceil_mode: round the output size up, letting the last window overhang.
        return_indices: also return the flat index (row * W + col) of each maximum in its input plane.

    Returns:
        The pooled tensor, and the indices when asked. On ties the first maximum in row-major window order wins.

    Example:
        >>> max_pool2d(torch.arange(9.0).reshape(1, 1, 3, 3), 2, stride=1)  # d2l 7.5.1
        tensor([[[[4., 5.],
                  [7., 8.]]]])
    """
    op = "max_pool2d"
    unbatched = check_image_batch(input, op)
    x = input.unsqueeze(0) if unbatched else input
    kernel, strides, pad, dilations, (h, w), out_hw, view_pads = _geometry(
        x, kernel_size, stride, padding, dilation, ceil_mode, op)
    padded = pad_value(x.detach(), view_pads, float("-inf"))
    windows = window_view(padded, kernel, strides, dilations, out_hw).flatten(4)  # N, C, OH, OW, kh*kw
    values, tap = windows.max(dim=4)
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if (needs_grad or return_indices) and any(view_pads):
        # A window whose real pixels are all -inf may find its first maximum on a padding tap; torch then points at
        # the window's first real pixel (a tap of the window: with a dilation, clamping a padding tap's position
        # into the plane can leave the window, and the value and the gradient would come from outside it).
        real = pad_value(torch.ones(1, 1, h, w, device=x.device), view_pads, 0.0)
        first_real = window_view(real, kernel, strides, dilations, out_hw).flatten(4).argmax(dim=4)
        tap = torch.where(values == float("-inf"), first_real, tap)
    if needs_grad or return_indices:
        ar_h = torch.arange(out_hw[0], device=x.device).view(-1, 1) * strides[0] - pad[0]
        ar_w = torch.arange(out_hw[1], device=x.device) * strides[1] - pad[1]
        rows = ar_h + torch.div(tap, kernel[1], rounding_mode="floor") * dilations[0]
        cols = ar_w + (tap % kernel[1]) * dilations[1]
        index = rows * w + cols
        if needs_grad:
            values = x.flatten(2).gather(2, index.flatten(2)).view(values.shape)
    if unbatched:
        values = values.squeeze(0)
    if return_indices:
        return values, index.squeeze(0) if unbatched else index
    return values


class _WindowMean(torch.autograd.Function):
    """Sum over each window divided by a per-output divisor; the backward spreads gradients over the window."""

    @staticmethod
    def forward(ctx, x, kernel, strides, view_pads, out_hw, divisor):
        padded = pad_value(x, view_pads, 0.0)
        out = window_view(padded, kernel, strides, (1, 1), out_hw).sum(dim=(4, 5)).div_(divisor)
        ctx.geo = (kernel, strides, view_pads, out_hw, padded.shape)
        ctx.divisor = divisor
        return out

    @staticmethod
    def backward(ctx, grad_out):
        kernel, strides, view_pads, out_hw, padded_shape = ctx.geo
        share = grad_out / ctx.divisor
        buffer = grad_out.new_zeros(padded_shape)
        add_windows(buffer, lambda i, j: share, kernel, strides, (1, 1), out_hw)
        return unpad(buffer, view_pads), None, None, None, None, None


def _avg_divisor(in_hw, out_hw, kernel, strides, pad, count_include_pad, device, dtype) -> torch.Tensor:
    """PyTorch's avg_pool2d divisor per output pixel: window size clipped to the padded (or, without
    count_include_pad, the unpadded) input. Windows are rectangles, so it is a product of per-axis counts."""
    counts = []
    for a in (0, 1):
        start = torch.arange(out_hw[a], device=device) * strides[a] - pad[a]
        end = torch.clamp(start + kernel[a], max=in_hw[a] + pad[a])
        if not count_include_pad:
            start, end = start.clamp(min=0), end.clamp(max=in_hw[a])
        counts.append((end - start).to(dtype))
    return counts[0].view(-1, 1) * counts[1]


def avg_pool2d(input: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None
               ) -> torch.Tensor:
    """Mean over each window, as ``torch.nn.functional.avg_pool2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: window (h, w) or int.
        stride: defaults to ``kernel_size``.
        padding: implicit zero border on both sides, at most half the kernel.
        ceil_mode: round the output size up, letting the last window overhang (the overhang is never counted).
        count_include_pad: count the zero padding in the divisor (PyTorch's default).
        divisor_override: divide every window sum by this instead.

    Example:
        >>> avg_pool2d(torch.arange(9.0).reshape(1, 1, 3, 3), 2, stride=1)  # d2l 7.5.1
        tensor([[[[2., 3.],
                  [5., 6.]]]])
    """
    op = "avg_pool2d"
    unbatched = check_image_batch(input, op)
    x = input.unsqueeze(0) if unbatched else input
    kernel, strides, pad, _, in_hw, out_hw, view_pads = _geometry(x, kernel_size, stride, padding, 1, ceil_mode, op)
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or isinstance(divisor_override, bool) or divisor_override < 1:
            raise CnnlabError(f"{op}: expected divisor_override to be a positive int, got {divisor_override!r}")
        divisor = float(divisor_override)
    elif (count_include_pad or not any(pad)) and not ceil_mode:
        divisor = float(kernel[0] * kernel[1])  # every window is whole: skip the per-pixel divisor
    else:
        divisor = _avg_divisor(in_hw, out_hw, kernel, strides, pad, count_include_pad, x.device, x.dtype)
    out = _WindowMean.apply(x, kernel, strides, view_pads, out_hw, divisor)
    return out.squeeze(0) if unbatched else out
