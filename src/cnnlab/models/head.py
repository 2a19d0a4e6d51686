"""The flatten in front of a dense head, made independent of the input size.

LeNet, AlexNet and VGG size their first dense layer for the book's input (5 x 5, 5 x 5 and 7 x 7 feature maps).
Like torchvision's VGG (``AdaptiveAvgPool2d((7, 7))`` before its classifier), this flatten first average-pools
any other map to that side, so the same network takes CIFAR's 32 px or a folder's 64 px images. At the book's
size it pools nothing, so the book's outputs, parameter counts and layer summaries are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Flatten(nn.Flatten):
    """``nn.Flatten`` that first average-pools a map of another size to ``side x side`` (named Flatten, so the
    book's layer summaries read the same)."""

    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and (x.shape[-2] != self.side or x.shape[-1] != self.side):
            # torch's op also under --ops scratch: it only runs off the book's input size
            x = F.adaptive_avg_pool2d(x, self.side)  # N x C x side x side
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"side={self.side}"
