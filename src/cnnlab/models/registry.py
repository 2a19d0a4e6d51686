"""A tiny model registry (after torchvision's ``_api.py``): the CLI names, defaults and the parametrised tests."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model besides how to build it.

    Attributes:
        name: the CLI name, e.g. ``"resnet18"``.
        builder: ``builder(num_classes, in_channels, ops, **cfg) -> nn.Module``.
        input_size: the square input the book trains it at (Fashion-MNIST is resized to it); for a model with
            ImageNet weights, the side its weights were trained at, read from their metadata when first asked for
            (registered as ``side``, a function: the metadata is torchvision's, slow to import).
        lr: the book's learning rate for plain SGD.
        section: the d2l section that builds it.
        exercise: a variant a book exercise asks for (:mod:`cnnlab.models.variants`), built by studies; not part
            of the zoo's listing (:func:`list_models`, ``cnnlab models``) but created like any other.
        weights: the torchvision weights enum member of a model with ImageNet weights
            (:mod:`cnnlab.models.imagenet`, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``), else None. Those models are
            listed by ``list_models(pretrained=True)`` and ``cnnlab models --pretrained``, not in the book's zoo.
    """

    name: str
    builder: Callable[..., nn.Module]
    side: int | Callable[[], int]
    lr: float
    section: str
    exercise: bool = False
    weights: str | None = None

    @property
    def input_size(self) -> int:
        return self.side if isinstance(self.side, int) else self.side()


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, input_size: int | Callable[[], int], lr: float, section: str,
                   exercise: bool = False, weights: str | None = None) -> Callable:
    """Decorator that registers ``builder`` under ``name`` (``input_size``, a side or a function giving it,
    ``exercise``, ``weights``: see :class:`ModelInfo`)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelInfo(name, builder, input_size, lr, section, exercise, weights)
        return builder

    return wrap


def list_models(pattern: str = "*", *, exercises: bool = False, pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern``, in registration order: the book's zoo, and with
    ``exercises`` also the exercise variants studies build; with ``pretrained`` instead the models that have
    ImageNet weights (the ``imagenet-`` family)."""
    if pretrained:
        return [name for name, info in _MODELS.items() if fnmatch.fnmatch(name, pattern) and info.weights]
    return [name for name, info in _MODELS.items()
            if fnmatch.fnmatch(name, pattern) and (exercises or not info.exercise) and not info.weights]


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; unknown names raise a CnnlabError listing the zoo's and the pretrained."""
    if name not in _MODELS:
        raise CnnlabError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}, or one with "
                          f"ImageNet weights: {', '.join(list_models(pretrained=True))}{_did_you_mean(name)}")
    return _MODELS[name]


def check_pretrained(name: str) -> ModelInfo:
    """The registry entry of ``name`` if it has pretrained weights; a one-line CnnlabError listing those that do
    otherwise."""
    info = model_info(name)
    if not info.weights:
        raise CnnlabError(f"model {name!r} has no pretrained weights; expected one of: "
                          f"{', '.join(list_models(pretrained=True))} (see `cnnlab models --pretrained`)")
    return info


def _did_you_mean(name: object) -> str:
    """``"; did you mean 'resnet18'?"`` for the closest registered name, ignoring case (difflib), or ``""``."""
    if not isinstance(name, str):
        return ""
    lower = {known.lower(): known for known in _MODELS}
    close = difflib.get_close_matches(name.lower(), lower, n=1, cutoff=0.6)
    return f"; did you mean {lower[close[0]]!r}?" if close else ""


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, ops: str = "torch", *,
                 pretrained: bool = False, **cfg) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models` (or ``list_models(pretrained=True)``).
        num_classes: size of the output layer.
        in_channels: channels of the input image (1 for Fashion-MNIST).
        ops: ``"torch"`` for torch.nn layers, ``"scratch"`` for cnnlab's own (:mod:`cnnlab.layers`).
        pretrained: start from the model's ImageNet weights (:mod:`cnnlab.models.imagenet`: a new head for
            ``num_classes``, the first convolution adapted to ``in_channels``).
        **cfg: builder-specific options.

    Example:
        >>> create_model("lenet")(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    info = model_info(name)
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise CnnlabError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise CnnlabError(f"in_channels must be a positive integer, got {in_channels!r}")
    if ops not in ("torch", "scratch"):
        raise CnnlabError(f"ops must be 'torch' or 'scratch', got {ops!r}")
    if pretrained:
        check_pretrained(name)
        cfg["pretrained"] = True
    return info.builder(num_classes=num_classes, in_channels=in_channels, ops=ops, **cfg)


def _runs_at(model: nn.Module, in_channels: int, size: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device="meta"))
        return True
    except RuntimeError:  # zero-size feature maps or kernels larger than the map
        return False


def _meta_model(name: str, in_channels: int) -> nn.Module:
    # Built on the meta device: no memory and no init, which matters for VGG-11's 128M parameters.
    with torch.device("meta"):
        return create_model(name, in_channels=in_channels).eval()


def min_input_size(name: str, in_channels: int = 1, limit: int = 1024) -> int:
    """Smallest square input side the model accepts, found by running it on the meta device (no compute)."""
    model = _meta_model(name, in_channels)
    # Sizes that work are not always monotone for strided nets, so scan upward rather than bisect.
    for size in range(1, limit + 1):
        if _runs_at(model, in_channels, size):
            return size
    raise CnnlabError(f"model {name!r} accepts no input up to {limit}x{limit}")


def check_input_size(name: str, size: int, in_channels: int = 1) -> None:
    """Raise a one-line CnnlabError if the model cannot take a ``size`` x ``size`` input."""
    if _runs_at(_meta_model(name, in_channels), in_channels, size):
        return
    minimum = min_input_size(name, in_channels)
    if size < minimum:
        raise CnnlabError(f"input size {size} is too small for {name}: expected at least {minimum}")
    # LeNet, AlexNet and VGG size their first dense layer for the book's input, so larger inputs fail too.
    raise CnnlabError(f"input size {size} does not fit {name}'s dense head: expected {model_info(name).input_size}")
