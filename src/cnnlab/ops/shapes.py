"""Output-size arithmetic of convolution and pooling (d2l 7.3), shared by the ops and the public helper.

One spatial side of size ``n``, kernel ``k``, stride ``s``, padding ``p`` on each end and dilation ``d`` gives
``floor((n + 2p - d(k - 1) - 1) / s) + 1`` outputs (d2l eq. 7.3.2, with PyTorch's dilation term).
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import pair

Padding = int | Sequence[int] | str


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int,
                ceil_mode: bool = False) -> int:
    """Number of windows along one side; may be < 1 when the kernel does not fit (the caller reports that)."""
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1 if span >= 0 else 0
    # Rounding up, a kernel a little larger than the padded input still gives one window that overhangs its end,
    # as PyTorch's pooling_output_shape computes it.
    out = -(-span // stride) + 1
    # Like PyTorch's pooling_output_shape: the last window must start inside the input or the left padding.
    if out > 0 and (out - 1) * stride >= size + pad_before:
        out -= 1
    return max(out, 0)


def resolve_padding(padding: Padding, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], op: str) -> tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right), accepting an int, a pair, 'valid' or 'same'.

    'same' follows torch.nn.functional.conv2d: total padding ``d(k - 1)`` per side, the odd pixel at the end, and
    only for stride 1 (with a stride no padding keeps the size).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise CnnlabError(f"{op}: expected stride 1 with padding='same', got stride {stride}")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise CnnlabError(f"{op}: expected padding to be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", op, minimum=0)
    return (ph, ph, pw, pw)


def spatial_output(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                   pads: tuple[int, int, int, int], dilation: tuple[int, int], op: str,
                   ceil_mode: bool = False) -> tuple[int, int]:
    """(out_h, out_w), raising when the dilated kernel is larger than the padded input."""
    oh = output_size(hw[0], kernel[0], stride[0], pads[0], pads[1], dilation[0], ceil_mode)
    ow = output_size(hw[1], kernel[1], stride[1], pads[2], pads[3], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        eff = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
        padded = (hw[0] + pads[0] + pads[1], hw[1] + pads[2] + pads[3])
        raise CnnlabError(f"{op}: expected a padded input at least as large as the (dilated) kernel "
                          f"{eff[0]}x{eff[1]}, got padded input {padded[0]}x{padded[1]}")
    return oh, ow


def conv_output_shape(hw: Sequence[int], kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                      padding: Padding = 0, dilation: int | Sequence[int] = 1) -> tuple[int, int]:
    """Height and width of a convolution's (or pooling's) output, as d2l 7.3 computes them.

    Args:
        hw: input height and width.
        kernel_size, stride, padding, dilation: as for :func:`cnnlab.ops.conv2d` (int or pair; padding may
            also be 'valid' or 'same').

    Returns:
        ``(out_h, out_w)``.

    Example:
        >>> conv_output_shape((8, 8), (3, 5), stride=(3, 4), padding=(0, 1))  # d2l 7.3.2
        (2, 2)
    """
    op = "conv_output_shape"
    size = pair(tuple(hw) if isinstance(hw, Sequence) else hw, "hw", op)
    kernel = pair(kernel_size, "kernel_size", op)
    strides = pair(stride, "stride", op)
    dilations = pair(dilation, "dilation", op)
    pads = resolve_padding(padding, kernel, strides, dilations, op)
    return spatial_output(size, kernel, strides, pads, dilations, op)
