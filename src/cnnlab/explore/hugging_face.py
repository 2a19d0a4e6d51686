"""What a Hugging Face model's folder says of how the model is fed and what it answers, read as JSON (nothing of it
runs): ``config.json``'s class names and ``preprocessor_config.json``'s input size, normalisation and framing, or,
in a timm model's folder, its ``config.json``'s class names and ``pretrained_cfg`` (:func:`timm_carried`).

Both an ONNX export's folder (``optimum-cli export onnx`` writes the two files beside ``model.onnx``) and a
Transformers ``save_pretrained`` folder (beside ``model.safetensors``) are read so. The framing is the image
processor's own: a ConvNeXt processor (which Transformers uses for its ResNets too) resizes the shorter side to
``shortest_edge / crop_pct`` (256 for 224 at 0.875) with its ``resample`` filter and crops the centre
``shortest_edge``, BiT's and CLIP's resize it to ``shortest_edge`` and crop ``crop_size``; padded instead, the
picture shows its model another image than its users' pipeline does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnlab.explore.model import SIDES, Carried
from cnnlab.explore.outputs import id2label_names
from cnnlab.io import json_beside
from cnnlab.models.normalisation_beside import (
    PROCESSOR_SAYS,
    TIMM_SAYS,
    Said,
    processor_normalisation,
    timm_normalisation,
)
from cnnlab.models.timm_keys import timm_config
from cnnlab.picture import PAD, RESAMPLING, ShorterSide

# The shortest edge from which a ConvNeXt processor stretches the picture to a square instead of cropping it (the
# larger evaluation sizes of its models), a framing read here as none
CONVNEXT_WARPS_FROM = 384
# The longest a picture's shorter side is resized to before its centre is cropped: a crop_pct of 0.5 at the largest
# input side. A smaller crop_pct (1e-9, a slip) asked Pillow for a picture of billions of pixels, and crashed
LONGEST_RESIZE = 2 * SIDES[1]


def input_sides(value: Any) -> tuple[int, int] | None:
    """A height and width from ``224``, ``[224, 224]`` or ``{"height": 224, "width": 224}``, within the sides the
    explorer takes; None for anything else (the refusal of a dynamic input then asks for --input-size)."""
    if isinstance(value, dict):
        value = [value.get("height"), value.get("width")]
    sides = [value, value] if type(value) is int else value
    if not isinstance(sides, list | tuple) or len(sides) != 2 or \
            not all(type(side) is int and SIDES[0] <= side <= SIDES[1] for side in sides):
        return None
    return sides[0], sides[1]


def hugging_face_carried(path: str | Path, config: dict[str, Any] | None = None) -> Carried:
    """What a Hugging Face folder says beside ``path`` (its model.onnx or model.safetensors): the class names of
    config.json's ``id2label``; the input size (``crop_size`` where the processor crops, else ``size``: a height and
    width, or a ``shortest_edge``), the normalisation (``image_mean``, ``image_std``, on pixels rescaled by 1/255) and
    the framing (:func:`_framing`) of preprocessor_config.json. A part the files do not say, or say in a form not
    understood here, is left out (the explorer's defaults, or the flags, say it instead). ``config``: config.json's
    object where the load has read it already."""
    found: dict[str, Any] = {}
    config = json_beside(path, "config.json") if config is None else config
    names = id2label_names(config.get("id2label"))
    if names:
        found.update(classes=names, classes_from="config.json beside it (id2label)")
    processor = json_beside(path, "preprocessor_config.json")
    where = PROCESSOR_SAYS
    size = processor.get("crop_size") if processor.get("do_center_crop") else processor.get("size")
    edge = size.get("shortest_edge") if isinstance(size, dict) else None
    sides = input_sides(edge if edge is not None else size)
    framing = _framing(processor)
    if sides:
        found.update(size=sides, size_from=where)
        if framing:
            found.update(fit=framing, fit_from=where)
    found.update(_normalisation(processor_normalisation(processor)))
    return Carried(**found)


def _normalisation(said: Said | None) -> dict[str, Any]:
    """What ``said`` (:mod:`cnnlab.models.normalisation_beside`) as :class:`Carried`'s fields; none for None."""
    return {"mean": said.mean, "std": said.std, "mean_from": said.where} if said else {}


def timm_carried(path: str | Path, config: dict[str, Any] | None = None) -> Carried:
    """What timm's ``config.json`` beside ``path`` (its model.safetensors, :func:`~cnnlab.models.timm_keys.timm_config`)
    says: the class names of its ``label_names`` (a list, or a dict by index); its ``pretrained_cfg``'s input size
    (``input_size``, channels, height, width), normalisation (``mean``, ``std``) and framing (:func:`_timm_framing`),
    or, where that is in a form not framed here, pictures padded as any model's, said so: not framed as torchvision's
    weights' transforms frame theirs (a crop), which the file does not say, and further from its ``border`` mode's
    picture (resized to fit and padded) than cnnlab's padding is. Nothing for a folder of another kind, or a part in
    a form not understood here. ``config``: config.json's object where the load has read it already."""
    config = timm_config(path, config)
    if not config:
        return Carried()
    found: dict[str, Any] = {}
    where = TIMM_SAYS
    labels = config.get("label_names")
    names = id2label_names(dict(enumerate(labels)) if isinstance(labels, list) else labels)
    if names:
        found.update(classes=names, classes_from="config.json beside it (timm's label_names)")
    pretrained = config["pretrained_cfg"]
    size = pretrained.get("input_size")
    sides = input_sides(size[1:]) if isinstance(size, list) and len(size) == 3 else None
    if sides:
        found.update(size=sides, size_from=where)
        framing = _timm_framing(pretrained, sides)
        framed = isinstance(framing, ShorterSide)
        found.update(fit=framing if framed else PAD,
                     fit_from=where if framed else f"{where}, whose {framing} is not framed here")
    found.update(_normalisation(timm_normalisation(config)))
    return Carried(**found)


def _timm_framing(pretrained: dict[str, Any], sides: tuple[int, int]) -> ShorterSide | str:
    """How timm's evaluation transform (``transforms_imagenet_eval``) frames a picture for the ``pretrained_cfg``
    ``pretrained`` at its input ``sides``: for the ``center`` ``crop_mode`` (its default) the shorter side resized to
    ``floor(side / crop_pct)`` with its ``interpolation`` (torchvision's Resize, the longer side truncated) and the
    centre cropped (torchvision's CenterCrop, offsets rounded); for ``squash`` both sides resized to that length, the
    picture's shape not kept, and the centre cropped. Else, in words, what is not framed here: its ``border`` mode
    (the longer side resized to fit, padded with the mean's colour), a ``crop_pct`` or ``interpolation`` not
    understood, a non-square input."""
    mode, crop_pct, resample = pretrained.get("crop_mode") or "center", pretrained.get("crop_pct"), \
        pretrained.get("interpolation")
    length = _resized_for_crop(sides[0], crop_pct)
    if mode not in ("center", "squash"):
        return f"crop_mode {mode!r}"
    if length is None:
        return f"crop_pct {crop_pct!r}"
    if resample not in RESAMPLING.values():
        return f"interpolation {resample!r}"
    if sides[0] != sides[1]:
        return f"framing of a {sides[0]} x {sides[1]} input"
    return ShorterSide(length, resample, said="timm's pretrained_cfg says", squash=mode == "squash")


def _framing(processor: dict[str, Any]) -> ShorterSide | None:
    """How the image processor whose ``preprocessor_config.json`` is ``processor`` frames a picture, as a
    :class:`cnnlab.picture.ShorterSide`, for the two forms whose arithmetic is Transformers' shared
    ``get_resize_output_image_size`` (the longer side truncated) and ``center_crop`` (offsets rounded down), with
    Pillow's ``resample`` filter: a ConvNeXt processor's (Transformers' ``ConvNextImageProcessor``, also its
    ResNets'), the shorter side resized to ``int(shortest_edge / crop_pct)`` and the centre ``shortest_edge`` square
    cropped; and the plain resize-and-crop of BiT's, CLIP's and their kin (``do_center_crop``), the shorter side to
    ``shortest_edge`` and the centre ``crop_size`` cropped. None for a processor of another form (``do_resize``
    false, a ``size`` of a height and width, which it stretches to, no ``resample`` of the numbers Pillow names, a
    ConvNeXt edge of 384 or more, which it stretches to a square): nothing said, the picture padded as any
    model's."""
    size, resample, crop_pct = processor.get("size"), processor.get("resample"), processor.get("crop_pct")
    edge = size if type(size) is int else size.get("shortest_edge") if isinstance(size, dict) else None
    if processor.get("do_resize", True) is not True or type(edge) is not int or type(resample) is not int or \
            resample not in RESAMPLING:
        return None
    if processor.get("do_center_crop"):
        crop = input_sides(processor.get("crop_size"))
        if crop_pct is not None or crop is None or max(crop) > edge:
            return None
        return ShorterSide(edge, RESAMPLING[resample], floor=True)
    length = _resized_for_crop(edge, crop_pct)
    if length is None or edge >= CONVNEXT_WARPS_FROM:
        return None
    return ShorterSide(length, RESAMPLING[resample], floor=True)


def _resized_for_crop(side: int, crop_pct: Any) -> int | None:
    """The length a picture's shorter side is resized to for its centre ``side`` to be cropped, where ``crop_pct``
    is the share of it the crop keeps: ``floor(side / crop_pct)`` (a ConvNeXt processor's ``int``, timm's
    ``math.floor``). None for a ``crop_pct`` that is not a number in (0, 1], or that asks for more than
    :data:`LONGEST_RESIZE`: a form not understood here, the picture padded."""
    if type(crop_pct) not in (int, float) or not 0 < crop_pct <= 1 or side / crop_pct > LONGEST_RESIZE:
        return None
    return math.floor(side / crop_pct)
