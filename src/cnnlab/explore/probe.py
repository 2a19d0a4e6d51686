"""The pictures and tables of one input's answer, as both explorer pages show them: the top classes, each stage's
feature maps (the channels of largest spatial variance), Grad-CAM over the image and the saliency map; for a network
that is no classifier, the table of what it returns.

:func:`cnnlab.explore.model.analyze_image` puts them together for any model, a cnnlab run included.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.explore.boxes import BoxList, box_lists, picture_scale
from cnnlab.explore.images import boxes_overlay, colour, overlay, png_url, to_unit
from cnnlab.explore.outputs import LISTED, class_numbers, scales_hint

MAPS_PER_ROW = 8
TOP = 5
# A map of this many channels or more read as scores per pixel gets the picture of its largest channel at each pixel:
# tab20's colours, one per channel (repeating after 20)
SEGMENT_COLOURS = 20
# The boxes of a detector drawn over the input: its highest-scoring ones (a detector returns up to 100 or more, most of
# them unlikely)
DRAWN = 10
# A keypoint is drawn where its confidence is above this (Ultralytics' plotting's default; torchvision gives 1)
KEYPOINT_SEEN = 0.25


def top_classes(probs: torch.Tensor, classes) -> list[dict[str, Any]]:
    """The ``TOP`` most probable classes of a probability vector, most probable first; a probability that is not a
    number (a diverged model's NaN) is None, which both pages show as a dash (JSON has no NaN: the server sent null,
    the static page NaN, and they showed 0.0% and NaN%)."""
    top = probs.topk(min(TOP, probs.numel()))
    return [{"class": classes[i], "index": i, "probability": p if math.isfinite(p) else None}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


@dataclass(frozen=True)
class StageMaps:
    """What the page shows of one stage's output for one image, taken from the output as the stage pass makes it
    (:func:`stage_maps`), so that a big network's stages need not all be held until the pass ends.

    Attributes:
        shape: the output's shape, its batch axis of one first.
        dtype: its element type.
        maps: the pictured channels (:func:`map_rows`), each ``(channel, its h x w values)``.
        digest: a digest of all its values (:func:`among`), or None where none was taken or a NaN makes it
            equal to nothing.
    """

    shape: torch.Size
    dtype: torch.dtype
    maps: tuple[tuple[int, torch.Tensor], ...]
    digest: bytes | None = None


def stage_maps(value: torch.Tensor, maps: int = MAPS_PER_ROW, digest: bool = False,
               listed: bool = False) -> StageMaps:
    """What :func:`map_rows` shows of one image's ``value`` (``1 x ...``): its ``maps`` channels of largest spatial
    variance, copied out of it; with ``digest``, a digest of all of it too. A 1 x 1 map is a number, not a picture;
    a detector's list (``listed``: keypoints, boxes x 17 x 3) is no map."""
    out = value[0]
    shown: tuple[tuple[int, torch.Tensor], ...] = ()
    spread = None
    if not listed and out.dim() == 3 and out.shape[1] * out.shape[2] > 1:
        spread = out.flatten(1).float().var(1, correction=0)
        order = spread.argsort(descending=True)[:maps]
        shown = tuple((c, out[c].clone()) for c in order.tolist())  # a copy: not a view that keeps all of it
    # a NaN (or an infinity) anywhere makes its channel's variance NaN: none there, none to look for
    taken = _digest(value, spread is None or bool(spread.isnan().any())) if digest else None
    return StageMaps(value.shape, value.dtype, shown, taken)


def among(value: torch.Tensor, stages: list[StageMaps | torch.Tensor]) -> bool:
    """Whether ``value`` equals one of the ``stages``' outputs (each whole, or what :func:`stage_maps` took of it,
    with its digest): of one shape and element type, and equal as :func:`torch.equal` says (a NaN equal to nothing,
    -0.0 to 0.0). ``value``'s digest is taken once, and only where a stage is of its shape."""
    alike = [s for s in stages if s.shape == value.shape and s.dtype == value.dtype]
    if any(torch.equal(s, value) for s in alike if isinstance(s, torch.Tensor)):
        return True
    digests = {s.digest for s in alike if isinstance(s, StageMaps) and s.digest is not None}
    return bool(digests) and _digest(value) in digests


def _digest(value: torch.Tensor, maybe_nan: bool = True) -> bytes | None:
    """SHA-256 of ``value``'s elements, negative zeros as zeros; None where one is NaN (``maybe_nan``: looked for)."""
    if value.is_floating_point() or value.is_complex():
        if maybe_nan and bool(value.isnan().any()):
            return None
        value = value + 0  # -0.0 + 0 is 0.0; any other value stays as it is
    return hashlib.sha256(value.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).digest()


def map_rows(rows, maps: int = MAPS_PER_ROW) -> list[dict[str, Any]]:
    """The page's feature-map rows: each row's ``maps`` channels of largest spatial variance as PNG URLs (a row's
    output, or what :func:`stage_maps` took of it as the stage pass made it)."""
    shown = []
    for row in rows:
        kept = row.output if isinstance(row.output, StageMaps) else \
            stage_maps(row.output, maps, listed=row.kind == LISTED)
        shown.append({"name": row.name, "kind": row.kind, "shape": list(kept.shape[1:]),
                      "maps": [{"channel": c, "png": png_url(colour(to_unit(values), "viridis"))}
                               for c, values in kept.maps]})
    return shown


def explanation_pngs(e, image: torch.Tensor, classes) -> dict[str, Any]:
    """Grad-CAM over the image and the saliency map, at the image's size, as PNG URLs.

    ``empty`` says that Grad-CAM is zero everywhere (no channel of the stage speaks for the class, e.g. when its
    ReLUs are dead for this input): the overlay then shows no heat, and the page says why.
    """
    hw = tuple(image.shape[-2:])
    saliency = torch.nn.functional.interpolate(e.saliency[None, None], size=hw, mode="bilinear",
                                               align_corners=False)[0, 0]
    return {"target": classes[e.target], "row": e.row, "gradcam": png_url(overlay(image, e.cam_at(hw))),
            "saliency": png_url(colour(to_unit(saliency), "magma")), "empty": not float(e.cam.max()) > 0}


def is_segments(out: torch.Tensor) -> bool:
    """Whether one image's output ``out`` reads as scores per pixel: float, two or more channels on a map of more than
    one pixel (``C x h x w``), as a segmentation model's are."""
    return out.dim() == 3 and out.shape[0] >= 2 and out.shape[1] * out.shape[2] > 1 and out.is_floating_point()


def is_label_map(out: torch.Tensor) -> bool:
    """Whether one image's output ``out`` reads as a class per pixel: class numbers (or a mask of booleans) on a map
    of more than one pixel (``h x w``, or ``1 x h x w``), as a segmentation model that ends in its own ArgMax returns
    them."""
    return out.dim() in (2, 3) and (out.dim() == 2 or out.shape[0] == 1) and out.shape[-1] * out.shape[-2] > 1 and \
        class_numbers(out)


def output_entries(rows, image: torch.Tensor, classes: tuple[str, ...] = (),
                   input_hw: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """What a network that is no classifier returns for one image, as the page's table: each output row's ``name``,
    one image's ``shape``, its element ``dtype``, the ``min``, ``mean`` and ``max`` of its finite values (None where
    it has none: JSON has no NaN) and how many are ``nonfinite`` (NaN or infinite). Scores per pixel
    (:func:`is_segments`) also get ``segments``, the image in grey under the channel of largest value at each pixel,
    one colour per channel (scaled to the image by nearest pixels), and its ``legend``: each channel that wins a
    pixel, most pixels first, with its colour, its share of the map's pixels and its name (``classes``, where the map
    has as many channels, else ``channel k``); a class per pixel (:func:`is_label_map`) gets them too, each label
    coloured and named alike (``classes`` where they reach it, else ``class k``); not a detector's list
    (:data:`cnnlab.explore.outputs.LISTED`), nor maps at several scales (a backbone's features, no scores). A
    detector's boxes (:func:`detections`) also get ``boxes``, the highest-scoring drawn over the image (their
    coordinates in the pixels of the model's input, ``input_hw``), and their legend, ``detected``."""
    hw = input_hw or tuple(image.shape[-2:])
    found = box_lists(rows, classes, hw)
    entries = []
    for row, pictured in zip(rows, segment_kinds(rows, found), strict=True):
        out = row.output[0].detach()
        values = out.double().flatten()
        finite = values[values.isfinite()]
        stats = [float(finite.min()), float(finite.mean()), float(finite.max())] if finite.numel() else [None] * 3
        entry: dict[str, Any] = {"name": row.name, "shape": list(out.shape),
                                 "dtype": str(out.dtype).removeprefix("torch."),
                                 **dict(zip(("min", "mean", "max"), stats, strict=True)),
                                 "nonfinite": values.numel() - finite.numel()}
        if pictured == "channel":
            named = classes if len(classes) == out.shape[0] else ()
            entry.update(_segments(out.float().argmax(0), image, named, "channel"), channels=int(out.shape[0]))
        elif pictured == "class":
            entry.update(_segments(out.reshape(out.shape[-2:]).long(), image, classes, "class"), labels=True)
        entries.append(entry)
    for name, drawn in detections(found, classes, hw, image):
        next(e for e in entries if e["name"] == name).update(drawn)
    return entries


def segment_kinds(rows, found: list[BoxList] = ()) -> list[str | None]:
    """For each output row of a network (``rows``, what it returns), whether the page pictures it as a class per
    pixel: ``"channel"`` for scores per pixel (:func:`is_segments`, its largest channel), ``"class"`` for a map of
    class numbers (:func:`is_label_map`), else None: a detector's list (:data:`cnnlab.explore.outputs.LISTED`), maps
    at several scales (a backbone's features, no scores), and the mask prototypes beside a YOLO segmentation head
    (a map of as many channels as the head's boxes have mask coefficients, among its lists of boxes ``found``).
    ``output_entries`` draws these pictures and :func:`cnnlab.explore.model.blank_reading` lets ``--classes`` name
    only what they show."""
    maps = [row for row in rows if row.kind != LISTED and row.output.dim() == 4]
    features = bool(scales_hint([tuple(row.output.shape) for row in maps]))
    prototypes = {b.coefficients for b in found if b.coefficients}
    kinds: list[str | None] = []
    for row in rows:
        out = row.output[0]
        kinds.append(None if row.kind == LISTED else
                     "channel" if not features and is_segments(out) and out.shape[0] not in prototypes else
                     "class" if is_label_map(out) else None)
    return kinds


def detections(found: list[BoxList], classes: tuple[str, ...], input_hw: tuple[int, int],
               image: torch.Tensor) -> list[tuple[str, dict[str, Any]]]:
    """A detector's boxes as a picture: for each of its lists of boxes (``found``,
    :func:`cnnlab.explore.boxes.box_lists`), its :data:`DRAWN` highest-scoring boxes over the image, each coloured by
    its label (named by ``classes`` where they reach it) or its rank, with their legend, highest first: ``(the boxes'
    row name, {"boxes", "detected", "drawn", "found"})``, and ``kept``, how they were kept from a head's raw scores,
    where they were; each box's mask tinted in its colour, or its keypoints above :data:`KEYPOINT_SEEN` as dots, where
    the detector gives them (``with``: ``"masks"`` or ``"keypoints"``); turned boxes (an OBB head's) by their corners,
    said by ``turned``."""
    drawn = []
    hw = tuple(image.shape[-2:])
    scale = picture_scale(hw, input_hw)
    for box_list in found:
        boxes, scores, labels = box_list.boxes, box_list.scores, box_list.labels
        top = scores.float().argsort(descending=True)[:DRAWN].tolist()
        shown = [tuple((boxes[k].float() * scale).tolist()) for k in top] if box_list.corners is None else \
            [[tuple(corner) for corner in (box_list.corners[k] * scale[:2]).tolist()] for k in top]
        ids = [int(labels[k]) if labels is not None else rank for rank, k in enumerate(top)]
        colours = [_class_colour(i) for i in ids]
        legend = [{"name": _class_name(i, classes, "class") if labels is not None else f"box {i + 1}",
                   "score": float(scores[k]), "colour": c} for i, k, c in zip(ids, top, colours, strict=True)]
        masks = box_list.masks_at(top, hw, input_hw) if box_list.masks is not None else None
        points = None if box_list.keypoints is None else \
            [[(x * float(scale[0]), y * float(scale[1])) for x, y, seen in box_list.keypoints[k].tolist()
              if seen > KEYPOINT_SEEN] for k in top]
        drawn.append((box_list.row, {"boxes": png_url(boxes_overlay(image, shown, colours, masks, points)),
                                     "detected": legend, "drawn": len(top), "found": int(boxes.shape[0]),
                                     **({"kept": box_list.kept} if box_list.kept else {}),
                                     **({"turned": True} if box_list.corners is not None else {}),
                                     **({"with": "masks"} if masks is not None else
                                        {"with": "keypoints"} if points is not None else {})}))
    return drawn


def _segments(winner: torch.Tensor, image: torch.Tensor, names: tuple[str, ...], unnamed: str) -> dict[str, Any]:
    """The picture of ``winner``, an ``h x w`` map of class numbers, over the image, and its legend: number ``k``
    named ``names[k]``, or ``"{unnamed} k"`` beyond them."""
    shown = torch.nn.functional.interpolate(winner[None, None].float(), size=tuple(image.shape[-2:]),
                                            mode="nearest")[0, 0]
    counts = torch.bincount(winner.flatten())
    legend = [{"channel": k, "name": _class_name(k, names, unnamed), "share": count / winner.numel(),
               "colour": _class_colour(k)}
              for k, count in sorted(enumerate(counts.tolist()), key=lambda kc: -kc[1]) if count]
    return {"segments": png_url(overlay(image, _segment_shade(shown), cmap="tab20")), "legend": legend}


def _class_name(k: int, names: tuple[str, ...], unnamed: str) -> str:
    """Class number ``k`` as a legend names it: ``names[k]``, or ``"{unnamed} k"`` beyond them."""
    return names[k] if k < len(names) else f"{unnamed} {k}"


def _class_colour(k: int) -> str:
    """Class number ``k``'s colour in the pictures, ``#rrggbb`` (tab20's, as :func:`_segment_shade` picks it)."""
    return "#" + bytes(colour(_segment_shade(torch.tensor([[k]])), "tab20")[0, 0]).hex()


def _segment_shade(channels: torch.Tensor) -> torch.Tensor:
    """Channel numbers as the values that pick their colours in tab20 (its 20 colours in turn)."""
    return (channels.float() % SEGMENT_COLOURS + 0.5) / SEGMENT_COLOURS
