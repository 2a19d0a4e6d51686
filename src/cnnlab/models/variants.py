"""Models the book's exercises ask for that the zoo's builders do not offer as options (yet).

Each is built from the zoo's own classes (:class:`cnnlab.models.lenet.LeNet`, :class:`cnnlab.models.resnet.ResNet`)
and then reshaped, so there is no second LeNet or ResNet here:

- LeNet with the other activation/pooling pairs (d2l 7.6 exercise 1);
- LeNet-ReLU with another convolution window or other channel counts (d2l 7.6 exercise 2);
- BN-LeNet without its batch norms, and with them after the activation instead of before (d2l 8.5 exercises);
- ResNet of other depths, and with narrower residual stages (d2l 8.6 exercises).

:mod:`cnnlab.models` imports this module, so they are always registered (``cnnlab study``, ``compare`` and
``sweep`` name them), as exercise variants: outside the zoo's listing (``cnnlab models``, :func:`list_models`
without ``exercises``). The names say what differs from the zoo model they start from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.layers import layer_set
from cnnlab.models.head import Flatten
from cnnlab.models.lenet import LeNet
from cnnlab.models.registry import register_model
from cnnlab.models.resnet import Residual, ResNet

ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def _register(name: str, section: str, input_size: int, lr: float, build: Callable[..., nn.Module],
              doc: str) -> None:
    def builder(num_classes: int = 10, in_channels: int = 1, ops: str = "torch") -> nn.Module:
        return build(num_classes=num_classes, in_channels=in_channels, ops=ops)

    builder.__doc__ = doc
    register_model(name, input_size=input_size, lr=lr, section=section, exercise=True)(builder)


# ---------------------------------------------------------------------------------------------------- LeNet
def _refit_head(model: LeNet, in_channels: int, side: int = 28) -> None:
    """Size the head for the feature map the convolutions now produce at the book's ``side`` (measured by running
    a copy, so the batch norms' running statistics stay untouched): its flatten pools nothing at that size, and
    the first dense layer takes every feature."""
    probe = copy.deepcopy(model)
    x = torch.zeros(2, in_channels, side, side, device=next(probe.parameters()).device)
    with torch.no_grad():
        channels, _, width = probe.features(x).shape[1:]  # two images: batch norm in training mode needs two
    flat = next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Flatten))
    model.classifier[flat] = Flatten(width)
    dense = next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear))
    model.classifier[dense] = nn.Linear(channels * width * width, model.classifier[dense].out_features)


def reshape_lenet(model: LeNet, *, kernel_size: int = 5, channels: Sequence[int] = (6, 16), in_channels: int = 1,
                  ops: str = "torch") -> LeNet:
    """Give LeNet's two convolutions another window and other channel counts, keeping every other layer.

    The first convolution keeps its role: padded to keep the side (``kernel_size // 2``, the book's 2 for 5x5)
    when the model pads it, unpadded in BN-LeNet. The batch norms after a convolution follow its channels, and
    the head is resized to what the new feature maps hold at 28 px (not pooled to the book's 5 x 5 map).
    """
    L = layer_set(ops)
    convs = [i for i, m in enumerate(model.features) if type(m) is L.Conv2d]
    sources = [in_channels, *channels[:-1]]
    for n, (i, c_in, c_out) in enumerate(zip(convs, sources, channels, strict=True)):
        padding = kernel_size // 2 if n == 0 and model.features[i].padding[0] else 0
        model.features[i] = L.Conv2d(c_in, c_out, kernel_size=kernel_size, padding=padding)
        if i + 1 < len(model.features) and type(model.features[i + 1]) is L.BatchNorm2d:
            model.features[i + 1] = L.BatchNorm2d(c_out)
    _refit_head(model, in_channels)
    return model


def _is_norm(module: nn.Module) -> bool:
    return "BatchNorm" in type(module).__name__  # torch's and cnnlab's own (layers.BatchNorm1d/2d) alike


def move_batch_norm(model: LeNet, where: str) -> LeNet:
    """BN-LeNet with its batch norms ``"after"`` each activation instead of before it, or ``"none"`` at all.

    d2l 8.5 places batch norm between the affine layer and the activation, as Ioffe and Szegedy (2015) did;
    placing it after the activation is the common alternative the exercises ask about. ``"none"`` keeps
    BN-LeNet's shape (unpadded first convolution) so that only the normalisation differs.
    """
    if where not in ("after", "none"):
        raise CnnlabError(f"where must be 'after' or 'none', got {where!r}")
    for name in ("features", "classifier"):
        layers = list(getattr(model, name))
        if where == "none":
            layers = [m for m in layers if not _is_norm(m)]
        else:
            for i in range(len(layers) - 1):
                if _is_norm(layers[i]) and isinstance(layers[i + 1], tuple(ACTIVATIONS.values())):
                    layers[i], layers[i + 1] = layers[i + 1], layers[i]
        setattr(model, name, nn.Sequential(*layers))
    return model


def _lenet(activation: str = "sigmoid", pool: str = "avg", batch_norm: bool = False, kernel_size: int = 5,
           channels: Sequence[int] = (6, 16), bn: str = "before", *, num_classes: int, in_channels: int,
           ops: str) -> LeNet:
    model = LeNet(num_classes, in_channels, ops, activation=ACTIVATIONS[activation], pool=pool,
                  batch_norm=batch_norm)
    if (kernel_size, tuple(channels)) != (5, (6, 16)):
        model = reshape_lenet(model, kernel_size=kernel_size, channels=channels, in_channels=in_channels, ops=ops)
    if batch_norm and bn != "before":
        model = move_batch_norm(model, bn)
    return model


_register("lenet-sigmoid-max", "7.6 exercise", 28, 0.1, partial(_lenet, "sigmoid", "max"),
          "LeNet with the book's sigmoid and max pooling.")
_register("lenet-relu-avg", "7.6 exercise", 28, 0.1, partial(_lenet, "relu", "avg"),
          "LeNet with ReLU and the book's average pooling.")
for _k in (3, 7):
    _register(f"lenet-relu-k{_k}", "7.6 exercise", 28, 0.1, partial(_lenet, "relu", "max", kernel_size=_k),
              f"LeNet-ReLU (max pooling) with {_k}x{_k} convolutions instead of 5x5.")
for _c in ((3, 8), (12, 32), (24, 64)):
    _register(f"lenet-relu-c{_c[0]}-{_c[1]}", "7.6 exercise", 28, 0.1, partial(_lenet, "relu", "max", channels=_c),
              f"LeNet-ReLU (max pooling) with {_c[0]} and {_c[1]} convolution channels instead of 6 and 16.")
_register("lenet-bn-none", "8.5 exercise", 28, 0.1, partial(_lenet, batch_norm=True, bn="none"),
          "BN-LeNet's shape (unpadded first convolution) without any batch norm: the control of the 8.5 study.")
_register("lenet-bn-after", "8.5 exercise", 28, 0.1, partial(_lenet, batch_norm=True, bn="after"),
          "BN-LeNet with each batch norm after its sigmoid instead of before it.")


# --------------------------------------------------------------------------------------------------- ResNet
def projected_residual(in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1,
                       ops: str = "torch") -> Residual:
    """The book's Residual block, with the 1x1 shortcut projection also wherever the channels change.

    A ResNet whose first stage is narrower than the 64-channel stem needs it there (the book's ResNet projects
    only at the strided first block of the later stages).
    """
    return Residual(in_channels, num_channels, use_1x1conv=use_1x1conv or in_channels != num_channels,
                    strides=strides, ops=ops)


def _resnet(arch: Sequence[tuple[int, int]], *, num_classes: int, in_channels: int, ops: str) -> ResNet:
    return ResNet(arch, num_classes, in_channels, ops, block=projected_residual)


_register("resnet10", "8.6 exercise", 96, 0.01, partial(_resnet, ((1, 64), (1, 128), (1, 256), (1, 512))),
          "ResNet-10: one basic block per stage (half of ResNet-18's depth).")
for _w, _arch in ((0.5, ((2, 32), (2, 64), (2, 128), (2, 256))), (0.25, ((2, 16), (2, 32), (2, 64), (2, 128)))):
    _register(f"resnet18-w{_w:g}", "8.6 exercise", 96, 0.01, partial(_resnet, _arch),
              f"ResNet-18's layout with {_w:g}x the channels in every residual stage (the stem keeps 64).")
