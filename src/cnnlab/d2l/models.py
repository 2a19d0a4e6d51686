"""The networks the d2l library ships for chapters 7-8, written the book's way with Lazy layers.

``LeNet`` (d2l 7.6), ``Residual`` (d2l 8.6.2, also in d2l-zh 7.6.1's form) and ``ResNeXtBlock`` (d2l 8.6.5),
plus ``init_cnn`` and the multi-GPU chapter's ``resnet18`` (d2l 13.6). The library's own models
(``cnnlab.models``) give explicit channel counts; these keep the book's Lazy layers so the book's cells
(``layer_summary``, ``apply_init``) behave as printed.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin

from cnnlab.checks import is_int
from cnnlab.d2l.core import Classifier
from cnnlab.models.init import init_cnn as _xavier_init
from cnnlab.models.resnet import Residual as ResNetBlock

__all__ = ["init_cnn", "LeNet", "Residual", "ResNeXtBlock", "resnet18"]

_warned_lazy = False  # init_cnn's warning is given once per process


def init_cnn(module: nn.Module) -> None:
    """Xavier-uniform init of the weights of conv and linear layers (d2l 7.6), for ``net.apply(init_cnn)``.

    A Lazy layer has no weights before its first forward pass, so d2l silently skips it: the book's
    ``self.net.apply(d2l.init_cnn)`` inside a Lazy model's constructor (VGG, ResNet, ...) initialises nothing.
    We skip it too (the results then match the book's) but say so once with a UserWarning.
    """
    global _warned_lazy
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not _warned_lazy:
            _warned_lazy = True
            warnings.warn(
                f"d2l.init_cnn skipped Xavier init of {type(module).__name__}: its parameters are still lazy "
                "(shape unknown until the first forward pass); call model.apply_init([X], d2l.init_cnn) with a "
                "batch X to initialise after the dry run", UserWarning, stacklevel=_caller_level())
        return
    _xavier_init(module)


def _caller_level() -> int:
    """The stacklevel of the first frame outside this file and torch.nn (the user's ``net.apply`` line)."""
    frame, level = sys._getframe(1), 1
    inside = (__file__, f"torch{os.sep}nn{os.sep}")
    while frame is not None and (frame.f_code.co_filename == inside[0] or inside[1] in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


class LeNet(Classifier):
    """LeNet-5 with sigmoid activations and average pooling (d2l 7.6.1)."""

    def __init__(self, lr: float = 0.1, num_classes: int = 10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.LazyConv2d(6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.LazyConv2d(16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.LazyLinear(120), nn.Sigmoid(),
            nn.LazyLinear(84), nn.Sigmoid(),
            nn.LazyLinear(num_classes))


def _zh_residual(input_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
    """d2l-zh v2's signature of ``Residual`` (Chinese edition 7.6.1, saved into its ``d2l.torch``)."""


_ZH_RESIDUAL = inspect.signature(_zh_residual)


class Residual(nn.Module):
    """The residual block of ResNet (d2l 8.6.2): two 3x3 conv-BN stages plus a shortcut, in Lazy layers.

    The two editions save different signatures under this name, and both are taken:

    - ``Residual(num_channels, use_1x1conv=False, strides=1)`` (d2l 1.0.3, English): this class.
    - ``Residual(input_channels, num_channels, use_1x1conv=False, strides=1)`` (d2l-zh v2, Chinese: its
      multi-GPU chapter builds ResNet-18 from ``d2l.Residual(in_channels, out_channels, ...)``): cnnlab's own
      :class:`cnnlab.models.Residual`, the same block in ordinary layers, so that an ``init_weights`` applied
      before the first forward finds ``nn.Conv2d`` s, as in that book.

    The Chinese form is the one whose second positional argument is an int (the English one's is the bool
    ``use_1x1conv``) or that names ``input_channels``.

    Args:
        num_channels: output channels.
        use_1x1conv: put a 1x1 convolution on the shortcut (needed when the channels or the stride change).
        strides: stride of the first convolution and of the shortcut.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> nn.Module:
        if "input_channels" in kwargs or (len(args) >= 2 and is_int(args[1])):
            chinese = _ZH_RESIDUAL.bind(*args, **kwargs)  # a bad call: the usual TypeError
            chinese.apply_defaults()
            return ResNetBlock(*chinese.arguments.values())  # not a Residual: __init__ is not called again
        return super().__new__(cls)

    def __init__(self, num_channels: int, use_1x1conv: bool = False, strides: int = 1):
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3 is not None:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


class ResNeXtBlock(nn.Module):
    """The ResNeXt bottleneck block (d2l 8.6.5): 1x1 down, grouped 3x3, 1x1 up, plus a shortcut.

    Args:
        num_channels: output channels.
        groups: channels per group of the 3x3 convolution (the book's meaning: the conv gets
            ``bot_channels // groups`` groups).
        bot_mul: bottleneck width as a fraction of ``num_channels``.
        use_1x1conv: put a 1x1 conv + BN on the shortcut.
        strides: stride of the 3x3 convolution and of the shortcut.
    """

    def __init__(self, num_channels: int, groups: int, bot_mul: float, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        bot_channels = int(round(num_channels * bot_mul))
        self.conv1 = nn.LazyConv2d(bot_channels, kernel_size=1, stride=1)
        self.conv2 = nn.LazyConv2d(bot_channels, kernel_size=3, stride=strides, padding=1,
                                   groups=bot_channels // groups)
        self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=1)
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()
        self.bn3 = nn.LazyBatchNorm2d()
        if use_1x1conv:
            self.conv4 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
            self.bn4 = nn.LazyBatchNorm2d()
        else:
            self.conv4 = None

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = F.relu(self.bn2(self.conv2(Y)))
        Y = self.bn3(self.conv3(Y))
        if self.conv4 is not None:
            X = self.bn4(self.conv4(X))
        return F.relu(Y + X)


def resnet18(num_classes: int, in_channels: int = 1) -> nn.Sequential:
    """ResNet-18 for small images (d2l 13.6): a 3x3 stride-1 stem without max-pooling, four stages of two
    ``Residual`` blocks (64, 128, 256, 512 channels), global average pooling and a linear head.

    As in d2l 1.0.3, the stem and the head have explicit sizes and the blocks are Lazy.
    """

    def stage(num_channels: int, first: bool) -> nn.Sequential:
        blocks = [Residual(num_channels) if first else Residual(num_channels, use_1x1conv=True, strides=2),
                  Residual(num_channels)]
        return nn.Sequential(*blocks)

    net = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(64),
                        nn.ReLU())
    for i, channels in enumerate((64, 128, 256, 512)):
        net.add_module(f"resnet_block{i + 1}", stage(channels, first=i == 0))
    net.add_module("global_avg_pool", nn.AdaptiveAvgPool2d((1, 1)))
    net.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(512, num_classes)))
    return net
