"""LeNet-5 as the book builds it (d2l 7.6), its ReLU/max-pool exercise variant, and BN-LeNet (d2l 8.5)."""

from __future__ import annotations

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.registry import register_model


class LeNet(nn.Module):
    """Two conv/pool stages and three dense layers. Expects 28x28 inputs (the dense head is sized for them)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch",
                 activation: type[nn.Module] = nn.Sigmoid, pool: str = "avg"):
        super().__init__()
        L = layer_set(ops)
        Pool = L.AvgPool2d if pool == "avg" else L.MaxPool2d
        self.features = nn.Sequential(
            L.Conv2d(in_channels, 6, kernel_size=5, padding=2), activation(), Pool(kernel_size=2, stride=2),
            L.Conv2d(6, 16, kernel_size=5), activation(), Pool(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), activation(),
            nn.Linear(120, 84), activation(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        x = self.features(x)  # N x 16 x 5 x 5
        return self.classifier(x)  # N x num_classes


@register_model("lenet", input_size=28, lr=0.1, section="7.6")
def lenet(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """The book's LeNet: sigmoid activations and average pooling (61,706 parameters)."""
    return LeNet(num_classes, in_channels, ops)


@register_model("lenet-relu", input_size=28, lr=0.1, section="7.6 exercise")
def lenet_relu(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """The exercise variant: ReLU and max pooling (same parameter count)."""
    return LeNet(num_classes, in_channels, ops, activation=nn.ReLU, pool="max")
