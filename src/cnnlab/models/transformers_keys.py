"""Hugging Face Transformers' ResNet and ConvNeXt classifiers' weights under torchvision's key names.

The CNN classifiers most used on the Hugging Face Hub are Transformers' own classes, saved by ``save_pretrained`` as
``model.safetensors`` beside a ``config.json``: ``ResNetForImageClassification`` (microsoft/resnet-18 ... -152) and
``ConvNextForImageClassification`` (facebook/convnext-tiny-224 ...). Their networks are torchvision's ResNet and
ConvNeXt; only the names differ. Here the names are mapped by structure, the stage's and the block's index and the
part's role in the block, so any depth maps alike (under a wrapper's names too, a Lightning module's ``model.``,
which are kept for :func:`~cnnlab.models.state_dict.without_prefix` to drop), and nothing of Transformers is imported
or run. Their bare bodies, ``ResNetModel`` and ``ConvNextModel`` (``AutoModel.from_pretrained``'s, saved without a
classifier), name the same tensors without the body's ``resnet.``/``convnext.``, and are read alike:

- ResNet: the stem's convolution and batch norm are ``conv1``/``bn1``; block ``b`` of stage ``s`` is
  ``layer{s+1}.{b}``, its ``layer.{i}`` convolution and batch norm ``conv{i+1}``/``bn{i+1}`` (two in a basic block,
  three in a bottleneck), its ``shortcut`` the ``downsample`` pair; the head ``classifier.1`` is ``fc``.
- ConvNeXt: torchvision keeps the stem, the four stages and the three downsampling layers between them in one
  ``features`` list, so stage ``s`` is ``features.{2s+1}`` and its downsampling layer ``features.{2s}``; a block's
  depthwise convolution, LayerNorm and two linear layers are items 0, 2, 3 and 5 of its ``block`` (a permute and
  the GELU between), and its ``layer_scale_parameter`` (C) is ``layer_scale`` (C x 1 x 1, the same product over
  NCHW); the final LayerNorm and the linear head are ``classifier.0`` and ``classifier.2``.

What the keys cannot tell, because the shapes are the same either way (where a bottleneck strides, whether the first
stage downsamples, the activation), ``config.json`` beside the file says, where there is one; a setting that makes
another network than torchvision's is refused in one line rather than loaded into the wrong one. Without it the
Transformers defaults hold, which are torchvision's. One difference is kept: Transformers' ConvNeXt normalises the
pooled features with an epsilon of ``layer_norm_eps`` (1e-12), torchvision's with 1e-6, which scales the normalised
features by 1 - 5e-7 / their variance: float32's rounding for a variance near 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.torchvision_names import CONVNEXT_PARTS, convnext_block, renamed, wrapper_names

_RESNET_STEM = re.compile(r"resnet\.embedder\.embedder\.(convolution|normalization)\.(\w+)")
_RESNET_BLOCK = re.compile(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:layer\.(\d+)|shortcut)\."
                           r"(convolution|normalization)\.(\w+)")
_RESNET_PART = {"convolution": "conv", "normalization": "bn"}

_CONVNEXT_STEM = re.compile(r"convnext\.embeddings\.(patch_embeddings|layernorm)\.(\w+)")
_CONVNEXT_DOWNSAMPLING = re.compile(r"convnext\.encoder\.stages\.(\d+)\.downsampling_layer\.(\d+)\.(\w+)")
_CONVNEXT_BLOCK = re.compile(r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:(dwconv|layernorm|pwconv1|pwconv2)"
                             r"\.(\w+)|(layer_scale_parameter))")
_CONVNEXT_PART = dict(zip(("dwconv", "layernorm", "pwconv1", "pwconv2"), CONVNEXT_PARTS, strict=True))


def _resnet_name(key: str) -> str | None:
    """torchvision's name of Transformers' ResNet tensor ``key``; None for a key of no place there."""
    if m := _RESNET_STEM.fullmatch(key):
        return f"{_RESNET_PART[m[1]]}1.{m[2]}"
    if m := _RESNET_BLOCK.fullmatch(key):
        stage, block, conv, part, tensor = m.groups()
        where = f"layer{int(stage) + 1}.{block}"
        if conv is None:  # the shortcut: a 1x1 convolution (strided where the stage downsamples) and its batch norm
            return f"{where}.downsample.{0 if part == 'convolution' else 1}.{tensor}"
        return f"{where}.{_RESNET_PART[part]}{int(conv) + 1}.{tensor}"
    if m := re.fullmatch(r"classifier\.1\.(\w+)", key):  # classifier.0 is the flatten
        return f"fc.{m[1]}"
    return None


def _convnext_name(key: str) -> str | None:
    """torchvision's name of Transformers' ConvNeXt tensor ``key``; None for a key of no place there."""
    if m := _CONVNEXT_STEM.fullmatch(key):  # the 4x4 patch convolution, then its LayerNorm
        return f"features.0.{0 if m[1] == 'patch_embeddings' else 1}.{m[2]}"
    if m := _CONVNEXT_DOWNSAMPLING.fullmatch(key):  # a LayerNorm, then a 2x2 convolution of stride 2
        return f"features.{2 * int(m[1])}.{m[2]}.{m[3]}"
    if m := _CONVNEXT_BLOCK.fullmatch(key):  # a part's tensor, or the layer scale
        return convnext_block(m[1], m[2], _CONVNEXT_PART.get(m[3]), m[4])
    if m := re.fullmatch(r"convnext\.layernorm\.(\w+)", key):
        return f"classifier.0.{m[1]}"
    if m := re.fullmatch(r"classifier\.(\w+)", key):
        return f"classifier.2.{m[1]}"
    return None


def _resnet_difference(config: dict[str, Any]) -> str | None:
    """Why a ResNet of ``config`` (its config.json) is another network than torchvision's, in words; None where it
    is the same."""
    if config.get("layer_type", "bottleneck") == "bottleneck" and config.get("downsample_in_bottleneck"):
        return ("its bottlenecks stride on their first 1x1 convolution (downsample_in_bottleneck), torchvision's "
                "on the 3x3 (ResNet v1.5)")
    if config.get("downsample_in_first_stage"):
        return "its first stage downsamples (downsample_in_first_stage), torchvision's does not"
    if config.get("hidden_act", "relu") != "relu":
        return f"its activation is {config['hidden_act']!r} (hidden_act), torchvision's ReLU"
    return None


def _convnext_difference(config: dict[str, Any]) -> str | None:
    """Why a ConvNeXt of ``config`` is another network than torchvision's; None where it is the same."""
    if config.get("hidden_act", "gelu") != "gelu":  # Transformers' "gelu" is the exact GELU, as torchvision's
        return f"its activation is {config['hidden_act']!r} (hidden_act), torchvision's GELU"
    return None


@dataclass(frozen=True)
class Layout:
    """A Transformers class whose weights are a torchvision network's: its name and its bare body's (the class
    without a classifier, ``AutoModel``'s), the torchvision family, the top name of its body's keys
    (``base_model_prefix``) and the body's own top names, its stem convolution's key within the body, how a key is
    named in torchvision, and how its config.json can make it another network."""

    cls: str
    bare: str
    family: str
    body: str
    parts: frozenset[str]
    stem: str
    name: Callable[[str], str | None]
    difference: Callable[[dict[str, Any]], str | None]


LAYOUTS = (Layout("ResNetForImageClassification", "ResNetModel", "ResNet", "resnet", frozenset({"embedder", "encoder"}),
                  "embedder.embedder.convolution.weight", _resnet_name, _resnet_difference),
           Layout("ConvNextForImageClassification", "ConvNextModel", "ConvNeXt", "convnext",
                  frozenset({"embeddings", "encoder", "layernorm"}), "embeddings.patch_embeddings.weight",
                  _convnext_name, _convnext_difference))


@dataclass(frozen=True)
class Found:
    """A Transformers layout found in a state dict: the names a wrapper put before its keys ("": none), and whether
    they are a bare body's (``ResNetModel``'s, ``AutoModel.from_pretrained``'s save: its keys without the body's
    name, and no classifier)."""

    layout: Layout
    head: str
    bare: bool

    @property
    def cls(self) -> str:
        """The Transformers class that saved the keys."""
        return self.layout.bare if self.bare else self.layout.cls

    def name(self, key: str) -> str | None:
        """torchvision's name of the tensor ``key`` (under the wrapper's names); None for a key of no place there."""
        if not self.bare:
            return self.layout.name(key)
        return self.layout.name(f"{self.layout.body}.{key}") if key.split(".", 1)[0] in self.layout.parts else None


def _found(state: dict[str, torch.Tensor]) -> Found | None:
    """The Transformers class whose ``save_pretrained`` keys ``state`` has, perhaps all under a wrapper's names: a
    classifier's (every key under its body's name or its ``classifier``) or a bare body's (every key under the
    body's own top names); its stem among them. None for another state dict."""
    for layout in LAYOUTS:
        names = wrapper_names(state, (layout.stem,))  # the stem's key tells what comes before it
        if names + layout.stem not in state:
            continue
        body = f"{layout.body}."
        classifier = names == body or names.endswith(f".{body}")
        head = names[:-len(body)] if classifier else names
        tops = {key[len(head):].split(".", 1)[0] for key in state if key.startswith(head)}
        if tops <= ({layout.body, "classifier"} if classifier else layout.parts):
            return Found(layout, head, not classifier)
    return None


def transformers_layout(state: dict[str, torch.Tensor]) -> Layout | None:
    """The Transformers class whose ``save_pretrained`` keys ``state`` has, perhaps under a wrapper's names (a
    classifier's or its bare body's, :func:`_found`), or None."""
    found = _found(state)
    return found.layout if found is not None else None


def torchvision_keys(state: dict[str, torch.Tensor], path: str | Path,
                     config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """``state``, read from ``path``, under torchvision's key names where it is a Transformers ResNet's or ConvNeXt's
    (a bare body's too, which has no classifier's keys), and what was done in words for the page; else as it is,
    and ``""``.

    Raises:
        CnnlabError: one line: ``config``, the ``config.json`` beside ``path``, makes it another network than
            torchvision's.
    """
    found = _found(state)
    if found is None:
        return state, ""
    layout = found.layout
    difference = layout.difference(config)
    if difference:
        raise CnnlabError(f"{path} holds Hugging Face Transformers' {found.cls} weights of another network than "
                          f"torchvision's {layout.family}: {difference}, as config.json beside it says; expected "
                          f"weights of torchvision's architecture (Transformers' defaults)")
    return renamed(state, found.name, found.head), \
        f"Hugging Face Transformers' {found.cls} keys read under torchvision's {layout.family} names"
