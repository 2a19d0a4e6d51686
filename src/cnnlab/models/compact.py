"""A compact all-convolutional net for 28 px images, built for the most accuracy a laptop CPU can train in minutes.

Not one of the book's networks: it is the chapter 8 ingredients (3x3 convolutions, batch norm, max pooling,
a global pool instead of a dense head) arranged the way airbench arranges them for CIFAR-10 (Keller Jordan,
2024): a cheap full-resolution stem, then stages of "conv, pool, BN, GELU, conv, BN, GELU", each halving the
side and doubling the width, and one linear layer. Nearly all its time is convolution, so the stem is narrow
and the widths stay small: at 28 px the first stage's full-resolution conv is most of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model


def conv_bn(in_channels: int, out_channels: int, ops: str = "torch", pool: bool = False) -> nn.Sequential:
    """3x3 conv (no bias: the BN after it has one), optionally a 2x2 max pool, then BN and GELU.

    Pooling before the BN (as airbench does) normalises and activates a quarter of the values.
    """
    L = layer_set(ops)
    layers: list[nn.Module] = [L.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(L.MaxPool2d(kernel_size=2, stride=2))
    layers += [L.BatchNorm2d(out_channels), nn.GELU()]
    return nn.Sequential(*layers)


class CompactNet(nn.Module):
    """Stem, then one ``conv_bn(pool) + conv_bn`` stage per width, a global max pool and a linear classifier.

    Args:
        widths: channels of each stage; each stage halves the side (28 -> 14 -> 7 -> 3 for three stages).
        stem: channels of the full-resolution stem convolution.
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers (:func:`cnnlab.layers.layer_set`).
    """

    def __init__(self, widths: Sequence[int] = (24, 48, 96), stem: int = 8, num_classes: int = 10,
                 in_channels: int = 1, ops: str = "torch"):
        super().__init__()
        self.stem = conv_bn(in_channels, stem, ops)
        stages, channels = [], stem
        for width in widths:
            stages.append(nn.Sequential(conv_bn(channels, width, ops, pool=True), conv_bn(width, width, ops)))
            channels = width
        self.stages_ = nn.Sequential(*stages)
        # global max pool: the side after the stages depends on the input size, the classifier does not
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def stages(self) -> list[nn.Module]:
        """The layer-summary rows: the stem, each stage, then the head's layers."""
        return [self.stem, *self.stages_, *self.head]

    def forward(self, x):
        x = self.stem(x)  # N x stem x 28 x 28
        x = self.stages_(x)  # N x widths[-1] x 3 x 3 at 28 px
        return self.head(x)  # N x num_classes


@register_model("compact", input_size=28, lr=0.1, section="8.5 + airbench")
def compact(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> CompactNet:
    """The compact net of the ``cpu10`` recipe: stem 8, stages 24/48/96 (164,162 parameters at one channel)."""
    return CompactNet((24, 48, 96), 8, num_classes, in_channels, ops)
