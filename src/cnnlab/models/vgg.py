"""VGG networks from the book's architecture tuples (d2l 8.2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnlab.layers import layer_set
from cnnlab.models.head import Flatten
from cnnlab.models.registry import register_model

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
# d2l 8.2.3 trains a 4x narrower VGG-11 on Fashion-MNIST because the full one is too slow for a single GPU.
VGG_SMALL_ARCH = ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))


def vgg_block(num_convs: int, in_channels: int, out_channels: int, ops: str = "torch") -> nn.Sequential:
    """``num_convs`` 3x3 same-padding convolutions with ReLU, then a 2x2/2 max pool that halves the map (d2l 8.2.1).

    Example:
        >>> vgg_block(2, 3, 8)(torch.zeros(1, 3, 16, 16)).shape
        torch.Size([1, 8, 8, 8])
    """
    L = layer_set(ops)
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [L.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
    layers.append(L.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG blocks then the 4096-4096 dense head with dropout (d2l 8.2.2).

    Args:
        arch: ``(num_convs, out_channels)`` per block; each block halves the map, so five blocks turn the
            book's 224x224 input into 7x7, which the first dense layer is sized for.
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers.
    """

    def __init__(self, arch: Sequence[tuple[int, int]], num_classes: int = 10, in_channels: int = 1,
                 ops: str = "torch"):
        super().__init__()
        blocks = []
        channels = in_channels
        for num_convs, out_channels in arch:
            blocks.append(vgg_block(num_convs, channels, out_channels, ops))
            channels = out_channels
        side = 224 // 2 ** len(arch)
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            Flatten(side),
            nn.Linear(channels * side * side, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def stages(self) -> list[nn.Module]:
        """The rows of the book's ``self.net``: one per VGG block, then every head layer (d2l 8.2.2)."""
        return [*self.features, *self.classifier]

    def forward(self, x):
        x = self.features(x)  # N x 512 x 7 x 7 for VGG-11 (blocks: 112, 56, 28, 14, 7)
        return self.classifier(x)  # N x num_classes


@register_model("vgg11", input_size=224, lr=0.01, section="8.2")
def vgg11(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> VGG:
    """VGG-11, the book's layer-summary network (128,806,154 parameters)."""
    return VGG(VGG11_ARCH, num_classes, in_channels, ops)


@register_model("vgg-small", input_size=224, lr=0.01, section="8.2.3")
def vgg_small(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> VGG:
    """The narrower VGG-11 the book trains (43,093,322 parameters)."""
    return VGG(VGG_SMALL_ARCH, num_classes, in_channels, ops)
