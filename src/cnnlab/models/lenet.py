"""LeNet-5 as the book builds it (d2l 7.6), its ReLU/max-pool exercise variant, and BN-LeNet (d2l 8.5)."""

from __future__ import annotations

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.head import Flatten
from cnnlab.models.registry import register_model


class LeNet(nn.Module):
    """Two conv/pool stages and three dense layers; the dense head is sized for 28x28 inputs (other sizes are
    pooled to it, :class:`cnnlab.models.head.Flatten`).

    Args:
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers (:func:`cnnlab.layers.layer_set`).
        activation: the nonlinearity after every conv and hidden dense layer (the book's sigmoid).
        pool: ``"avg"`` (the book) or ``"max"`` (the 7.6 exercise).
        batch_norm: insert batch norm after every conv and hidden dense layer, before the activation (d2l 8.5.4).
            BN-LeNet also drops the first conv's padding, so its head sees 16 x 4 x 4 features.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ops: str = "torch",
                 activation: type[nn.Module] = nn.Sigmoid, pool: str = "avg", batch_norm: bool = False):
        super().__init__()
        L = layer_set(ops)
        Pool = L.AvgPool2d if pool == "avg" else L.MaxPool2d
        padding = 0 if batch_norm else 2
        side = ((28 + 2 * padding - 4) // 2 - 4) // 2  # 5 for LeNet, 4 for BN-LeNet, at the book's 28 px

        def unit(layer: nn.Module, norm: type[nn.Module], channels: int) -> list[nn.Module]:
            # Optional BN sits between the affine layer and the activation, as in d2l 8.5.
            return [layer, *([norm(channels)] if batch_norm else []), activation()]

        self.features = nn.Sequential(
            *unit(L.Conv2d(in_channels, 6, kernel_size=5, padding=padding), L.BatchNorm2d, 6),
            Pool(kernel_size=2, stride=2),
            *unit(L.Conv2d(6, 16, kernel_size=5), L.BatchNorm2d, 16),
            Pool(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            Flatten(side),
            *unit(nn.Linear(16 * side * side, 120), L.BatchNorm1d, 120),
            *unit(nn.Linear(120, 84), L.BatchNorm1d, 84),
            nn.Linear(84, num_classes),
        )

    def stages(self) -> list[nn.Module]:
        """The rows of the book's flat ``self.net``: every layer of both halves (d2l 7.6 layer_summary)."""
        return [*self.features, *self.classifier]

    def forward(self, x):
        x = self.features(x)  # N x 16 x 5 x 5 (BN-LeNet: N x 16 x 4 x 4)
        return self.classifier(x)  # N x num_classes


@register_model("lenet", input_size=28, lr=0.1, section="7.6")
def lenet(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """The book's LeNet: sigmoid activations and average pooling (61,706 parameters)."""
    return LeNet(num_classes, in_channels, ops)


@register_model("lenet-relu", input_size=28, lr=0.1, section="7.6 exercise")
def lenet_relu(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """The exercise variant: ReLU and max pooling (same parameter count)."""
    return LeNet(num_classes, in_channels, ops, activation=nn.ReLU, pool="max")


@register_model("lenet-bn", input_size=28, lr=0.1, section="8.5")
def lenet_bn(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """BN-LeNet: batch norm before every sigmoid, unpadded first conv (44,878 parameters)."""
    return LeNet(num_classes, in_channels, ops, batch_norm=True)


@register_model("lenet-bn-relu", input_size=28, lr=0.1, section="8.5 + 7.6 exercise")
def lenet_bn_relu(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> LeNet:
    """BN-LeNet with the exercise's ReLU and max pooling: the small model the `fast` recipe is tuned for."""
    return LeNet(num_classes, in_channels, ops, activation=nn.ReLU, pool="max", batch_norm=True)
