"""Network in Network (d2l 8.3): 1x1 convolutions as per-pixel MLPs, and no dense layers at all."""

from __future__ import annotations

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model


def nin_block(in_channels: int, out_channels: int, kernel_size: int, strides: int, padding: int,
              ops: str = "torch") -> nn.Sequential:
    """One spatial convolution then two 1x1 convolutions, each followed by ReLU (d2l 8.3.1).

    Example:
        >>> nin_block(1, 96, kernel_size=11, strides=4, padding=0)(torch.zeros(1, 1, 224, 224)).shape
        torch.Size([1, 96, 54, 54])
    """
    L = layer_set(ops)
    return nn.Sequential(
        L.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
        L.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        L.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


class NiN(nn.Module):
    """Three NiN blocks with max pooling, dropout, a NiN block with one channel per class, global average pooling.

    The children are the rows of the book's ``self.net`` in order (d2l 8.3.2).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.b1 = nin_block(in_channels, 96, kernel_size=11, strides=4, padding=0, ops=ops)
        self.pool1 = L.MaxPool2d(3, stride=2)
        self.b2 = nin_block(96, 256, kernel_size=5, strides=1, padding=2, ops=ops)
        self.pool2 = L.MaxPool2d(3, stride=2)
        self.b3 = nin_block(256, 384, kernel_size=3, strides=1, padding=1, ops=ops)
        self.pool3 = L.MaxPool2d(3, stride=2)
        self.dropout = nn.Dropout(0.5)
        self.b4 = nin_block(384, num_classes, kernel_size=3, strides=1, padding=1, ops=ops)
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()

    def forward(self, x):
        x = self.pool1(self.b1(x))  # N x 96 x 26 x 26 (b1: N x 96 x 54 x 54)
        x = self.pool2(self.b2(x))  # N x 256 x 12 x 12
        x = self.pool3(self.b3(x))  # N x 384 x 5 x 5
        x = self.b4(self.dropout(x))  # N x num_classes x 5 x 5
        return self.flatten(self.gap(x))  # N x num_classes


@register_model("nin", input_size=224, lr=0.05, section="8.3")
def nin(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> NiN:
    """The book's NiN (1,992,166 parameters)."""
    return NiN(num_classes, in_channels, ops)
