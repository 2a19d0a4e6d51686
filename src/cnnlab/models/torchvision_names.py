"""Another library's tensors under torchvision's key names: what the Transformers and timm mappings share.

:mod:`cnnlab.models.transformers_keys` and :mod:`cnnlab.models.timm_keys` each name a library's tensors as
torchvision names the same tensors, by structure; both find the names a wrapper put before the keys (a Lightning
module's ``model.``) by one stem key, rename every key under them and keep the rest, and both give torchvision's
ConvNeXt block parts the same places.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

# torchvision's ConvNeXt block, a Sequential: the depthwise convolution, a permute, the LayerNorm, the two linear
# layers with the GELU between them, a permute back
CONVNEXT_PARTS = ("block.0", "block.2", "block.3", "block.5")
# A classifier's linear layer, which timm keeps as a convolution over the last feature map (VGG's pre_logits)
_LINEAR_WEIGHT = re.compile(r"(?:.*\.)?classifier\.\d+\.weight")


def convnext_block(stage: str, block: str, part: str | None, tensor: str | None) -> str:
    """torchvision's name of a tensor of ConvNeXt stage ``stage``'s (counted from 0) block ``block``: ``tensor`` of
    its ``part`` (:data:`CONVNEXT_PARTS`' place), or, where ``part`` is None, its layer scale. The stem, the four
    stages and the three downsampling layers between them are one ``features`` list, so stage ``s`` is
    ``features.{2s+1}`` (and the layer that downsamples into it ``features.{2s}``)."""
    where = f"features.{2 * int(stage) + 1}.{block}"
    return f"{where}.layer_scale" if part is None else f"{where}.{part}.{tensor}"


def wrapper_names(state: dict[str, torch.Tensor], stems: Iterable[str]) -> str:
    """The names a wrapper put before a library's keys (a Lightning module's ``model.``, DataParallel's
    ``module.``), read off its stem's key, one of ``stems``; "" where there are none, or several such keys
    disagree."""
    heads = {key[:-len(stem)] for key in state for stem in stems
             if key.endswith(stem) and (len(key) == len(stem) or key[-len(stem) - 1] == ".")}
    return heads.pop() if len(heads) == 1 else ""


def renamed(state: dict[str, torch.Tensor], name: Callable[[str], str | None],
            head: str) -> dict[str, torch.Tensor]:
    """``state``, whose keys under the wrapper's names ``head`` are a library's, under torchvision's: ``name``
    gives each one's (None: no place there, kept as it is for a strict load to name), and a tensor of another
    shape for the same product is reshaped: a ConvNeXt layer scale (C, scaling NHWC) as torchvision's (C x 1 x 1,
    on NCHW), a linear layer kept as a convolution over the whole map (out x C x H x W) as the flattened map's
    (out x CHW, the same order)."""
    out = {}
    for key, value in state.items():
        new = name(key[len(head):]) if key.startswith(head) else None
        new = head + new if new else key
        if new.endswith(".layer_scale") and value.dim() == 1:
            value = value.reshape(-1, 1, 1)
        elif value.dim() == 4 and _LINEAR_WEIGHT.fullmatch(new):
            value = value.flatten(1)
        out[new] = value
    return out
