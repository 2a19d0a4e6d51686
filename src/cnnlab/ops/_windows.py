"""Sliding windows without a Python loop over pixels: an as_strided view, and its adjoint (a scatter-add).

A window op reads, for every output pixel (oh, ow) and kernel tap (i, j), the input pixel
``(oh * s_h + i * d_h, ow * s_w + j * d_w)``. ``window_view`` exposes all of those reads as one 6-D strided view
of the (already padded) input, sharing its memory: conv2d reshapes it into the im2col matrix, pooling reduces
over its last two dimensions. ``add_windows`` is the transpose: it adds a value per (tap, output pixel) back
onto the input pixels it came from, which is col2im / the backward of both ops. It loops over the kh * kw taps
(9 for a 3x3 kernel), never over pixels; each step is one strided tensor add.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_view(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                out_hw: tuple[int, int]) -> torch.Tensor:
    """The (A, B, OH, OW, kh, kw) view of every window of a 4-D tensor (A, B, H, W) of any strides."""
    sa, sb, sh, sw = x.stride()
    size = (x.shape[0], x.shape[1], out_hw[0], out_hw[1], kernel[0], kernel[1])
    strides = (sa, sb, stride[0] * sh, stride[1] * sw, dilation[0] * sh, dilation[1] * sw)
    return x.as_strided(size, strides)


def add_windows(buffer: torch.Tensor, tap: Callable[[int, int], torch.Tensor], kernel: tuple[int, int],
                stride: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Add ``tap(i, j)`` (shape (A, B, OH, OW)) onto the input pixels that kernel tap (i, j) read; in place.

    ``buffer`` is the (A, B, H, W) gradient of the padded input, usually zeros. Returns it.
    """
    oh, ow = out_hw
    for i in range(kernel[0]):
        top = i * dilation[0]
        rows = slice(top, top + stride[0] * (oh - 1) + 1, stride[0])
        for j in range(kernel[1]):
            left = j * dilation[1]
            buffer[:, :, rows, left:left + stride[1] * (ow - 1) + 1:stride[1]] += tap(i, j)
    return buffer


def pad_value(x: torch.Tensor, pads: tuple[int, int, int, int], value: float) -> torch.Tensor:
    """``x`` (A, B, H, W) with ``pads`` = (top, bottom, left, right) rows/columns of ``value`` around it."""
    if not any(pads):
        return x
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def unpad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """The inverse crop of :func:`pad_value` (a view)."""
    top, bottom, left, right = pads
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
