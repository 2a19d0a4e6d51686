"""ImageNet backbones with their official weights: torchvision's builders and weights API (d2l 14.2).

The family is named ``imagenet-<torchvision name>`` (``imagenet-resnet18``), so the book's own ``resnet18`` (d2l
8.6, 96 px, a 1-channel stem) keeps its name and meaning. The table below is the whole family as data: cnnlab's
name, torchvision's builder, and the weights enum member whose URL, hash and preprocessing are used. Importing
torchvision is slow, so it happens only when a model is built or its weights are read.

What ``create_model("imagenet-resnet18", num_classes=..., in_channels=..., pretrained=True)`` does:

1. builds torchvision's architecture with 1000 classes and 3 input channels, unweighted (``weights=None``: no
   download), as its builder builds it for the weights (GoogLeNet and Inception v3 without their auxiliary heads
   and renormalising their input; DenseNet's hosted key names read: :mod:`cnnlab.models.pretrained_quirks`);
2. with ``pretrained``, loads the weights file from torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<the file name
   of the weights URL>`` (``torch.hub.get_dir()``), where torchvision itself keeps it; the file is read with
   ``torch.load(weights_only=True)`` and must fit the architecture exactly (strict ``load_state_dict``). When it is
   absent, one download is tried with a short timeout, checked against the hash prefix in its file name (as
   torch.hub does) and written atomically into the cache; offline, the error names the file and where to put it;
3. adapts the first convolution to ``in_channels`` the usual way (timm's ``adapt_input_conv``, fastai's
   ``_load_pretrained_weights``): for grey images the RGB kernels are summed (a grey image is R = G = B, so the
   summed kernel gives the response the RGB kernels give to that grey image), for other counts the RGB kernels are
   repeated and scaled by 3 / channels;
4. replaces the classifier's last linear layer by a fresh one with ``num_classes`` outputs (torch's default init).

Without ``pretrained`` steps 1, 3 and 4 build the same module tree, which is how
:func:`cnnlab.inference.load_trained` rebuilds a fine-tuned model from its checkpoint without the weights file.
The preprocessing the weights expect comes from the weights' own metadata: the per-channel mean/std
(:func:`pretrained_normalize`; for grey images the RGB means and stds are averaged) and the input side
(:func:`crop_size`: 224 for most, 240 to 384 for the EfficientNets, 299 for Inception v3), which is the registry's
``input_size`` of the backbone: a run resizes its images to it, the explorer, ``predict`` and ``eval`` frame
pictures at it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn

from cnnlab.errors import CnnlabError, summary
from cnnlab.io import atomic_write
from cnnlab.models.pretrained_quirks import Renormalise, without_aux_heads
from cnnlab.models.registry import register_model
from cnnlab.models.state_dict import Head, load_state_dict_into, network_keys, read_state_dict
from cnnlab.picture import ShorterSide
from cnnlab.table import text_table

# Seconds a download may wait for the server (connect and each read): offline, the answer comes within seconds.
DOWNLOAD_TIMEOUT_S = 10.0
# A mirror or a folder to fetch weights files from instead of download.pytorch.org (download_url).
WEIGHTS_MIRROR_ENV = "CNNLAB_WEIGHTS_MIRROR"


@dataclass(frozen=True)
class Backbone:
    """One ImageNet model: ``builder`` (torchvision.models' function name) and ``weights`` (the enum member, e.g.
    ``"ResNet18_Weights.IMAGENET1K_V1"``: the DEFAULT of torchvision 0.29, pinned here so that it cannot change
    under a saved run)."""

    builder: str
    weights: str
    flattens: bool = True  # its forward flattens the pooled features before the classifier (ConvNeXt's does not)
    # what its forward applies to its features as functions before the classifier: the global average pool
    # ("avg", MobileNetV2), after a ReLU ("relu+avg", DenseNet)
    pools: str = ""


# torchvision's builder arguments for the network its weights were trained in, where weights=None builds another
# (cnnlab.models.pretrained_quirks): GoogLeNet and Inception v3 without the auxiliary heads their pretrained builders
# drop, renormalising their input (transform_input, done by a Renormalise module), and with torchvision's own
# initialisation asked for by name (left unsaid, they warn that its default will change)
_WITHOUT_AUX = {"aux_logits": False, "transform_input": True, "init_weights": True}
_BUILD_OPTIONS = {"googlenet": _WITHOUT_AUX, "inception_v3": _WITHOUT_AUX}


# cnnlab name -> torchvision builder and weights (tests/test_imagenet.py checks this table against torchvision's
# metadata). Each member is torchvision's DEFAULT: where it has a V2 member (its newer training recipe) it is the one;
# VGG-16's other member, IMAGENET1K_FEATURES, is SSD's backbone without a classifier's accuracy. The side each was
# trained at is its metadata's (crop_size), not this table's.
BACKBONES: dict[str, Backbone] = {
    "imagenet-resnet18": Backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "imagenet-resnet34": Backbone("resnet34", "ResNet34_Weights.IMAGENET1K_V1"),
    "imagenet-resnet50": Backbone("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
    "imagenet-resnet101": Backbone("resnet101", "ResNet101_Weights.IMAGENET1K_V2"),
    "imagenet-resnet152": Backbone("resnet152", "ResNet152_Weights.IMAGENET1K_V2"),
    "imagenet-resnext50_32x4d": Backbone("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V2"),  # d2l 8.6.5
    "imagenet-wide_resnet50_2": Backbone("wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V2"),
    "imagenet-mobilenet_v2": Backbone("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V2", pools="avg"),
    "imagenet-mobilenet_v3_small": Backbone("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
    "imagenet-mobilenet_v3_large": Backbone("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2"),
    "imagenet-efficientnet_b0": Backbone("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
    "imagenet-efficientnet_b1": Backbone("efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V2"),
    "imagenet-efficientnet_b2": Backbone("efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1"),
    "imagenet-efficientnet_b3": Backbone("efficientnet_b3", "EfficientNet_B3_Weights.IMAGENET1K_V1"),
    "imagenet-efficientnet_v2_s": Backbone("efficientnet_v2_s", "EfficientNet_V2_S_Weights.IMAGENET1K_V1"),
    "imagenet-convnext_tiny": Backbone("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", flattens=False),
    "imagenet-convnext_small": Backbone("convnext_small", "ConvNeXt_Small_Weights.IMAGENET1K_V1", flattens=False),
    "imagenet-convnext_base": Backbone("convnext_base", "ConvNeXt_Base_Weights.IMAGENET1K_V1", flattens=False),
    "imagenet-convnext_large": Backbone("convnext_large", "ConvNeXt_Large_Weights.IMAGENET1K_V1", flattens=False),
    "imagenet-regnet_y_400mf": Backbone("regnet_y_400mf", "RegNet_Y_400MF_Weights.IMAGENET1K_V2"),
    "imagenet-alexnet": Backbone("alexnet", "AlexNet_Weights.IMAGENET1K_V1"),  # d2l 8.1
    "imagenet-vgg11": Backbone("vgg11", "VGG11_Weights.IMAGENET1K_V1"),  # d2l 8.2's VGG-11
    "imagenet-vgg11_bn": Backbone("vgg11_bn", "VGG11_BN_Weights.IMAGENET1K_V1"),  # with d2l 8.5's batch norm
    "imagenet-vgg16": Backbone("vgg16", "VGG16_Weights.IMAGENET1K_V1"),
    "imagenet-googlenet": Backbone("googlenet", "GoogLeNet_Weights.IMAGENET1K_V1"),  # d2l 8.4
    "imagenet-inception_v3": Backbone("inception_v3", "Inception_V3_Weights.IMAGENET1K_V1"),  # GoogLeNet's successor
    "imagenet-densenet121": Backbone("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", pools="relu+avg"),  # d2l 8.7
}
# A learning rate for plain SGD when no recipe sets one (the registry's "book lr"); the finetune recipe sets its own.
SGD_LR = 0.01


def weights_enum(name: str):
    """The torchvision weights enum member of ImageNet model ``name`` (``ResNet18_Weights.IMAGENET1K_V1``)."""
    import torchvision.models  # deferred: importing torchvision is slow

    enum_name, member = BACKBONES[name].weights.split(".")
    return getattr(torchvision.models, enum_name)[member]


def weights_file(weights) -> Path:
    """Where the file of ``weights`` (a torchvision weights enum member, an ImageNet backbone's or any other
    builder's) is read from: torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file name of its URL>``
    (torchvision's own place for it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights_url(weights)).path)


def weights_url(weights) -> str:
    """The URL of the file of ``weights`` (a torchvision weights enum member)."""
    return weights.url


def download_url(weights) -> str:
    """Where :func:`ensure_weights` fetches the file of ``weights`` (a torchvision weights enum member) from:
    torchvision's URL, or the same file name under ``$CNNLAB_WEIGHTS_MIRROR`` (a mirror's ``https://`` address, or a
    folder of weights files on this machine, as a path or ``file://`` URL), for machines that cannot reach
    download.pytorch.org. The hash check is the same."""
    url, mirror = weights_url(weights), os.environ.get(WEIGHTS_MIRROR_ENV, "").strip()
    if not mirror:
        return url
    if not urlparse(mirror).scheme:  # a folder
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return f"{mirror.rstrip('/')}/{os.path.basename(urlparse(url).path)}"


@functools.cache
def crop_size(name: str) -> int:
    """The side of the square input the weights of ImageNet model ``name`` were trained and are published at: their
    ``transforms()``' crop size (224 for most, 384 for EfficientNetV2-S, 299 for Inception v3)."""
    return int(weights_enum(name).transforms().crop_size[0])


def pretrained_normalize(name: str, channels: int) -> list[list[float]]:
    """``[mean, std]`` per channel that the weights of ``name`` expect, from their own metadata, for an input of
    ``channels`` (:func:`per_channel`)."""
    transform = weights_enum(name).transforms()
    return per_channel(transform.mean, transform.std, channels)


def per_channel(mean: Sequence[float], std: Sequence[float], channels: int) -> list[list[float]]:
    """``[mean, std]`` of RGB weights (three each, or one for all three) for an input of ``channels``: grey images
    (and other channel counts) get the average over R, G and B, matching the adapted first convolution
    (:func:`adapt_first_conv`)."""
    mean, std = [float(v) for v in mean] * (3 // len(mean)), [float(v) for v in std] * (3 // len(std))
    if channels != 3:
        mean, std = [sum(mean) / 3] * channels, [sum(std) / 3] * channels
    return [mean, std]


def weights_framing(weights) -> ShorterSide:
    """How the ``transforms()`` of ``weights`` (a torchvision classifier's weights enum member) give a picture the
    network's input: the shorter side resized to their ``resize_size`` (256 for most, 232 for ResNet-50's V2) with
    their filter (bilinear, bicubic for some), antialiased, then their centre crop, the offsets rounded: the picture
    behind every accuracy torchvision publishes for them."""
    transform = weights.transforms()
    return ShorterSide(int(transform.resize_size[0]), transform.interpolation.value,
                       said="its weights' transforms() do")


def _modules_named(model: nn.Module, kind: type) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, kind)]


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the model's first convolution ``in_channels`` inputs, keeping what it learnt (timm's
    ``adapt_input_conv``): grey sums the RGB kernels; other counts repeat them, scaled by 3 / in_channels."""
    if in_channels == 3:
        return
    path = _modules_named(model, nn.Conv2d)[0]
    conv = model.get_submodule(path)
    weight = conv.weight.detach()  # out x 3 x k x k
    if in_channels == 1:
        new = weight.sum(dim=1, keepdim=True)
    else:
        new = weight.repeat(1, (in_channels + 2) // 3, 1, 1)[:, :in_channels] * (3 / in_channels)
    adapted = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        conv.groups, conv.bias is not None, conv.padding_mode, device=weight.device,
                        dtype=weight.dtype)
    with torch.no_grad():
        adapted.weight.copy_(new)
        if conv.bias is not None:
            adapted.bias.copy_(conv.bias)
    _replace(model, path, adapted)


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier layer: the model's last ``nn.Linear`` with ``num_classes`` outputs (torch's init); the
    ImageNet head itself stays where ``num_classes`` is its 1,000 (the explorer shows the backbone as trained)."""
    path = _modules_named(model, nn.Linear)[-1]
    old = model.get_submodule(path)
    if old.out_features == num_classes:
        return
    _replace(model, path, nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype))


def load_imagenet_weights(model: nn.Module, name: str) -> None:
    """Put ``name``'s ImageNet weights from the cache (downloaded there if absent) into torchvision's 1000-class,
    RGB ``model``.

    Raises:
        CnnlabError: one line: the file is absent and cannot be downloaded (naming it and where to put it), it is
            not a weights-only state dict (or truncated), or it does not fit the architecture.
    """
    weights = weights_enum(name)
    path = ensure_weights(weights, name)
    expected = f"the file from {weights_url(weights)}"
    state = read_state_dict(path, expected, unreadable_hint="; delete it to download it again")
    load_state_dict_into(model, network_state(name, state), path, f"{name} (torchvision {BACKBONES[name].builder})",
                         expected)


def network_state(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state``, a state dict of ``name``'s torchvision network (its hosted weights file, or one saved elsewhere),
    with the tensors the network cnnlab builds does not have left out, as torchvision's pretrained builder drops
    them: GoogLeNet's and Inception v3's auxiliary heads' (:mod:`cnnlab.models.pretrained_quirks`). DenseNet's
    older key names are read where every state dict's keys are (:func:`cnnlab.models.state_dict.network_keys`)."""
    return without_aux_heads(state, BACKBONES[name].builder)


class Backbone(NamedTuple):
    """What :func:`backbone_for` gives: the ``model`` shaped as the file has it, its input ``channels`` and its
    ``classes``, and the file's ``state`` under the model's key names with ``how`` they were read, in words for the
    page (:func:`~cnnlab.models.state_dict.network_keys`), to load into it."""

    model: nn.Module
    channels: int
    classes: int
    state: dict[str, torch.Tensor]
    how: str


def backbone_for(name: str, state: dict[str, torch.Tensor], path: str | Path,
                 config: dict[str, Any] | None = None) -> Backbone:
    """``name``'s architecture (without weights) shaped as ``state``, a state dict of it from the file ``path``
    (:func:`network_state`'s), has it: its first convolution's input channels and its head's classes (a backbone
    fine-tuned on grey pictures, or on other classes). Its keys are read as the network's once, for the shapes and
    the load alike (:func:`~cnnlab.models.state_dict.network_keys`, ``config`` the config.json beside ``path``
    where the load has read it: a prefix such as ``module.`` dropped, a Transformers or timm network's under
    torchvision's names); a key that still does not fit counts under a prefix.

    What else does not fit is left for :func:`~cnnlab.models.state_dict.load_keyed` to name.

    Raises:
        CnnlabError: one line: the file is a Transformers or timm network other than this one
            (:func:`~cnnlab.models.state_dict.network_keys`).
    """
    model = _builder(name)(num_classes=1000, in_channels=3)
    state, how = network_keys(state, set(model.state_dict()), path, BACKBONES[name].builder,
                              Head.of(model), config)
    shapes = {}
    for kind, index in ((nn.Conv2d, 0), (nn.Linear, -1)):
        key = _modules_named(model, kind)[index] + ".weight"
        shapes[kind] = next((v.shape for k, v in state.items() if k == key or k.endswith("." + key)), None)
    channels = shapes[nn.Conv2d][1] if shapes[nn.Conv2d] is not None and len(shapes[nn.Conv2d]) == 4 else 3
    classes = shapes[nn.Linear][0] if shapes[nn.Linear] is not None and len(shapes[nn.Linear]) == 2 else 1000
    adapt_first_conv(model, channels)
    replace_head(model, classes)
    return Backbone(model, channels, classes, state, how)


def ensure_weights(weights, name: str) -> Path:
    """The file of ``weights`` (a torchvision weights enum member) in the cache, downloaded first when absent; one
    line naming network ``name``, the file and where to put it when that fails. The one way cnnlab fetches weights:
    the ImageNet backbones' and ``torchvision-NAME``'s alike."""
    path = weights_file(weights)
    if not path.is_file():
        _download(weights, name, path)
    return path


def _download(weights, name: str, path: Path) -> None:
    """Fetch the file of ``weights`` into the cache, checked against the hash prefix in its file name, written
    atomically; one line naming ``name``, the file and where to put it when that fails."""
    url = download_url(weights)
    where = (f"{name}'s weights {path.name} are not in {path.parent} and could not be downloaded from {url}")
    hint = (f"download that file on a connected machine and put it at {path} (or set TORCH_HOME), or set "
            f"{WEIGHTS_MIRROR_ENV} to a mirror URL or a folder that has it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            def write(tmp: str) -> None:
                digest = hashlib.sha256()
                with open(tmp, "wb") as f:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
                expected = re.search(r"-([a-f0-9]+)\.", path.name)  # torch.hub's convention: resnet18-f37072fd.pth
                if expected and not digest.hexdigest().startswith(expected.group(1)):
                    raise CnnlabError(f"{where}: the download's sha256 {digest.hexdigest()[:12]}... does not start "
                                      f"with {expected.group(1)}; {hint}")

            atomic_write(path, write)
    except CnnlabError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:  # offline, refused, timed out, unwritable cache
        reason = getattr(e, "reason", None) or e
        raise CnnlabError(f"{where} ({summary(reason, 120)}); {hint}") from None


# Where torchvision keeps a network's whole body in one Sequential (MobileNet, EfficientNet, ConvNeXt: features;
# RegNet: trunk_output), its items are the stages: one row for the body would show no feature map between input and
# head. ResNet's layer1-4 are stages already.
_BODIES = ("features", "trunk_output")


# Parameter-free modules registered for what a forward does as functions (with_stages), in the order it does them
_FUNCTIONAL = ("renormalise", "pool", "flatten")


def _stages(self: nn.Module) -> list[nn.Module]:
    """The forward pass as a sequence of modules (:func:`cnnlab.models.summary.stages`, used by summaries, the report
    and the explorer): torchvision's children in order, a body Sequential's items in its place, with what its
    forward does as functions: GoogLeNet's and Inception v3's renormalisation first, MobileNetV2's pool and
    DenseNet's ReLU and pool, and the flatten before the classifier."""
    children = [part for n, m in self.named_children() if n not in _FUNCTIONAL
                for part in (m.children() if n in _BODIES else [m])]
    before, after = ([getattr(self, n)] if hasattr(self, n) else [] for n in ("renormalise", "flatten"))
    pool = list(self.pool) if hasattr(self, "pool") else []
    return [*before, *children[:-1], *pool, *after, children[-1]]


def _renormalised_input(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GoogLeNet's and Inception v3's ``_transform_input``, done by a ``renormalise`` module (any channel count)."""
    return self.renormalise(x)


_STAGED: dict[type, type] = {}


def with_stages(model: nn.Module, name: str) -> nn.Module:
    """Give torchvision's ``model`` of ImageNet model ``name`` a ``stages()`` method (a subclass of its own class with
    the same name, forward and state_dict keys) and parameter-free modules for what its forward does as functions:
    the flatten before the classifier (its backbone's ``flattens``), MobileNetV2's global average pool, DenseNet's ReLU
    and pool (its ``pools``), GoogLeNet's and Inception v3's input renormalisation from the weights' RGB mean and std
    (:func:`pretrained_normalize`), which its forward then calls."""
    backbone = BACKBONES[name]
    cls = type(model)
    if cls not in _STAGED:
        methods = {"stages": _stages, "__doc__": cls.__doc__}
        if hasattr(cls, "_transform_input"):
            methods["_transform_input"] = _renormalised_input
        _STAGED[cls] = type(cls.__name__, (cls,), methods)
    model.__class__ = _STAGED[cls]
    if getattr(model, "transform_input", False):
        model.renormalise = Renormalise(*pretrained_normalize(name, 3))
    if backbone.pools:
        model.pool = nn.Sequential(*([nn.ReLU()] if backbone.pools == "relu+avg" else []), nn.AdaptiveAvgPool2d(1))
    if backbone.flattens:
        model.flatten = nn.Flatten(1)
    return model


def pretrained_table() -> str:
    """``cnnlab models --pretrained``: one model a line, its name first (no header, so ``cut -d' ' -f1`` gives the
    names), then torchvision's weights, their ImageNet top-1, parameters with the 1000-class head, input side, and
    whether the weights file is in the cache (its path)."""
    rows = []
    for name in BACKBONES:
        weights = weights_enum(name)
        top1 = weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        path = weights_file(weights)
        rows.append([name, BACKBONES[name].weights, f"top-1 {top1:.1f}%", f"{weights.meta['num_params']:,} params",
                     f"{crop_size(name)}x{crop_size(name)}", f"{'cached' if path.is_file() else 'not cached'}: {path}"])
    return "\n".join(text_table([""] * 6, rows, "lllrll").splitlines()[1:])


def _builder(name: str):
    def build(num_classes: int = 10, in_channels: int = 1, ops: str = "torch", pretrained: bool = False) -> nn.Module:
        if ops != "torch":
            raise CnnlabError(f"{name} is torchvision's network, built on torch ops only: expected ops 'torch', "
                              f"got {ops!r}")
        import torchvision.models  # deferred: importing torchvision is slow

        backbone = BACKBONES[name]
        build = lambda: torchvision.models.get_model(backbone.builder, weights=None, num_classes=1000,  # noqa: E731
                                                     **_BUILD_OPTIONS.get(backbone.builder, {}))
        try:
            model = build()
        except NotImplementedError:  # RegNet computes its widths from tensors, which the meta device (where
            device = torch.get_default_device()  # min_input_size and summaries build models) cannot read
            with torch.device("cpu"):
                model = build()
            model = model.to(device)
        if pretrained:
            load_imagenet_weights(model, name)
        adapt_first_conv(model, in_channels)
        replace_head(model, num_classes)
        return with_stages(model, name)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"torchvision's {BACKBONES[name].builder} ({BACKBONES[name].weights} with ``pretrained``)."
    return build


for _name, _backbone in BACKBONES.items():
    register_model(_name, input_size=functools.partial(crop_size, _name), lr=SGD_LR, section="14.2",
                   weights=_backbone.weights)(_builder(_name))
