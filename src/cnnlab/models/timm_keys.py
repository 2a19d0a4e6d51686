"""timm's ConvNeXt, EfficientNet, MobileNetV2, RegNetY and VGG classifiers' weights under torchvision's key names.

timm (pytorch-image-models) publishes its weights on the Hugging Face Hub as ``model.safetensors`` beside a
``config.json`` that names the ``architecture`` and keeps its ``pretrained_cfg`` (input size, mean, std, crop).
Its ResNets, ResNeXts and DenseNets keep torchvision's key names; these five families are torchvision's networks
under other names, the same logits for the same tensors, and are mapped here by structure (the stage's and the
block's index and the part's role), so any depth maps alike, under a wrapper's names too (kept for
:func:`~cnnlab.models.state_dict.without_prefix` to drop), and without the classifier where it was saved without
one (``num_classes=0``, ``reset_classifier(0)``); nothing of timm is imported or run:

- ConvNeXt: ``stem.0``/``stem.1`` are ``features.0.0``/``.1``; stage ``s``'s ``downsample`` is ``features.{2s}``,
  its block ``b`` ``features.{2s+1}.{b}``, whose ``conv_dw``, ``norm``, ``mlp.fc1`` and ``mlp.fc2`` are its
  ``block`` items 0, 2, 3 and 5 and whose ``gamma`` (C) is ``layer_scale`` (C x 1 x 1); ``head.norm`` and
  ``head.fc`` are ``classifier.0`` and ``classifier.2``.
- EfficientNet: ``conv_stem``/``bn1`` are ``features.0.0``/``.1``; block ``b`` of stage ``s`` is
  ``features.{s+1}.{b}``, whose parts, in the order they run (the expanding 1x1 convolution where there is one, the
  depthwise convolution, the squeeze-and-excitation, the projecting 1x1), are its ``block`` items in turn, each
  convolution ``.0`` and its batch norm ``.1`` (a depthwise-separable block, without ``conv_pwl``, runs ``conv_dw``/
  ``bn1`` then ``conv_pw``/``bn2``; an inverted residual ``conv_pw``/``bn1``, ``conv_dw``/``bn2``, ``conv_pwl``/
  ``bn3``), its ``se.conv_reduce``/``conv_expand`` the ``fc1``/``fc2``; ``conv_head``/``bn2`` are the last
  ``features`` item, ``classifier`` is ``classifier.1``.
- MobileNetV2 (``mobilenetv2_100``: ReLU6, a batch-norm epsilon of 1e-5 and the 1280-channel head, as
  torchvision's): its EfficientNet's names without a squeeze-and-excitation (``blocks.0.0.se``, which tells them
  apart), its first block depthwise-separable (``blocks.0.0.conv_dw``, which EfficientNetV2's is not); block ``b``
  of stage ``s`` is ``features.{1 + the blocks of the stages before + b}``, whose convolutions followed by an
  activation are its ``conv.{i}.0`` with their batch norm ``conv.{i}.1`` (a depthwise-separable block's
  ``conv_dw``/``bn1``; an inverted residual's ``conv_pw``/``bn1`` then ``conv_dw``/``bn2``) and whose projecting
  convolution and its batch norm are the next two items (``conv_pw``/``bn2``, ``conv_pwl``/``bn3``);
  ``conv_head``/``bn2`` are the last ``features`` item, ``classifier`` is ``classifier.1``.
- RegNet: ``stem.conv``/``stem.bn`` are ``stem.0``/``.1``; block ``b`` (from 1) of stage ``s`` (``s{s}.b{b}``) is
  ``trunk_output.block{s}.block{s}-{b-1}``, its ``conv1``, ``conv2`` and ``conv3`` the ``f.a``, ``f.b`` and ``f.c``
  (``.conv``/``.bn`` as ``.0``/``.1``), its ``se`` ``f.se``, its ``downsample`` ``proj``; ``head.fc`` is ``fc``.
- VGG: ``features`` keep their names; the ``pre_logits`` ``fc1`` and ``fc2``, convolutions over the 7 x 7 map
  (4096 x 512 x 7 x 7, 4096 x 4096 x 1 x 1), are torchvision's linear ``classifier.0`` and ``classifier.3`` over the
  flattened map, the same products at 224 px, and ``head.fc`` is ``classifier.6``.

What the keys cannot tell (timm's ``tf_efficientnet_b0`` has ``efficientnet_b0``'s keys, but pads as TensorFlow does
and normalises with another epsilon) ``config.json`` says where it lies beside the file: an ``architecture`` that
is not the network asked for, or is but built otherwise (its ``model_args``), is refused in one line rather than
loaded into it, whatever its keys (:func:`check_architecture`). MobileNetV3 is not mapped: timm's normalise with a
batch-norm epsilon of 1e-5, torchvision's with 1e-3, another network for the same tensors; nor EfficientNetV2-S, of
which timm has no torchvision network (:data:`_NONE_SAME` says why). Both are told by their keys too, and refused
for torchvision's network of that name without a config.json (:data:`_TOLD_BY_KEYS`). Keys a family's signature
tells that are another of timm's networks are refused in one line for any network, saying what they are
(:attr:`Layout.other`): ConvNeXt V2 (a global response normalisation, ``mlp.grn``, in each block), and the
EfficientNet/MobileNet family's networks that are neither its MobileNetV2 nor its EfficientNets (no squeeze-and-
excitation in the first block, and one later or a depthwise kernel other than 3 x 3: ``efficientnet_lite0``,
``mnasnet_100``, ``semnasnet_100``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.io import json_beside
from cnnlab.models.torchvision_names import CONVNEXT_PARTS, convnext_block, renamed, wrapper_names

# torchvision's builder -> timm's architecture of the same network (the same logits for the same tensors)
SAME_NETWORK = {
    **{name: name for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                               "wide_resnet50_2", "densenet121", "convnext_tiny", "convnext_small", "convnext_base",
                               "convnext_large", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                               "efficientnet_b3", "vgg11", "vgg11_bn", "vgg16")},
    "regnet_y_400mf": "regnety_004",
    "mobilenet_v2": "mobilenetv2_100",
}
# Why timm has none of these torchvision networks, for the refusal's line
_MOBILENETV3S = ("mobilenet_v3_large", "mobilenet_v3_small")
_MOBILENETV3_WHY = "timm's MobileNetV3s normalise with a batch-norm epsilon of 1e-5, torchvision's with 1e-3: " \
    "another network for the same tensors"
_NONE_SAME = dict.fromkeys(_MOBILENETV3S, _MOBILENETV3_WHY)
# timm's inception_v3 has torchvision's keys and logits, but its pretrained_cfg feeds it (pixel - 0.5) / 0.5, which
# cnnlab's Inception v3 makes itself from an ImageNet-normalised input (transform_input): fed as the file's config
# says, it would be renormalised twice
_NONE_SAME["inception_v3"] = "timm's inception_v3 is fed (pixel - 0.5) / 0.5 as its pretrained_cfg says, which " \
    "cnnlab's Inception v3 makes itself from ImageNet's normalisation"
# timm's EfficientNetV2-Ss (timm/models/efficientnet.py): tf_efficientnetv2_s pads its strided convolutions as
# TensorFlow does ("same", more below and right), efficientnetv2_s normalises with a batch-norm epsilon of 1e-5 where
# torchvision's does with 1e-3, and efficientnetv2_rw_s is built of other stages
_NONE_SAME["efficientnet_v2_s"] = "timm's tf_efficientnetv2_s pads as TensorFlow does, its efficientnetv2_s " \
    "normalises with a batch-norm epsilon of 1e-5 (torchvision's 1e-3) and its efficientnetv2_rw_s has other stages: " \
    "other networks for the same tensors"
# The timm families whose keys (under a wrapper's names too) tell them from torchvision's network of that name with no
# config.json beside them (torchvision's network -> timm's family, the keys, and those in words): its MobileNetV3s'
# are its EfficientNets', but a head convolution with a bias and no batch norm after it (the classifier's are absent
# from a file saved without it); its EfficientNetV2s' first block is plain convolutions (blocks.0.0.conv), where its
# EfficientNets' and MobileNetV2's is depthwise-separable
_TOLD_BY_KEYS = {
    **dict.fromkeys(_MOBILENETV3S, ("MobileNetV3", ("conv_stem.weight", "blocks.0.0.conv_dw.weight", "conv_head.bias"),
                                    "conv_stem, blocks, conv_head with a bias")),
    "efficientnet_v2_s": ("EfficientNetV2", ("conv_stem.weight", "blocks.0.0.conv.weight", "conv_head.weight"),
                          "conv_stem, a first block of plain convolutions, conv_head"),
}
# timm's model arguments that leave the network evaluated as its architecture's default: the input channels and
# classes (which the keys' shapes tell), dropouts, and the pooling where it is the average
_UNCHANGED_BY = {"in_chans", "num_classes", "drop_rate", "drop_path_rate", "drop_block_rate", "global_pool"}

_CONVNEXT_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(?:(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(\w+)|(gamma))")
_CONVNEXT_PART = dict(zip(("conv_dw", "norm", "mlp.fc1", "mlp.fc2"), CONVNEXT_PARTS, strict=True))

_EFFICIENTNET_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(conv_pw|conv_dw|conv_pwl|bn[123]|se)\.(.+)")
# A block's parts in the order they run, each a convolution and its batch norm (or the squeeze-and-excitation)
_DEPTHWISE_SEPARABLE = (("conv_dw", "bn1"), ("se",), ("conv_pw", "bn2"))
_INVERTED_RESIDUAL = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("se",), ("conv_pwl", "bn3"))
_SE_PART = {"conv_reduce": "fc1", "conv_expand": "fc2"}

# torchvision's MobileNetV2 block: its ``conv`` items, a convolution with its batch norm (``.0``/``.1``) where an
# activation follows, else the projecting convolution and its batch norm on their own
_MOBILENETV2_PART = {False: {"conv_dw": "0.0", "bn1": "0.1", "conv_pw": "1", "bn2": "2"},  # depthwise-separable
                     True: {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "conv_pwl": "2",
                            "bn3": "3"}}  # an inverted residual

_REGNET_BLOCK = re.compile(r"s(\d+)\.b(\d+)\.(conv[123]|se|downsample)\.(\w+)\.(\w+)")
_REGNET_PART = {"conv1": "f.a", "conv2": "f.b", "conv3": "f.c", "se": "f.se", "downsample": "proj"}
_CONV_BN = {"conv": "0", "bn": "1"}


def _convnext_names(keys: Collection[str]) -> Callable[[str], str | None]:
    """torchvision's name of timm's ConvNeXt tensor ``key``; None for a key of no place there."""
    def name(key: str) -> str | None:
        if m := re.fullmatch(r"stem\.([01])\.(\w+)", key):  # the 4x4 patch convolution, then its LayerNorm
            return f"features.0.{m[1]}.{m[2]}"
        if m := re.fullmatch(r"stages\.(\d+)\.downsample\.([01])\.(\w+)", key):  # a LayerNorm, a 2x2 convolution
            return f"features.{2 * int(m[1])}.{m[2]}.{m[3]}"
        if m := _CONVNEXT_BLOCK.fullmatch(key):  # a part's tensor, or the layer scale (gamma)
            return convnext_block(m[1], m[2], _CONVNEXT_PART.get(m[3]), m[4])
        if m := re.fullmatch(r"head\.(norm|fc)\.(\w+)", key):
            return f"classifier.{0 if m[1] == 'norm' else 2}.{m[2]}"
        return None
    return name


def _efficientnet_names(keys: Collection[str]) -> Callable[[str], str | None]:
    """How timm's EfficientNet tensors of ``keys`` are named in torchvision: a block's parts are numbered among
    those it has, and which they are depends on its kind (``conv_pw`` expands in an inverted residual, projects in
    a depthwise-separable block), so the names are read off all the keys."""
    blocks: dict[tuple[str, str], set[str]] = {}
    for key in keys:
        if m := _EFFICIENTNET_BLOCK.fullmatch(key):
            blocks.setdefault((m[1], m[2]), set()).add(m[3])
    last = 1 + max((int(stage) for stage, _ in blocks), default=-1) + 1  # the head's 1x1 after the last stage

    def name(key: str) -> str | None:
        if m := re.fullmatch(r"(conv_stem|bn1|conv_head|bn2)\.(\w+)", key):
            return f"features.{0 if m[1] in ('conv_stem', 'bn1') else last}.{0 if 'conv' in m[1] else 1}.{m[2]}"
        if m := re.fullmatch(r"classifier\.(\w+)", key):  # classifier.0 is the dropout
            return f"classifier.1.{m[1]}"
        if m := _EFFICIENTNET_BLOCK.fullmatch(key):
            stage, block, part, rest = m.groups()
            parts = blocks[stage, block]
            order = [p for p in (_INVERTED_RESIDUAL if "conv_pwl" in parts else _DEPTHWISE_SEPARABLE)
                     if p[0] in parts]
            index = next((i for i, p in enumerate(order) if part in p), None)
            if index is None:  # a part of another kind of block (an edge residual's bn1 beside no conv_pw)
                return None
            where = f"features.{int(stage) + 1}.{block}.block.{index}"
            if part == "se":
                se, _, tensor = rest.partition(".")
                return f"{where}.{_SE_PART[se]}.{tensor}" if se in _SE_PART else None
            return f"{where}.{order[index].index(part)}.{rest}"
        return None
    return name


def _mobilenetv2_names(keys: Collection[str]) -> Callable[[str], str | None]:
    """How timm's MobileNetV2 tensors of ``keys`` are named in torchvision, whose blocks are numbered through the
    stages (``features.1`` to ``features.17``), so the names are read off all the keys: block ``b`` of stage ``s``
    follows the blocks of the stages before it."""
    blocks: dict[int, set[int]] = {}
    inverted = set()  # the inverted residuals' (stage, block), told by their projecting conv_pwl
    for key in keys:
        if m := _EFFICIENTNET_BLOCK.fullmatch(key):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
            if m[3] == "conv_pwl":
                inverted.add((m[1], m[2]))
    counts = [1 + max(blocks.get(stage, {-1})) for stage in range(1 + max(blocks, default=-1))]
    first = [1 + sum(counts[:stage]) for stage in range(len(counts))]  # features.0 is the stem

    def name(key: str) -> str | None:
        if m := re.fullmatch(r"(conv_stem|bn1|conv_head|bn2)\.(\w+)", key):
            return f"features.{0 if m[1] in ('conv_stem', 'bn1') else 1 + sum(counts)}." \
                f"{0 if 'conv' in m[1] else 1}.{m[2]}"
        if m := re.fullmatch(r"classifier\.(\w+)", key):  # classifier.0 is the dropout
            return f"classifier.1.{m[1]}"
        if (m := _EFFICIENTNET_BLOCK.fullmatch(key)) and m[3] != "se":
            stage, block, part, rest = m.groups()
            part = _MOBILENETV2_PART[(stage, block) in inverted].get(part)
            return f"features.{first[int(stage)] + int(block)}.conv.{part}.{rest}" if part else None
        return None
    return name


def _regnet_names(keys: Collection[str]) -> Callable[[str], str | None]:
    """torchvision's name of timm's RegNet tensor ``key``; None for a key of no place there."""
    def name(key: str) -> str | None:
        if m := re.fullmatch(r"stem\.(conv|bn)\.(\w+)", key):
            return f"stem.{_CONV_BN[m[1]]}.{m[2]}"
        if m := _REGNET_BLOCK.fullmatch(key):
            stage, block, part, inner, tensor = m.groups()
            inner = inner if part == "se" else _CONV_BN.get(inner)  # se.fc1, conv1.conv, downsample.bn
            where = f"trunk_output.block{stage}.block{stage}-{int(block) - 1}"
            return f"{where}.{_REGNET_PART[part]}.{inner}.{tensor}" if inner else None
        if m := re.fullmatch(r"head\.fc\.(\w+)", key):
            return f"fc.{m[1]}"
        return None
    return name


def _vgg_names(keys: Collection[str]) -> Callable[[str], str | None]:
    """torchvision's name of timm's VGG tensor ``key``; None for a key of no place there."""
    def name(key: str) -> str | None:
        if re.fullmatch(r"features\.\d+\.\w+", key):
            return key
        if m := re.fullmatch(r"(pre_logits\.fc1|pre_logits\.fc2|head\.fc)\.(\w+)", key):
            return f"classifier.{ {'pre_logits.fc1': 0, 'pre_logits.fc2': 3, 'head.fc': 6}[m[1]]}.{m[2]}"
        return None
    return name


def _block_with(state: dict[str, torch.Tensor], found: Callable[[str, torch.Tensor], bool]) -> str:
    """The first block of timm's EfficientNet-family ``state`` (``blocks.{s}.{b}``, by stage then block) with a
    tensor ``found`` holds of its part's name and value; "" where none has."""
    blocks = sorted((int(m[1]), int(m[2])) for key, value in state.items()
                    if (m := _EFFICIENTNET_BLOCK.fullmatch(key)) and found(m[3] + "." + m[4], value))
    return f"blocks.{blocks[0][0]}.{blocks[0][1]}" if blocks else ""


def _not_mobilenetv2(state: dict[str, torch.Tensor]) -> str:
    """What timm's EfficientNet-family ``state`` (its keys without a wrapper's names), told as its MobileNetV2 by
    the first block's having no squeeze-and-excitation, is in words where it is not: a squeeze-and-excitation in a
    later block (``semnasnet_100``) or a depthwise kernel other than 3 x 3 (``efficientnet_lite0``,
    ``mnasnet_100``), which no mobilenetv2 of timm's has; "" where it has neither."""
    se = _block_with(state, lambda part, value: part.startswith("se."))
    kernel = _block_with(state, lambda part, value: part == "conv_dw.weight" and isinstance(value, torch.Tensor) and
                         value.dim() == 4 and tuple(value.shape[-2:]) != (3, 3))
    unlike = ([f"a squeeze-and-excitation in {se}"] if se else []) + \
        ([f"a {' x '.join(map(str, state[kernel + '.conv_dw.weight'].shape[-2:]))} depthwise convolution in "
          f"{kernel}"] if kernel else [])
    return "keys of timm's EfficientNet/MobileNet family that are neither its MobileNetV2's (" + \
        " and ".join(unlike) + ", where those have none and 3 x 3 alone) nor its EfficientNets' (no " \
        "squeeze-and-excitation in the first block)" if unlike else ""


def _convnext_v2(state: dict[str, torch.Tensor]) -> str:
    """timm's ConvNeXt V2 in words where ``state`` (its keys without a wrapper's names) has a block's global
    response normalisation (``stages.{s}.blocks.{b}.mlp.grn``, which torchvision's ConvNeXt has not); else ""."""
    grn = any(re.fullmatch(r"stages\.\d+\.blocks\.\d+\.mlp\.grn\.\w+", key) for key in state)
    return "timm's ConvNeXt V2 weights (its blocks' mlp.grn: a global response normalisation, which torchvision's " \
        "ConvNeXt has not)" if grn else ""


def _no_other(state: dict[str, torch.Tensor]) -> str:
    """"": nothing in the keys tells another network of timm's than the family's."""
    return ""


@dataclass(frozen=True)
class Layout:
    """A timm family whose weights are a torchvision network's: its name, the keys of its body that tell it (its
    stem's first), its classifier's weight (absent from a file saved without it: ``num_classes=0``,
    ``reset_classifier(0)``), and how its keys are named in torchvision, given all of them."""

    family: str
    signature: tuple[str, ...]
    classifier: str
    names: Callable[[Collection[str]], Callable[[str], str | None]]
    without: str = ""  # a key it does not have: its first block's squeeze-and-excitation, which EfficientNet's has
    # What keys its signature tells are where they are another network of timm's, in words ("": none): read under
    # this family's names they would be refused as not fitting, the file named as this family's
    other: Callable[[dict[str, torch.Tensor]], str] = _no_other


LAYOUTS = (Layout("ConvNeXt", ("stem.0.weight", "stages.0.blocks.0.conv_dw.weight"), "head.fc.weight",
                  _convnext_names, other=_convnext_v2),
           Layout("MobileNetV2", ("conv_stem.weight", "blocks.0.0.conv_dw.weight", "conv_head.weight", "bn2.weight"),
                  "classifier.weight", _mobilenetv2_names, without="blocks.0.0.se.conv_reduce.weight",
                  other=_not_mobilenetv2),
           Layout("EfficientNet", ("conv_stem.weight", "conv_head.weight", "bn2.weight"), "classifier.weight",
                  _efficientnet_names),
           Layout("RegNet", ("stem.conv.weight", "s1.b1.conv1.conv.weight"), "head.fc.weight", _regnet_names),
           Layout("VGG", ("features.0.weight", "pre_logits.fc1.weight"), "head.fc.weight", _vgg_names))


def _under(state: dict[str, torch.Tensor], keys: tuple[str, ...]) -> str | None:
    """The names a wrapper put before ``keys`` (read off the first, a stem's: :func:`wrapper_names`; "": none) where
    ``state`` has every one of them under those names; else None."""
    head = wrapper_names(state, keys[:1])
    return head if all(head + key in state for key in keys) else None


def _layout(state: dict[str, torch.Tensor]) -> tuple[Layout | None, str]:
    """The timm family whose keys ``state`` has (its signature's keys all there, its classifier's perhaps not),
    perhaps all under a wrapper's names, and those names ("": none); or ``(None, "")``."""
    for layout in LAYOUTS:
        head = _under(state, layout.signature)
        if head is not None and head + layout.without not in state:
            return layout, head
    return None, ""


def _body(state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` under a wrapper's names ``head`` ("": none), by their names without it: what a
    layout's :attr:`Layout.names` and :attr:`Layout.other` read."""
    return {key[len(head):]: value for key, value in state.items() if key.startswith(head)}


def timm_config(path: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` beside ``path`` where it is timm's (an ``architecture`` and a ``pretrained_cfg``, as
    timm's ``push_to_hub`` writes it); {} otherwise. ``config``: that file's object where the load has read it
    already (:func:`~cnnlab.io.json_beside`), so that one read serves each reader of it."""
    return _timms(json_beside(path, "config.json") if config is None else config)


def _timms(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a config.json's object) where it is timm's (:func:`timm_config`); {} otherwise."""
    return config if isinstance(config.get("architecture"), str) and \
        isinstance(config.get("pretrained_cfg"), dict) else {}


def check_architecture(path: str | Path, network: str | None, config: dict[str, Any]) -> None:
    """Refuse the file ``path`` for torchvision's ``network`` (its builder's name) where timm's ``config``, the
    ``config.json`` beside it, names another architecture than timm's of that network (:data:`SAME_NETWORK`), or
    that one built otherwise (:func:`_built_otherwise`); nothing where there is no such file or no network is named.

    Raises:
        CnnlabError: one line naming both and what would fit.
    """
    config = _timms(config)
    architecture = config.get("architecture")
    if network is None or architecture is None:
        return
    same = SAME_NETWORK.get(network)
    otherwise = _built_otherwise(config) if same == architecture else None
    if same == architecture and otherwise is None:
        return
    instead = f"timm's {same}" + (" as timm builds it by default" if otherwise else "") if same else \
        f"torchvision's own weights ({_NONE_SAME[network]})" if network in _NONE_SAME else \
        "torchvision's own weights (cnnlab reads no timm network into it)"
    raise CnnlabError(f"{path} holds timm's {architecture} weights{f' built with {otherwise}' if otherwise else ''}, "
                      f"as config.json beside it says, another network than torchvision's {network}; expected "
                      f"{instead}")


def _built_otherwise(config: dict[str, Any]) -> str | None:
    """What timm's ``config`` says its network was built with that makes it another than its architecture's
    default (an ``output_stride`` of 16 dilates a ResNet, a ``global_pool`` of ``max`` pools otherwise), in
    words; None where it says only what the keys tell or evaluation ignores (:data:`_UNCHANGED_BY`)."""
    args = config.get("model_args") if isinstance(config.get("model_args"), dict) else {}
    pool = args.get("global_pool", config.get("global_pool", "avg"))
    if pool != "avg":
        return f"global_pool {pool!r} (torchvision's networks average)"
    others = sorted(set(args) - _UNCHANGED_BY)
    return f"model_args {', '.join(f'{k}={args[k]!r}' for k in others)}" if others else None


def torchvision_keys(state: dict[str, torch.Tensor], path: str | Path, network: str | None,
                     config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """``state``, read from ``path``, under torchvision's key names where it is of a timm family of :data:`LAYOUTS`,
    and what was done in words for the page (naming the ``architecture`` of timm's ``config``, the
    config.json beside it, where there is one); else as it is, and ``""``.

    Raises:
        CnnlabError: one line: it is timm's MobileNetV3 or EfficientNetV2 (its keys tell it: no config.json needed,
            :data:`_TOLD_BY_KEYS`) and ``network`` torchvision's network of that name, which is another network; or
            its keys are another network of timm's than their family's, which no network cnnlab reads is
            (:attr:`Layout.other`).
    """
    # for those torchvision networks alone: into another network such a file is refused as not fitting it, and the
    # reason _NONE_SAME gives for that network (Inception v3's) is not this file's
    family, keys, words = _TOLD_BY_KEYS.get(network, ("", (), ""))
    if keys and _under(state, keys) is not None:  # under a wrapper's names too, as the layouts are told
        raise CnnlabError(f"{path} holds timm's {family} weights (its keys {words}), another network than "
                          f"torchvision's {network} ({_NONE_SAME[network]}); expected torchvision's own weights")
    layout, head = _layout(state)
    if layout is None:
        return state, ""
    body = _body(state, head)  # read by both: the wrapper's names taken off once
    other = layout.other(body)
    if other:  # for any network: none cnnlab reads is it, and read under the family's names it would be named so
        same = SAME_NETWORK.get(network or "")
        raise CnnlabError(f"{path} holds {other}: no network cnnlab reads; expected "
                          + (f"timm's {same} or torchvision's own weights" if same else
                             f"torchvision's own weights for {network}" if network else
                             "the weights of a network cnnlab reads"))
    architecture = _timms(config).get("architecture")
    what = f"timm's {architecture} ({layout.family})" if architecture else f"timm's {layout.family}"
    bare = "" if head + layout.classifier in state else ", no classifier among them,"
    return renamed(state, layout.names(body), head), \
        f"{what} keys{bare} read under torchvision's {layout.family} names"
