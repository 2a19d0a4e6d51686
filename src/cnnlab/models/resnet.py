"""ResNet and ResNeXt (d2l 8.6): residual blocks, the ResNet-18/34 layouts and a ResNeXt-18."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn
from torch.nn import functional as F

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model


class Residual(nn.Module):
    """The ResNet basic block: two 3x3 conv-BN pairs plus the input (d2l 8.6.2, He et al. 2016 fig. 2).

    Args:
        in_channels: channels of the input.
        num_channels: channels of the output.
        use_1x1conv: project the shortcut with a strided 1x1 convolution (needed when the shape changes).
        strides: stride of the first 3x3 convolution (and of the shortcut projection).
        ops: ``"torch"`` or ``"scratch"`` layers.
    """

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1,
                 ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.conv1 = L.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = L.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        # The book's shortcut projection has no BN after it (unlike ResNeXtBlock's conv4/bn4).
        self.conv3 = L.Conv2d(in_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = L.BatchNorm2d(num_channels)
        self.bn2 = L.BatchNorm2d(num_channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class ResNeXtBlock(nn.Module):
    """The ResNeXt bottleneck block: 1x1 -> grouped 3x3 -> 1x1, BN after each, plus the input (d2l 8.6.5).

    Args:
        in_channels: channels of the input.
        num_channels: channels of the output.
        groups: the book's name, but it is the *group width*: d2l computes ``bot_channels = round(num_channels *
            bot_mul)`` and passes ``groups=bot_channels // groups`` to the 3x3 convolution, so ``groups=16`` with
            64 bottleneck channels means 4 groups of 16 channels. RegNet's ``g`` is a group width too (d2l 8.8), and
            the book's parameter counts depend on this reading, so it is kept.
        bot_mul: bottleneck channels as a multiple of ``num_channels``.
        use_1x1conv: project the shortcut with a strided 1x1 convolution and BN.
        strides: stride of the grouped 3x3 convolution (and of the shortcut projection).
        ops: ``"torch"`` or ``"scratch"`` layers.
    """

    def __init__(self, in_channels: int, num_channels: int, groups: int, bot_mul: float, use_1x1conv: bool = False,
                 strides: int = 1, ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        bot_channels = int(round(num_channels * bot_mul))
        self.conv1 = L.Conv2d(in_channels, bot_channels, kernel_size=1, stride=1)
        self.conv2 = L.Conv2d(bot_channels, bot_channels, kernel_size=3, stride=strides, padding=1,
                              groups=bot_channels // groups)
        self.conv3 = L.Conv2d(bot_channels, num_channels, kernel_size=1, stride=1)
        self.bn1 = L.BatchNorm2d(bot_channels)
        self.bn2 = L.BatchNorm2d(bot_channels)
        self.bn3 = L.BatchNorm2d(num_channels)
        if use_1x1conv:
            self.conv4 = L.Conv2d(in_channels, num_channels, kernel_size=1, stride=strides)
            self.bn4 = L.BatchNorm2d(num_channels)
        else:
            self.conv4 = self.bn4 = None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.conv4 is not None:
            x = self.bn4(self.conv4(x))
        return F.relu(y + x)


# A block factory: block(in_channels, num_channels, use_1x1conv=..., strides=..., ops=...) -> nn.Module.
Block = Callable[..., nn.Module]


def stem(in_channels: int, ops: str = "torch") -> nn.Sequential:
    """The ResNet/DenseNet stem: 7x7/2 conv to 64 channels, BN, ReLU, 3x3/2 max pool (a quarter of the side)."""
    L = layer_set(ops)
    return nn.Sequential(
        L.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), L.BatchNorm2d(64), nn.ReLU(),
        L.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


class ResNet(nn.Module):
    """The stem ``b1``, one stage ``b2``, ``b3``, ... per ``arch`` entry, and the ``last`` head (d2l 8.6.3).

    Args:
        arch: ``(num_residuals, num_channels)`` per stage. Every stage but the first starts with a strided block
            with a 1x1 shortcut, halving the side and changing the channels.
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers.
        block: the block factory, :class:`Residual` by default.
    """

    def __init__(self, arch: Sequence[tuple[int, int]], num_classes: int = 10, in_channels: int = 1,
                 ops: str = "torch", block: Block = Residual):
        super().__init__()
        self.b1 = stem(in_channels, ops)
        channels = 64
        for i, (num_residuals, num_channels) in enumerate(arch):
            self.add_module(f"b{i + 2}", self.stage(block, num_residuals, channels, num_channels, i == 0, ops))
            channels = num_channels
        self.last = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(channels, num_classes))

    @staticmethod
    def stage(block: Block, num_residuals: int, in_channels: int, num_channels: int, first_block: bool,
              ops: str) -> nn.Sequential:
        """The book's ``ResNet.block``: the first stage keeps the stem's resolution, later ones halve it."""
        blocks = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blocks.append(block(in_channels, num_channels, use_1x1conv=True, strides=2, ops=ops))
            else:
                blocks.append(block(in_channels if i == 0 else num_channels, num_channels, ops=ops))
        return nn.Sequential(*blocks)

    def forward(self, x):
        # The number of stages follows arch, so run the children in order. For ResNet-18 at the book's 96x96:
        # b1 N x 64 x 24 x 24 (conv 48, pool 24), b2 N x 64 x 24 x 24, b3 N x 128 x 12 x 12,
        # b4 N x 256 x 6 x 6, b5 N x 512 x 3 x 3, last N x num_classes.
        for module in self.children():
            x = module(x)
        return x


RESNET18_ARCH = ((2, 64), (2, 128), (2, 256), (2, 512))
RESNET34_ARCH = ((3, 64), (4, 128), (6, 256), (3, 512))  # He et al. 2016 table 1; d2l 8.6 exercise


@register_model("resnet18", input_size=96, lr=0.01, section="8.6")
def resnet18(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> ResNet:
    """The book's ResNet-18 (11,178,378 parameters)."""
    return ResNet(RESNET18_ARCH, num_classes, in_channels, ops)


@register_model("resnet34", input_size=96, lr=0.01, section="8.6 exercise")
def resnet34(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> ResNet:
    """ResNet-34: the same basic blocks in the (3, 4, 6, 3) layout."""
    return ResNet(RESNET34_ARCH, num_classes, in_channels, ops)


@register_model("resnext18", input_size=96, lr=0.01, section="8.6.5")
def resnext18(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> ResNet:
    """ResNet-18's layout with ResNeXt blocks of group width 16 and no bottleneck reduction (``bot_mul=1``).

    These are RegNetX-32's block settings (d2l 8.8) and the book's own ResNeXtBlock demo (``groups=16,
    bot_mul=1``): 4 groups in the 64-channel stage up to 32 groups at 512 channels. Grouping the 3x3
    convolutions leaves 1,697,546 parameters, about a seventh of ResNet-18's.
    """
    return ResNet(RESNET18_ARCH, num_classes, in_channels, ops, block=partial(ResNeXtBlock, groups=16, bot_mul=1))
