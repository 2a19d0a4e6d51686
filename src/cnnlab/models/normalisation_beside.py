"""The normalisation the files beside a weights file from elsewhere say its network was trained on (read as JSON,
nothing of them runs): timm's ``config.json`` (its ``pretrained_cfg``'s ``mean`` and ``std``) or a Transformers
image processor's ``preprocessor_config.json`` (``image_mean`` and ``image_std``, on pixels rescaled by 1/255).

The explorer feeds such a file as they say (:mod:`cnnlab.explore.hugging_face`), and a run started from it with
``--init-from`` normalises its input so (:mod:`cnnlab.train.finetune`): timm's weights are not all trained on
ImageNet's mean and std (its ``efficientnet_b0.ra4_e3600_r224_in1k`` on 0.5 and 0.5, its ConvNeXts of CLIP weights
on CLIP's), and fed ImageNet's they answer for other pictures than they learnt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

from cnnlab.io import json_beside
from cnnlab.models.timm_keys import timm_config
from cnnlab.models.transformers_keys import transformers_layout

# Where each says so, for the page and the run's output
TIMM_SAYS = "config.json beside it (timm's pretrained_cfg)"
PROCESSOR_SAYS = "preprocessor_config.json beside it"

T = TypeVar("T")


class Said(NamedTuple):
    """A per-channel ``mean`` and ``std`` (of pixels / 255) and ``where`` they were read, in words."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    where: str


def said_normalisation(mean: Any, std: Any, where: str) -> Said | None:
    """``mean`` and ``std`` (from JSON) read from ``where``; None where they are not lists of 1 to 4 numbers, the
    stds positive."""
    if all(isinstance(v, list) and 1 <= len(v) <= 4 and all(type(x) in (int, float) and x == x for x in v)
           for v in (mean, std)) and all(x > 0 for x in std):
        return Said(tuple(map(float, mean)), tuple(map(float, std)), where)
    return None


def processor_normalisation(processor: dict[str, Any]) -> Said | None:
    """What the image processor whose ``preprocessor_config.json`` is ``processor`` normalises with: its
    ``image_mean`` and ``image_std`` where it rescales pixels by 1/255 and normalises (its defaults); else None."""
    factor = processor.get("rescale_factor", 1 / 255)
    rescaled = processor.get("do_rescale", True) is True and type(factor) in (int, float) and \
        abs(factor - 1 / 255) < 1e-6
    if not (processor.get("do_normalize", True) and rescaled):
        return None
    return said_normalisation(processor.get("image_mean"), processor.get("image_std"), PROCESSOR_SAYS)


def timm_normalisation(config: dict[str, Any]) -> Said | None:
    """The ``mean`` and ``std`` of the ``pretrained_cfg`` of timm's ``config`` (:func:`~cnnlab.models.timm_keys.
    timm_config`'s; {} says nothing); None where it says none in a form understood here."""
    pretrained = config.get("pretrained_cfg") or {}
    return said_normalisation(pretrained.get("mean"), pretrained.get("std"), TIMM_SAYS)


def read_by_library(path: str | Path, state: dict[str, torch.Tensor], transformers: Callable[[str | Path], T],
                    timm: Callable[[str | Path], T]) -> T:
    """The files beside ``path`` read as the library that saved its weights ``state`` (read from it, under their
    own names) writes them: ``transformers(path)`` for a Transformers ResNet's or ConvNeXt's (whose model's
    ``save_pretrained`` writes its config.json, and its image processor's the preprocessor_config.json, beside
    it), else ``timm(path)`` (timm's config.json beside it, where there is one)."""
    return (transformers if transformers_layout(state) is not None else timm)(path)


def normalisation_beside(path: str | Path, state: dict[str, torch.Tensor],
                         config: dict[str, Any] | None = None) -> Said | None:
    """What the files beside ``path`` say its weights ``state`` (read from it, under their own names) are fed
    (:func:`read_by_library`): a Transformers network's as its preprocessor_config.json says, anything else as
    timm's config.json says (``config``, where the load has read it already); None where they say nothing."""
    return read_by_library(path, state, lambda p: processor_normalisation(json_beside(p, "preprocessor_config.json")),
                           lambda p: timm_normalisation(timm_config(p, config)))
