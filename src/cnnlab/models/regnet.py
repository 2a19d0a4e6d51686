"""AnyNet and the RegNetX-32 the book trains (d2l 8.8, Radosavovic et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model
from cnnlab.models.resnet import ResNeXtBlock


class AnyNet(nn.Module):
    """The AnyNet design space: a stem, stages of ResNeXt blocks, and a head (d2l 8.8.1).

    Args:
        arch: ``(depth, num_channels, groups, bot_mul)`` per stage, where ``groups`` is the group width as in
            :class:`ResNeXtBlock`. Every stage starts with a stride-2 block with a projected shortcut.
        stem_channels: channels of the 3x3/2 stem convolution.
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers.

    The children ``stem``, ``stage1``, ... ``head`` are the rows of the book's ``self.net``.
    """

    def __init__(self, arch: Sequence[tuple[int, int, int, float]], stem_channels: int, num_classes: int = 10,
                 in_channels: int = 1, ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.stem = nn.Sequential(
            L.Conv2d(in_channels, stem_channels, kernel_size=3, stride=2, padding=1),
            L.BatchNorm2d(stem_channels), nn.ReLU(),
        )
        channels = stem_channels
        for i, (depth, num_channels, groups, bot_mul) in enumerate(arch):
            blocks = [ResNeXtBlock(channels if j == 0 else num_channels, num_channels, groups, bot_mul,
                                   use_1x1conv=j == 0, strides=2 if j == 0 else 1, ops=ops) for j in range(depth)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
            channels = num_channels
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x):
        # The number of stages follows arch, so run the children in order. For RegNetX-32 at the book's 96x96:
        # stem N x 32 x 48 x 48, stage1 N x 32 x 24 x 24, stage2 N x 80 x 12 x 12, head N x num_classes.
        for module in self.children():
            x = module(x)
        return x


# d2l 8.8.3: stem 32, depths (4, 6), widths (32, 80), group width 16, no bottleneck.
REGNETX32_ARCH = ((4, 32, 16, 1), (6, 80, 16, 1))


@register_model("regnetx32", input_size=96, lr=0.05, section="8.8")
def regnetx32(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> AnyNet:
    """The book's RegNetX-32 (179,290 parameters)."""
    return AnyNet(REGNETX32_ARCH, 32, num_classes, in_channels, ops)
