"""How the explorer reads the boxes a detector found among what it returns, whatever form its library gives them in:
torchvision's dict per image, DETR's queries (Hugging Face's), a YOLO head's raw scores per anchor (Ultralytics' YOLOv8
to YOLO11, YOLOv5's anchors, an OBB head's turned boxes), and an end-to-end list of detections (YOLO26's and YOLOv10's,
an export with its NMS inside; an OBB model's turned ones). Each is read as its own library's prediction reads it: the
same thresholds and non-maximum suppression, so that the page shows the boxes its users know.
:func:`cnnlab.explore.probe.detections` draws them.

Every form is recognised by its structure (torchvision's and DETR's also by their outputs' names), not by a file's name
or metadata, and checked whole before it is read (scores within 0 and 1, class numbers whole, the corners of the boxes
kept in order): a tensor that only has a detector's shape is left to the table of outputs rather than drawn wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import batched_nms, box_convert

from cnnlab.explore.outputs import LISTED, class_numbers

# Ultralytics' predict keeps a box whose best class scores above 0.25, then suppresses boxes of the same class that
# overlap a higher-scoring one by an IoU above 0.7 (its defaults, `conf` and `iou`); YOLOv5's detect.py suppresses at
# 0.45. Both keep at most 300 boxes.
CONFIDENCE, IOU, IOU_V5, MAX_KEPT = 0.25, 0.7, 0.45, 300
# Hugging Face's post_process_object_detection keeps a DETR query scoring above 0.5, and of a DETR of sigmoid scores
# (Deformable DETR, RT-DETR) the 100 best scores of any query and class first
DETR_THRESHOLD, DETR_TOP = 0.5, 100
# The strides of a YOLO head's levels: P3 to P5, P2 too for the *-p2 models of small objects, and P6 for the *6 models
# of 1280 pixels
STRIDES = ((8, 16, 32), (4, 8, 16, 32), (8, 16, 32, 64))
YOLOV5_ANCHORS = 3  # YOLOv5's (and YOLOv7's) anchors per cell and level
# Turned boxes are measured against the others of their class this many at a time: a fresh head's thousands of
# candidates of one class (21,504 anchors at 1,024 pixels) would hold gigabytes of overlaps at once, and hold 300 MB so
TURNED_AT_ONCE = 256


@dataclass(frozen=True)
class BoxList:
    """The boxes a detector found in one image, as the page draws them.

    Attributes:
        row: the name of the output row they were read from (the table's entry that gets the picture).
        boxes: ``K x 4`` floats, ``x1, y1, x2, y2`` in the pixels of the model's input.
        scores: ``K`` floats.
        labels: ``K`` class numbers, None where the detector gives none.
        kept: how they were kept from the head's raw scores, for the page ("" where the detector kept them itself).
        coefficients: the count of numbers per box beyond its class scores that weigh mask prototypes (a YOLO
            segmentation head's 32): a map of as many channels beside it holds those prototypes, no class scores.
        masks: ``K x h x w``, each box's mask as scores on a grid over the input (of any scale), the object's where
            they are above ``mask_above`` (0 for YOLO's sums of prototypes, 0.5 for torchvision's probabilities);
            None where the detector gives none.
        keypoints: ``K x P x 3``, each box's keypoints, ``x, y`` in the input's pixels and a confidence (torchvision's
            visibility, 1; YOLO's sigmoid, or 1 where its keypoints have none), None where the detector gives none.
        corners: ``K x 4 x 2``, each box's corners in turn round it where the boxes are turned (an OBB head's), ``x,
            y`` in the input's pixels, ``boxes`` then the upright boxes around them; None for upright boxes.
    """

    row: str
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor | None
    kept: str = ""
    coefficients: int = 0
    masks: torch.Tensor | None = None
    mask_above: float = 0.5
    keypoints: torch.Tensor | None = None
    corners: torch.Tensor | None = None

    def masks_at(self, indices: list[int], hw: tuple[int, int], input_hw: tuple[int, int]) -> torch.Tensor:
        """The masks of the boxes ``indices`` on a picture of ``hw`` pixels (the input's ``input_hw`` scaled), as
        booleans: each one's scores resized bilinearly, above :attr:`mask_above` and inside its box (as Ultralytics
        crops its masks; torchvision pastes each into its box)."""
        if not indices:
            return torch.zeros(0, *hw, dtype=torch.bool)
        scores = self.masks[indices].float()
        shown = torch.nn.functional.interpolate(scores[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
        x1, y1, x2, y2 = (self.boxes[indices].float() * picture_scale(hw, input_hw)).T[:, :, None, None]
        rows, columns = torch.arange(hw[0]).view(1, -1, 1), torch.arange(hw[1]).view(1, 1, -1)
        return (shown > self.mask_above) & (columns >= x1) & (columns < x2) & (rows >= y1) & (rows < y2)


def picture_scale(hw: tuple[int, int], input_hw: tuple[int, int]) -> torch.Tensor:
    """What turns ``x1, y1, x2, y2`` in the pixels of the model's input (``input_hw``) into a picture's of ``hw``:
    ``x, y, x, y`` factors, as a tensor to multiply boxes by (its first two, a point)."""
    return torch.tensor([hw[1] / input_hw[1], hw[0] / input_hw[0]] * 2)


def box_lists(rows, classes: tuple[str, ...] = (), input_hw: tuple[int, int] | None = None) -> list[BoxList]:
    """A detector's lists of boxes among what a network returns (``rows``, each one image's): torchvision's
    (:func:`_torchvision`), DETR's (:func:`_detr`), a YOLO head's (:func:`_yolo_head`, :func:`_yolov5_head`),
    end-to-end detections (:func:`_end_to_end`) and RT-DETR's queries (:func:`_rtdetr_queries`). DETR's, RT-DETR's
    and YOLO's need the model's input ``input_hw`` (the scale of DETR's boxes, the count of YOLO's anchors) and
    ``classes``, the names the page has (which of DETR's two kinds it is; YOLO's class scores told from the numbers
    after them)."""
    found = {row.name: row.output[0].detach() for row in rows}
    lists = _torchvision(found) + _detr(found, len(classes), input_hw)
    taken = {b.row for b in lists}
    # an ONNX graph's list of a length it leaves free, where its batch is fixed, may hold the one image's table whole,
    # 1 x rows x columns (Ultralytics' RT-DETR export's, which declares no batch axis)
    tables = {row.name: row.output[0, 0].detach() for row in rows
              if row.kind == LISTED and row.output.dim() == 4 and row.output.shape[1] == 1}
    for name, out in {**found, **tables}.items():
        if name in taken or not out.is_floating_point() or out.dim() != 2 or not out.numel():
            continue
        # a YOLO head's anchors are counted from the input's size: read only where it is known
        read = input_hw and (_yolo_head(name, out, len(classes), input_hw, found) or _yolov5_head(name, out, input_hw))
        read = read or _end_to_end(name, out, found, len(classes), input_hw) or \
            _rtdetr_queries(name, out, len(classes), input_hw)
        if read is not None:
            lists.append(read)
    return lists


def _torchvision(found: dict[str, torch.Tensor]) -> list[BoxList]:
    """torchvision's detectors' boxes: a row ``...['boxes']`` of ``K x 4`` floats (``x1, y1, x2, y2``, one dict per
    image; an ONNX export's output ``boxes``) with a list of as many scores beside it (``...['scores']``, ``scores``),
    and its ``...['labels']`` (class numbers), Mask R-CNN's ``masks`` and Keypoint R-CNN's ``keypoints`` where they
    are, as the detector kept them (every box :func:`_drawable`)."""
    lists = []
    for name, boxes in found.items():
        field = _field_of(name, "boxes")
        if field is None or boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            continue
        scores, labels, masks, keypoints = (found.get(field(key)) for key in ("scores", "labels", "masks", "keypoints"))
        if scores is None or scores.shape != boxes.shape[:1] or not _drawable(boxes):
            continue
        labels = labels if labels is not None and labels.shape == scores.shape and labels.dtype != torch.bool and \
            (not labels.numel() or class_numbers(labels)) else None
        if masks is not None and masks.dim() == 4 and masks.shape[1] == 1:  # Mask R-CNN's, K x 1 x H x W
            masks = masks[:, 0]
        lists.append(BoxList(name, boxes, scores, labels,
                             masks=masks if _per_box(masks, boxes, 3) and masks.is_floating_point() else None,
                             keypoints=keypoints if _per_box(keypoints, boxes, 3) and keypoints.shape[2] == 3 and
                             keypoints.is_floating_point() else None))
    return lists


def _detr(found: dict[str, torch.Tensor], named: int, input_hw: tuple[int, int] | None) -> list[BoxList]:
    """DETR's boxes, one per query: a row ``...pred_boxes`` of ``Q x 4`` (centre and size, scaled to the input's
    sides: 0 to 1) beside its ``...logits`` (``Q x classes``), as Hugging Face's detectors return them and its
    exporters name them. Read only where the page has the ``named`` classes' names (the model's ``id2label``, or
    ``--classes``), whose count tells the two kinds apart: DETR's logits have one more, its "no object", and are
    softmaxed, each query scoring its best class; those of Deformable DETR, RT-DETR and their kin have as many, each
    a sigmoid, and the :data:`DETR_TOP` best of any query and class are taken. Those scoring above
    :data:`DETR_THRESHOLD` are kept, as Hugging Face's ``post_process_object_detection`` keeps them."""
    lists = []
    if input_hw is None or not named:
        return lists
    for name, boxes in found.items():
        field = _field_of(name, "pred_boxes")
        logits = found.get(field("logits")) if field is not None else None
        if logits is None or boxes.dim() != 2 or boxes.shape[1] != 4 or logits.dim() != 2 or \
                logits.shape[0] != boxes.shape[0] or logits.shape[1] not in (named, named + 1) or \
                not boxes.is_floating_point() or not logits.is_floating_point() or not _probabilities(boxes):
            continue
        if logits.shape[1] == named + 1:
            scores, labels = logits.float().softmax(1)[:, :-1].max(1)
            queries = torch.arange(boxes.shape[0])
            how = "softmax, its no-object class left out"
        else:
            scores, labels, queries = _best_of_any_query(logits.float().sigmoid(), DETR_TOP)
            how = f"sigmoid, the {DETR_TOP} best of any query and class"
        corners = _scaled_to_input(boxes, input_hw)
        kept = scores > DETR_THRESHOLD
        lists.append(BoxList(name, corners[queries[kept]], scores[kept], labels[kept],
                             f"score above {DETR_THRESHOLD} ({how}), as Hugging Face's post_process_object_detection "
                             "keeps them"))
    return lists


def _best_of_any_query(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``count`` best of a DETR's ``scores`` (``queries x classes``, sigmoids) of any query and class, best first:
    their scores, classes and queries (a query may come with several classes)."""
    top = scores.flatten().topk(min(count, scores.numel()))
    return top.values, top.indices % scores.shape[1], top.indices // scores.shape[1]


def _scaled_to_input(boxes: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """Boxes of a centre and a size scaled to the input's sides (0 to 1, DETR's and RT-DETR's), as ``x1, y1, x2,
    y2`` in the input's pixels."""
    h, w = input_hw
    return box_convert(boxes.float(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])


def anchors(input_hw: tuple[int, int], strides: tuple[int, ...]) -> int:
    """How many places a YOLO head scores for an input of ``input_hw``: a cell per stride's step on each level."""
    return sum(math.ceil(input_hw[0] / s) * math.ceil(input_hw[1] / s) for s in strides)


def scores_anchors(shape, input_hw: tuple[int, int]) -> bool:
    """Whether one image's ``shape`` ends in as many values as a YOLO head has places for an input of ``input_hw``
    (:func:`anchors`): its scores per anchor, flattened from its maps and laid out channels first, as Ultralytics'
    head concatenates them (``84 x 8400``), not a transformer's tokens (``tokens x width``)."""
    return bool(shape) and any(shape[-1] == anchors(input_hw, s) for s in STRIDES)


def _yolo_head(name: str, out: torch.Tensor, named: int, input_hw: tuple[int, int],
               found: dict[str, torch.Tensor]) -> BoxList | None:
    """An anchor-free YOLO head's raw output (Ultralytics' YOLOv8, YOLO11 and their kin, exported with no NMS):
    ``4 + classes + extra`` rows of one number per anchor (``84 x 8400`` at 640 pixels), a box's centre and size in
    the input's pixels, then each class's score (a sigmoid's, 0 to 1), then what a segmentation or pose head adds per
    box (mask coefficients, keypoints: :func:`_extras`, with the other outputs ``found``); or its transpose. The class
    count is the ``named`` classes' (Ultralytics' metadata or ``--classes``): without names, nothing is read, as the
    rows after the box's are not told apart by their values (an OBB head's angle, within 0 and 1 as a fresh one gives
    it, would be one more class and its turned boxes drawn upright). Read as Ultralytics' predict reads it
    (:data:`CONFIDENCE`, :data:`IOU`, class by class), the boxes kept :func:`_drawable`; one number after the class
    scores is an OBB head's angle, its boxes turned (:func:`_turned_head`), where some anchor's lies outside 0 to 1:
    a trained head's angles span -pi/4 to 3pi/4, a class's scores never leave 0 to 1, and ``--classes`` naming one
    fewer than an upright head scores would otherwise have its last class's scores read as angles. A fresh head's
    angles, all near pi/4, are not told from a class's: its output stays in the table."""
    count = next((anchors(input_hw, s) for s in STRIDES if anchors(input_hw, s) in out.shape), None)
    if count is None or out.shape[0] == out.shape[1] or not named:
        return None
    per_anchor = out if out.shape[1] == count else out.T
    scores = per_anchor[4:4 + named]
    if 4 + named > per_anchor.shape[0] or not _probabilities(scores) or not per_anchor[:4].isfinite().all():
        return None
    best, labels = scores.max(0)
    if per_anchor.shape[0] == 5 + named:
        angles = per_anchor[-1]
        return None if _probabilities(angles) else _turned_head(name, per_anchor[:4].T, angles, best, labels)
    return _upright_head(name, per_anchor[:4].T, best, labels, IOU,
                         f"confidence above {CONFIDENCE} and no overlap above IoU {IOU} with a better box of its "
                         "class, as Ultralytics' predict keeps them", per_anchor[4 + named:].T, found)


def _yolov5_head(name: str, out: torch.Tensor, input_hw: tuple[int, int]) -> BoxList | None:
    """YOLOv5's (and YOLOv7's) raw output: a row per anchor (three per cell and level, ``25200 x 85`` at 640 pixels)
    of a box's centre and size in the input's pixels, its objectness and each class's score (sigmoids); a box scores
    its objectness times its class's, read as YOLOv5's detect.py reads them (:data:`CONFIDENCE`, :data:`IOU_V5`), the
    boxes kept :func:`_drawable`."""
    if not any(out.shape[0] == YOLOV5_ANCHORS * anchors(input_hw, s) for s in STRIDES) or out.shape[1] < 6 or \
            not _probabilities(out[:, 4:]) or not out[:, :4].isfinite().all():
        return None
    objectness, classes = out[:, 4:5].float(), out[:, 5:].float()
    best, labels = (classes * objectness).max(1)
    return _upright_head(name, out[:, :4], best, labels, IOU_V5,
                         f"objectness times class score above {CONFIDENCE} and no overlap above IoU {IOU_V5} with a "
                         "better box of its class, as YOLOv5's detect.py keeps them")


def _upright_head(name: str, sizes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float, how: str,
                  extra: torch.Tensor | None = None, found: dict[str, torch.Tensor] | None = None) -> BoxList | None:
    """A YOLO head's upright boxes (``sizes``, ``A x 4``: each anchor's centre and size in the input's pixels, its
    best class's ``scores`` and ``labels``) kept by torchvision's NMS at ``iou`` (:func:`_suppressed`), with what its
    numbers after the class scores (``extra``, ``A x E``) are (:func:`_extras`, with the other outputs ``found``);
    None where those are of no kind known or a box kept is not :func:`_drawable`."""
    boxes = box_convert(sizes.float(), "cxcywh", "xyxy")
    kept = _suppressed(scores.float(), lambda c: batched_nms(boxes[c], scores[c].float(), labels[c], iou))
    extras = {} if extra is None else _extras(extra[kept], found)
    return None if extras is None or not _drawable(boxes[kept]) else \
        BoxList(name, boxes[kept], scores[kept], labels[kept], how, **extras)


def _end_to_end(name: str, out: torch.Tensor, found: dict[str, torch.Tensor], named: int,
                input_hw: tuple[int, int] | None) -> BoxList | None:
    """A detector's own list of detections, ``K x (6 + extra)``: ``x1, y1, x2, y2`` in the input's pixels, a score
    from 0 to 1 and a class number per row (YOLO26's and YOLOv10's output, or an export with its NMS inside; a
    segmentation or pose model adds its numbers after them: :func:`_extras`). Those scoring above
    :data:`CONFIDENCE` are kept, as Ultralytics' predict keeps them, their corners in order. Not a map of the picture
    (:func:`_of_pixels`), which reads so where it is all zeros (a mask that finds nothing: a list of detections none
    scoring). Rows of seven are an OBB model's (YOLO26-OBB's): a turned box's centre and size, its score and class,
    then its angle (:func:`_turned_boxes`). Rows of six whose boxes all lie within 0 and 1 are Ultralytics' RT-DETR's
    (:func:`_rtdetr_rows`)."""
    if out.shape[1] < 6 or _of_pixels(out.shape, input_hw) or not out[:, :4].isfinite().all() or \
            not _probabilities(out[:, 4]):
        return None
    labels = out[:, 5]
    if not (labels == labels.round()).all() or not class_numbers(labels.long()):
        return None
    kept = out[:, 4] > CONFIDENCE
    if out.shape[1] == 7:
        return _turned_boxes(name, out[:, :4], out[:, 6], out[:, 4], labels.long(), kept.nonzero().flatten(),
                             f"score above {CONFIDENCE}, as Ultralytics' predict keeps them")
    # The boxes kept have their corners in order, in the input's pixels, not all within its first one (centres and
    # sizes scaled to 1, as RT-DETR's are); a row below the threshold may be turned inside out (YOLO26's head measures
    # a box from its anchor by a convolution's numbers, negative where nothing was learnt)
    corners = out[kept, :4]
    if _in_first_pixel(corners):
        return _rtdetr_rows(name, out, named, input_hw) if out.shape[1] == 6 else None
    if not _drawable(corners):
        return None
    extras = _extras(out[kept, 6:], found)
    return None if extras is None else \
        BoxList(name, out[kept, :4], out[kept, 4], labels[kept].long(),
                f"score above {CONFIDENCE}, as Ultralytics' predict keeps them", **extras)


def _rtdetr_rows(name: str, out: torch.Tensor, named: int, input_hw: tuple[int, int] | None) -> BoxList | None:
    """Ultralytics' RT-DETR's answer (its export from 8.4 on), ``queries x 6``: a box's centre and size scaled to the
    input's sides (sigmoids, 0 to 1), a score and a class, the best of any query and class first. Read where the
    ``named`` classes' names reach its classes (the export's metadata, or ``--classes``), as its predictor reads it:
    those scoring above :data:`CONFIDENCE`, at most :data:`MAX_KEPT`, at the input's scale."""
    labels = out[:, 5].long()
    if input_hw is None or not named or int(labels.max()) >= named or not _probabilities(out[:, :4]):
        return None
    kept = (out[:, 4] > CONFIDENCE).nonzero().flatten()[:MAX_KEPT]
    return BoxList(name, _scaled_to_input(out[kept, :4], input_hw), out[kept, 4], labels[kept],
                   f"score above {CONFIDENCE}, as Ultralytics' RT-DETR predictor keeps them")


def _rtdetr_queries(name: str, out: torch.Tensor, named: int, input_hw: tuple[int, int] | None) -> BoxList | None:
    """RT-DETR's queries as Ultralytics exported them before 8.4, ``queries x (4 + classes)``: a box's centre and size
    scaled to the input's sides, then each class's sigmoid, all within 0 and 1, the classes counted by the ``named``
    classes' names (the export's metadata, or ``--classes``). Read as Ultralytics' RT-DETR reads them: the best of any
    query and class, as many as its queries (at most :data:`MAX_KEPT`), those scoring above :data:`CONFIDENCE`, at the
    input's scale."""
    if input_hw is None or not named or out.shape[1] != 4 + named or not _probabilities(out):
        return None
    count = min(out.shape[0], MAX_KEPT)
    scores, labels, queries = _best_of_any_query(out[:, 4:].float(), count)
    kept = scores > CONFIDENCE
    return BoxList(name, _scaled_to_input(out[queries[kept], :4], input_hw), scores[kept], labels[kept],
                   f"score above {CONFIDENCE} of the {count} best of any query and class, as Ultralytics' RT-DETR "
                   "keeps them")


def _turned_head(name: str, sizes: torch.Tensor, angles: torch.Tensor, scores: torch.Tensor,
                 labels: torch.Tensor) -> BoxList | None:
    """An OBB head's boxes (Ultralytics' YOLOv8-OBB and YOLO11-OBB; ``sizes``, ``A x 4``: each anchor's box's centre
    and size in the input's pixels, its width's side turned from the x axis by its ``angles``, in radians), kept as
    Ultralytics' predict keeps them: a best class (``scores``, ``labels``) above :data:`CONFIDENCE`; then, class by
    class and best first, none whose probabilistic IoU (:func:`probabilistic_iou`) with a better box is :data:`IOU` or
    more, that better box kept or not (its fast NMS, which never looks at what it suppressed); at most
    :data:`MAX_KEPT`."""
    def suppress(candidates):  # the candidates' turned boxes, by Ultralytics' fast NMS
        turned = torch.cat([sizes[candidates].float(), angles[candidates, None].float()], 1)
        return _turned_nms(turned, scores[candidates].float(), labels[candidates])

    kept = _suppressed(scores, suppress)
    return _turned_boxes(name, sizes, angles, scores, labels, kept,
                         f"confidence above {CONFIDENCE} and a probabilistic IoU below {IOU} with every better turned "
                         "box of its class, as Ultralytics' predict keeps them")


def _turned_nms(turned: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The indices of the turned boxes (``turned``, ``K x 5``: centre, size, angle) kept by Ultralytics' fast NMS,
    best first: class by class and best first, none whose probabilistic IoU with a better box is :data:`IOU` or more,
    that better box kept or not."""
    kept = [torch.zeros(0, dtype=torch.long)]
    for label in labels.unique():
        ours = (labels == label).nonzero().flatten()
        ours = ours[scores[ours].argsort(descending=True)]
        boxes, order = turned[ours], torch.arange(len(ours))
        suppressed = torch.zeros(len(ours), dtype=torch.bool)
        for start in range(0, len(ours), TURNED_AT_ONCE):  # each box against those after it
            overlaps = probabilistic_iou(boxes[start:start + TURNED_AT_ONCE], boxes)
            after = order[None] > order[start:start + TURNED_AT_ONCE, None]
            suppressed |= ((overlaps >= IOU) & after).any(0)  # Ultralytics keeps a box below it alone
        kept.append(ours[~suppressed])
    kept = torch.cat(kept)
    return kept[scores[kept].argsort(descending=True)]


def _turned_boxes(name: str, sizes: torch.Tensor, angles: torch.Tensor, scores: torch.Tensor,
                  labels: torch.Tensor, kept: torch.Tensor, how: str) -> BoxList | None:
    """The boxes ``kept`` (indices) of turned boxes (``sizes``: ``K x 4`` centres and sizes in the input's pixels;
    ``angles`` in radians), drawn by their corners, where each one kept has a finite angle and a width and a height
    of 0 or more, and not all lie within the input's first pixel (RT-DETR's, scaled to 1, are no such boxes); None
    otherwise."""
    sizes, angles = sizes[kept].float(), angles[kept].float()
    if not sizes.isfinite().all() or not angles.isfinite().all() or (sizes[:, 2:] < 0).any() or \
            _in_first_pixel(sizes):
        return None
    corners = _turned_corners(torch.cat([sizes, angles[:, None]], 1))
    upright = torch.cat([corners.amin(1), corners.amax(1)], 1)
    return BoxList(name, upright, scores[kept], labels[kept], how, corners=corners)


def _turned_corners(turned: torch.Tensor) -> torch.Tensor:
    """The corners (``K x 4 x 2``, in turn round each box) of turned boxes ``K x 5``: a centre ``x, y``, a width and
    a height, and the angle in radians by which the width's side is turned from the x axis towards the y axis."""
    centre, (w, h, angle) = turned[:, None, :2], turned[:, 2:].T
    along = torch.stack([angle.cos(), angle.sin()], 1) * (w / 2)[:, None]  # from the centre to the width's end
    across = torch.stack([-angle.sin(), angle.cos()], 1) * (h / 2)[:, None]  # and to the height's
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])  # the corners in turn
    return centre + signs[None, :, :1] * along[:, None] + signs[None, :, 1:] * across[:, None]


def probabilistic_iou(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """How much each of the turned boxes ``first`` (``K x 5``: centre, size, angle) overlaps each of ``second``
    (``M x 5``), ``K x M``: one less the Hellinger distance between the boxes' Gaussians (each centred on its box,
    its variances the squares of its width and height over 12, turned by its angle), as Llerena et al. define it
    ("Gaussian bounding boxes and probabilistic intersection-over-union", 2021) and Ultralytics suppresses turned
    boxes by (``eps`` its own); 1 for a box and itself, near 0 for boxes far apart."""
    def spread(boxes):  # each box's covariance [[a, c], [c, b]], as three K x 1 columns
        var_w, var_h, angle = boxes[:, 2:3] ** 2 / 12, boxes[:, 3:4] ** 2 / 12, boxes[:, 4:5]
        cos, sin = angle.cos(), angle.sin()
        return var_w * cos ** 2 + var_h * sin ** 2, var_w * sin ** 2 + var_h * cos ** 2, (var_w - var_h) * cos * sin

    (a1, b1, c1), (a2, b2, c2) = spread(first), (v.T for v in spread(second))
    a, b, c = a1 + a2, b1 + b2, c1 + c2  # twice the two boxes' mean covariance, K x M
    det = a * b - c ** 2
    dx, dy = first[:, :1] - second[:, 0], first[:, 1:2] - second[:, 1]
    # the Bhattacharyya distance: the centres apart, measured by the mean covariance, and the covariances' unlikeness
    apart = (a * dy ** 2 + b * dx ** 2 - 2 * c * dx * dy) / (4 * (det + eps))
    unlike = 0.5 * torch.log(det / (4 * ((a1 * b1 - c1 ** 2).clamp(min=0) * (a2 * b2 - c2 ** 2).clamp(min=0)).sqrt()
                                     + eps) + eps)
    return 1 - (1 - torch.exp(-(apart + unlike).clamp(eps, 100)) + eps).sqrt()


def _extras(extra: torch.Tensor, found: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """What a YOLO head's numbers after a box's class scores (``extra``, ``K x E`` of the boxes kept) are, as
    :class:`BoxList`'s fields: a segmentation head's mask coefficients where another output is a map of ``E`` mask
    prototypes (``found``; each box's mask the sum of the prototypes they weigh, its object where above 0), a pose
    head's keypoints where they come in threes of ``x, y`` and a confidence from 0 to 1, or else in pairs of ``x, y``
    (a ``kpt_shape`` of ``[P, 2]``, whose keypoints have no confidence: 1 each). None for numbers of another kind,
    which may change what the box is: its boxes are not drawn. Keypoints whose ``x, y`` all lie within the input's
    first pixel are none: sigmoids of the classes the names left out (``--classes`` naming fewer than the head
    scores; a pose head's are in the input's pixels), nor are pairs whose first number lies within 0 and 1 at every
    box (the score of a class the names left out)."""
    count = extra.shape[1]
    if not count:
        return {}
    prototypes = next((p for p in found.values() if p.dim() == 3 and p.shape[0] == count and p.is_floating_point()),
                      None)
    if prototypes is not None:
        masks = (extra.float() @ prototypes.float().flatten(1)).view(-1, *prototypes.shape[1:])
        return {"coefficients": count, "masks": masks, "mask_above": 0.0}
    points = extra.view(-1, count // 3, 3) if count % 3 == 0 else None
    if points is not None and points.isfinite().all() and _probabilities(points[..., 2]) and \
            not _in_first_pixel(points[..., :2]):
        return {"keypoints": points}
    # Pairs have no confidence to tell them by: a first number within 0 and 1 at every box is the score of a class the
    # names left out (a pose head of threes named by one class fewer than it scores), not a keypoint's x
    pairs = extra.view(-1, count // 2, 2) if count % 2 == 0 and not (len(extra) and _probabilities(extra[:, 0])) \
        else None
    if pairs is not None and pairs.isfinite().all() and not _in_first_pixel(pairs):
        return {"keypoints": torch.cat([pairs, torch.ones_like(pairs[..., :1])], 2)}
    return None


def _of_pixels(shape, input_hw: tuple[int, int] | None) -> bool:
    """Whether one image's ``shape`` is the input's ``input_hw``, or its height and width at a stride of 2, 4 or 8: a
    map of the picture (a mask or a depth per pixel, its channel squeezed out), not rows of a list."""
    return input_hw is not None and any(tuple(shape) == (math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s))
                                        for s in (1, 2, 4, 8))


def _field_of(name: str, key: str) -> Callable[[str], str] | None:
    """Where the fields beside a row ``name`` holding ``key`` are named, as a function of theirs: a dict's entries
    (``output[0]['boxes']`` beside ``output[0]['scores']``; an output object's, Hugging Face's), a dataclass's fields
    (``output.boxes``) or a graph's outputs (``boxes`` beside ``scores``), as
    :func:`cnnlab.explore.outputs.output_tensors` names them; None where ``name`` is no such row."""
    if name == key:
        return lambda other: other
    for entry in (f"[{key!r}]", f".{key}"):
        if name.endswith(entry):
            return lambda other, entry=entry: name.removesuffix(entry) + entry.replace(key, other)
    return None


def _per_box(value: torch.Tensor | None, boxes: torch.Tensor, dims: int) -> bool:
    """Whether ``value`` is a tensor of ``dims`` axes with one entry per box of ``boxes``."""
    return value is not None and value.dim() == dims and value.shape[0] == boxes.shape[0]


def _drawable(corners: torch.Tensor) -> bool:
    """Whether every box of ``corners`` (``K x 4``: ``x1, y1, x2, y2``) is finite with its corners in order, none
    turned inside out (a width or a height below 0: no box, and none that can be drawn)."""
    return bool(corners.isfinite().all()) and bool((corners[:, 2] >= corners[:, 0]).all()) and \
        bool((corners[:, 3] >= corners[:, 1]).all())


def _in_first_pixel(coordinates: torch.Tensor) -> bool:
    """Whether there are ``coordinates`` and all lie within -1 and 1: numbers scaled to 1 (RT-DETR's centres and
    sizes) or sigmoids, not places in the input's pixels."""
    return bool(coordinates.numel()) and bool((coordinates.abs() <= 1).all())


def _probabilities(scores: torch.Tensor) -> bool:
    """Whether every score is a number within 0 and 1 (a sigmoid's: a YOLO head's class scores)."""
    return bool(((scores >= 0) & (scores <= 1)).all())


def _suppressed(scores: torch.Tensor, suppress: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The indices of the boxes kept, best first: those scoring above :data:`CONFIDENCE`, less those ``suppress``
    leaves out (given the candidates' indices, it returns the positions among them of those it keeps, best first:
    torchvision's ``batched_nms``, :func:`_turned_nms`), at most :data:`MAX_KEPT`."""
    candidates = (scores > CONFIDENCE).nonzero().flatten()
    return candidates[suppress(candidates)[:MAX_KEPT]]
