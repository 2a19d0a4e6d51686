"""nn.Module wrappers over :mod:`cnnlab.ops`: drop-in twins of torch.nn's conv, pooling and batch-norm layers.

``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``BatchNorm1d`` and ``BatchNorm2d`` take torch.nn's constructor
arguments, initialise their parameters exactly as torch.nn does (same calls, same order, so the same seed gives
the same weights), and hold the same parameters and buffers under the same names, so state_dicts move between a
model built on torch.nn and one built on these both ways. They are plain nn.Module subclasses (not subclasses of
torch's layers); ``cnnlab.models.init.init_cnn`` initialises their Conv2d as torch's.
``Conv2D`` is the book's own learnable layer over the reference loop (d2l 7.2.2).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.ops import avg_pool2d, batch_norm, conv2d, corr2d, max_pool2d
from cnnlab.ops._checks import pair
from cnnlab.ops.pool import pool_args
from cnnlab.ops.shapes import resolve_padding

IntPair = int | tuple[int, int]


class Conv2D(nn.Module):
    """The book's convolutional layer: one 2-D kernel and a scalar bias over :func:`cnnlab.ops.corr2d` (d2l 7.2.2).

    Example:
        >>> Conv2D((1, 2))(torch.ones(6, 8)).shape
        torch.Size([6, 7])
    """

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return corr2d(x, self.weight) + self.bias


def _positive_int(value: object, name: str, op: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CnnlabError(f"{op}: expected {name} to be a positive int, got {value!r}")
    return value


class Conv2d(nn.Module):
    """2-D convolution over :func:`cnnlab.ops.conv2d`, a drop-in for ``torch.nn.Conv2d``.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: int or (h, w) pair.
        padding: int, (h, w) pair, 'valid' or 'same'.
        groups: independent channel groups (both channel counts must be divisible by it).
        bias: learn an additive bias per output channel.
        padding_mode: 'zeros', or 'reflect' / 'replicate' / 'circular' (padded with torch.nn.functional.pad first,
            as torch.nn.Conv2d does).
        device, dtype: where and how the parameters are created.
    """

    _padding_modes = ("zeros", "reflect", "replicate", "circular")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair | str = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        op = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", op)
        self.out_channels = _positive_int(out_channels, "out_channels", op)
        self.groups = _positive_int(groups, "groups", op)
        if in_channels % groups or out_channels % groups:
            raise CnnlabError(f"{op}: expected in_channels {in_channels} and out_channels {out_channels} "
                              f"divisible by groups, got groups={groups}")
        if padding_mode not in self._padding_modes:
            raise CnnlabError(f"{op}: expected padding_mode in {self._padding_modes}, got {padding_mode!r}")
        self.kernel_size = pair(kernel_size, "kernel_size", op)
        self.stride = pair(stride, "stride", op)
        self.dilation = pair(dilation, "dilation", op)
        self._pads = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, op)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", op, minimum=0)
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.Conv2d's init: Kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
        weight and bias (why that a: https://github.com/pytorch/pytorch/issues/57109)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        top, bottom, left, right = self._pads
        x = F.pad(x, (left, right, top, bottom), mode=self.padding_mode)
        return conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class MaxPool2d(nn.Module):
    """Max pooling over :func:`cnnlab.ops.max_pool2d`, a drop-in for ``torch.nn.MaxPool2d`` (stride defaults to
    the kernel size)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 dilation: IntPair = 1, return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        pool_args("MaxPool2d", kernel_size, stride, padding, dilation)  # fail here, not at the first forward
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(nn.Module):
    """Average pooling over :func:`cnnlab.ops.avg_pool2d`, a drop-in for ``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        pool_args("AvgPool2d", kernel_size, stride, padding, 1)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          self.divisor_override)

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s


class _BatchNorm(nn.Module):
    """Batch normalization (d2l 8.5) over :func:`cnnlab.ops.batch_norm` with torch.nn's parameters, buffers and
    train/eval behaviour: batch statistics and running-stat updates in training, running statistics in eval
    (or batch statistics when ``track_running_stats=False``); ``momentum=None`` keeps a cumulative average."""

    _version = 2  # torch's: state_dicts with num_batches_tracked
    _dims: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features", type(self).__name__)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        # Registered even when absent (None), as torch.nn does, so both list the same parameter names.
        self.register_parameter("weight", nn.Parameter(torch.empty(num_features, **factory)) if affine else None)
        self.register_parameter("bias", nn.Parameter(torch.empty(num_features, **factory)) if affine and bias else None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        # A state_dict of version 1 (before num_batches_tracked) loads into torch's layers keeping the layer's own
        # count (0 on the meta device, which holds no value)
        key = prefix + "num_batches_tracked"
        if local_metadata.get("version", 1) < 2 and self.track_running_stats and key not in state_dict:
            own = self.num_batches_tracked
            state_dict[key] = own if own.device.type != "meta" else torch.zeros((), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() not in self._dims:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise CnnlabError(f"{name}: expected input of shape {self._layout}, got {got}")
        if x.shape[1] != self.num_features:
            raise CnnlabError(f"{name}: expected {self.num_features} channels (dimension 1), "
                              f"got shape {tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch.nn
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        # In training without tracking nothing is recorded; in eval the running statistics normalise.
        track = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                          self.weight, self.bias, use_batch_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input, a drop-in for ``torch.nn.BatchNorm1d`` (d2l 8.5.2 for dense
    layers)."""

    _dims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input, per channel, a drop-in for ``torch.nn.BatchNorm2d`` (d2l 8.5.2)."""

    _dims = (4,)
    _layout = "(N, C, H, W)"


def layer_set(ops: str = "torch") -> SimpleNamespace:
    """The layer classes a model builder uses: torch.nn's (``"torch"``) or cnnlab's own (``"scratch"``).

    Both sets take the same constructor arguments and produce the same state_dict keys, so a model built on
    one loads the other's weights.
    """
    if ops == "torch":
        return SimpleNamespace(
            Conv2d=nn.Conv2d, MaxPool2d=nn.MaxPool2d, AvgPool2d=nn.AvgPool2d,
            BatchNorm2d=nn.BatchNorm2d, BatchNorm1d=nn.BatchNorm1d,
        )
    if ops == "scratch":
        return SimpleNamespace(
            Conv2d=Conv2d, MaxPool2d=MaxPool2d, AvgPool2d=AvgPool2d,
            BatchNorm2d=BatchNorm2d, BatchNorm1d=BatchNorm1d,
        )
    raise CnnlabError(f"expected ops 'torch' or 'scratch', got {ops!r}")
