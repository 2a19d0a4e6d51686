"""What torchvision's pretrained builders do besides loading the weights file, done for networks built unweighted.

cnnlab builds an ImageNet backbone with ``weights=None`` and loads the file itself (:mod:`cnnlab.models.imagenet`),
so whatever torchvision's builder does differently when it is given weights must be done here, or the network is
not the one the weights were trained in:

- GoogLeNet (``googlenet(weights=...)``) is built with its two auxiliary heads, whose tensors the hosted file holds,
  and drops them after the load (they were trained only as a second loss): cnnlab builds it without them and leaves
  their tensors out of the file's (:func:`without_aux_heads`). And it sets ``transform_input``: its
  forward takes input normalised with ImageNet's mean and std and turns it into ``(pixel - 0.5) / 0.5`` per
  channel, the input the weights were trained on. Inception v3 (``inception_v3(weights=...)``) does both the same
  way, its one auxiliary head being ``AuxLogits``. Here that step is a module of its own, :class:`Renormalise`, so
  that the stages (explorer, report) compute it too, and it also serves a first convolution adapted to other channel
  counts, whose input cnnlab normalises with the RGB means and stds averaged.
- DenseNet's hosted files keep the key names of an older torchvision (``denselayer1.norm.1.weight``, no longer a
  valid module name), which its builder renames before loading (``denselayer1.norm1.weight``); a file saved from
  today's ``densenet121().state_dict()`` has the new names. Both load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

# GoogLeNet's and Inception v3's auxiliary heads (torchvision builder -> module names): the hosted file's tensors,
# dropped after the load as torchvision's pretrained builder drops them
AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
_DENSENET_OLD_KEY = re.compile(r"(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|"
                               r"running_var))")


class Renormalise(nn.Module):
    """GoogLeNet's ``transform_input``: input normalised with ``mean`` and ``std`` (ImageNet's, per RGB channel)
    becomes ``(pixel - 0.5) / 0.5``. Three channels take torchvision's own arithmetic; any other count (a grey
    picture) was normalised with the averaged mean and std (:func:`cnnlab.models.imagenet.pretrained_normalize`),
    so every channel is renormalised with those, giving the same ``(pixel - 0.5) / 0.5`` that the RGB network sees
    in each channel of that picture repeated as R, G and B. No state: the state dict stays torchvision's."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        mean, std = (self.mean, self.std) if channels == 3 else \
            ((sum(self.mean) / 3,) * channels, (sum(self.std) / 3,) * channels)
        # N x C x H x W, channel by channel as torchvision's _transform_input computes it (the same float32 result)
        return torch.cat([x[:, c:c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(channels)], 1)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def without_aux_heads(state: dict[str, torch.Tensor], builder: str) -> dict[str, torch.Tensor]:
    """``state`` without the auxiliary heads' tensors of torchvision's ``builder`` (a state dict of
    ``torchvision.models.googlenet()`` or ``inception_v3()``, saved with them, read into the network that dropped
    them); another builder's state as it is."""
    heads = set(AUX_HEADS.get(builder, ()))
    return {k: v for k, v in state.items() if not set(k.split(".")) & heads}  # a wrapper's prefix too


def densenet_new_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with DenseNet's old key names (``features.denseblock1.denselayer1.norm.1.weight``, the hosted
    files') under today's (``...denselayer1.norm1.weight``); new names stay as they are."""
    return {(f"{m[1]}{m[2]}" if (m := _DENSENET_OLD_KEY.fullmatch(k)) else k): v for k, v in state.items()}
