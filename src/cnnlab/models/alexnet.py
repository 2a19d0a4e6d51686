"""AlexNet as d2l 8.1 adapts it to Fashion-MNIST: one input channel, 224x224 inputs, ten classes."""

from __future__ import annotations

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.head import Flatten
from cnnlab.models.registry import register_model


class AlexNet(nn.Module):
    """Five convolutions and three dense layers (d2l 8.1.2).

    The book pads the first 11x11/4 convolution by 1 so a 224 input gives 54x54 maps, and the dense head is
    sized for the resulting 256 x 5 x 5 features (other sizes are pooled to 5 x 5 first,
    :class:`cnnlab.models.head.Flatten`).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch"):
        super().__init__()
        L = layer_set(ops)
        self.features = nn.Sequential(
            L.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2),
            L.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2),
            L.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
            L.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
            L.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            Flatten(5),
            nn.Linear(256 * 5 * 5, 4096), nn.ReLU(), nn.Dropout(p=0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
            nn.Linear(4096, num_classes),
        )

    def stages(self) -> list[nn.Module]:
        """The rows of the book's flat ``self.net``: every layer, one by one (d2l 8.1.2 layer_summary)."""
        return [*self.features, *self.classifier]

    def forward(self, x):
        x = self.features(x)  # N x 256 x 5 x 5 (after N x 96 x 54 x 54, N x 256 x 26 x 26, N x 384 x 12 x 12)
        return self.classifier(x)  # N x num_classes


@register_model("alexnet", input_size=224, lr=0.01, section="8.1")
def alexnet(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> AlexNet:
    """The book's one-channel AlexNet (46,764,746 parameters)."""
    return AlexNet(num_classes, in_channels, ops)
