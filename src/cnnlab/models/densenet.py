"""DenseNet (d2l 8.7): dense blocks that concatenate every layer's output, joined by halving transitions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model
from cnnlab.models.resnet import stem


def conv_block(in_channels: int, num_channels: int, ops: str = "torch") -> nn.Sequential:
    """BN, ReLU, 3x3 same-padding convolution: the pre-activation order of DenseNet (d2l 8.7.2)."""
    L = layer_set(ops)
    return nn.Sequential(L.BatchNorm2d(in_channels), nn.ReLU(),
                         L.Conv2d(in_channels, num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    """``num_convs`` conv blocks, each seeing the concatenation of the input and all earlier outputs (d2l 8.7.2).

    Args:
        num_convs: number of conv blocks.
        in_channels: channels of the input.
        num_channels: channels each conv block adds (the growth rate).
        ops: ``"torch"`` or ``"scratch"`` layers.

    The output has ``in_channels + num_convs * num_channels`` channels.

    Example:
        >>> DenseBlock(2, 3, 10)(torch.zeros(4, 3, 8, 8)).shape
        torch.Size([4, 23, 8, 8])
    """

    def __init__(self, num_convs: int, in_channels: int, num_channels: int, ops: str = "torch"):
        super().__init__()
        self.net = nn.Sequential(
            *(conv_block(in_channels + i * num_channels, num_channels, ops) for i in range(num_convs))
        )
        self.out_channels = in_channels + num_convs * num_channels

    def forward(self, x):
        for blk in self.net:
            x = torch.cat((x, blk(x)), dim=1)
        return x


def transition_block(in_channels: int, num_channels: int, ops: str = "torch") -> nn.Sequential:
    """BN, ReLU, 1x1 convolution to ``num_channels``, 2x2/2 average pool (d2l 8.7.3)."""
    L = layer_set(ops)
    return nn.Sequential(L.BatchNorm2d(in_channels), nn.ReLU(),
                         L.Conv2d(in_channels, num_channels, kernel_size=1),
                         L.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(nn.Module):
    """The ResNet stem ``b1``, ``dense_blk1``, ``tran_blk1``, ..., ``dense_blkK`` and the ``last`` head (d2l 8.7.4).

    Args:
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers.
        num_channels: channels after the stem.
        growth_rate: channels each conv block adds.
        arch: conv blocks per dense block; a transition block halving channels and side sits between two.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch", num_channels: int = 64,
                 growth_rate: int = 32, arch: Sequence[int] = (4, 4, 4, 4)):
        super().__init__()
        L = layer_set(ops)
        self.b1 = stem(in_channels, ops)
        channels = num_channels
        for i, num_convs in enumerate(arch):
            self.add_module(f"dense_blk{i + 1}", DenseBlock(num_convs, channels, growth_rate, ops))
            channels += num_convs * growth_rate
            if i != len(arch) - 1:
                self.add_module(f"tran_blk{i + 1}", transition_block(channels, channels // 2, ops))
                channels //= 2
        self.last = nn.Sequential(L.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                                  nn.Linear(channels, num_classes))

    def forward(self, x):
        # The number of blocks follows arch, so run the children in order. At the book's 96x96 with the defaults:
        # b1 N x 64 x 24 x 24, dense_blk1 N x 192 x 24 x 24, tran_blk1 N x 96 x 12 x 12, dense_blk2 N x 224 x 12 x 12,
        # tran_blk2 N x 112 x 6 x 6, dense_blk3 N x 240 x 6 x 6, tran_blk3 N x 120 x 3 x 3,
        # dense_blk4 N x 248 x 3 x 3, last N x num_classes.
        for module in self.children():
            x = module(x)
        return x


@register_model("densenet", input_size=96, lr=0.01, section="8.7")
def densenet(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> DenseNet:
    """The book's DenseNet: growth rate 32, four dense blocks of four conv blocks (758,226 parameters)."""
    return DenseNet(num_classes, in_channels, ops)
