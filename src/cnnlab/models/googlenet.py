"""GoogLeNet (d2l 8.4): the stem, then nine Inception blocks in three stages, at 96x96 inputs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model


class Inception(nn.Module):
    """Four parallel branches concatenated along channels (d2l 8.4.1, Szegedy et al. 2015 fig. 2b).

    Args:
        in_channels: channels of the input.
        c1: output channels of the 1x1 branch.
        c2: ``(reduce, out)`` channels of the 1x1 -> 3x3 branch.
        c3: ``(reduce, out)`` channels of the 1x1 -> 5x5 branch.
        c4: output channels of the 3x3 max-pool -> 1x1 branch.
        ops: ``"torch"`` or ``"scratch"`` layers.

    The output has ``c1 + c2[1] + c3[1] + c4`` channels and the input's height and width.
    """

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int,
                 ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.b1_1 = L.Conv2d(in_channels, c1, kernel_size=1)
        self.b2_1 = L.Conv2d(in_channels, c2[0], kernel_size=1)
        self.b2_2 = L.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.b3_1 = L.Conv2d(in_channels, c3[0], kernel_size=1)
        self.b3_2 = L.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.b4_1 = L.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.b4_2 = L.Conv2d(in_channels, c4, kernel_size=1)
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x):
        b1 = F.relu(self.b1_1(x))
        b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
        b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
        b4 = F.relu(self.b4_2(self.b4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


# The book's nine Inception blocks, (c1, c2, c3, c4) each; b3 has two, b4 five, b5 two (d2l 8.4.2).
B3 = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
B4 = ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
      (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128))
B5 = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


def _inceptions(in_channels: int, specs, ops: str) -> tuple[list[Inception], int]:
    blocks = []
    for spec in specs:
        blocks.append(Inception(in_channels, *spec, ops=ops))
        in_channels = blocks[-1].out_channels
    return blocks, in_channels


class GoogLeNet(nn.Module):
    """Stages ``b1``..``b5`` and the ``fc`` output layer: the rows of the book's ``self.net`` (d2l 8.4.2)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.b1 = nn.Sequential(
            L.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.b2 = nn.Sequential(
            L.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
            L.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        blocks, channels = _inceptions(192, B3, ops)
        self.b3 = nn.Sequential(*blocks, L.MaxPool2d(kernel_size=3, stride=2, padding=1))
        blocks, channels = _inceptions(channels, B4, ops)
        self.b4 = nn.Sequential(*blocks, L.MaxPool2d(kernel_size=3, stride=2, padding=1))
        blocks, channels = _inceptions(channels, B5, ops)
        self.b5 = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.b1(x)  # N x 64 x 24 x 24
        x = self.b2(x)  # N x 192 x 12 x 12
        x = self.b3(x)  # N x 480 x 6 x 6
        x = self.b4(x)  # N x 832 x 3 x 3
        x = self.b5(x)  # N x 1024
        return self.fc(x)  # N x num_classes


@register_model("googlenet", input_size=96, lr=0.01, section="8.4")
def googlenet(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> GoogLeNet:
    """The book's GoogLeNet (5,977,530 parameters)."""
    return GoogLeNet(num_classes, in_channels, ops)
