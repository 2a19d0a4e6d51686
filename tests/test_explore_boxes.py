"""A detector's boxes in the forms other libraries give them, drawn by the explorer as their own prediction keeps them:
a YOLO head's raw scores per anchor (Ultralytics' YOLOv8 and YOLO11, as its ONNX export writes them, with its class
names in the metadata; YOLOv5's anchors), and an end-to-end list of detections (YOLO26's, an export with its NMS
inside). The networks here return outputs of known boxes, placed so that the confidence threshold and the
suppression of overlapping boxes of one class each decide one of them.
"""

from __future__ import annotations

import base64
import io
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.explore.boxes import IOU, _turned_head, probabilistic_iou
from cnnlab.explore.images import decode_upload
from cnnlab.explore.model import Options, analyze_image
from cnnlab.explore.outputs import NotAClassifier
from cnnlab.explore.sources import open_model, open_with_images

SIDE = 64
ANCHORS = 8 * 8 + 4 * 4 + 2 * 2  # a YOLO head's places at strides 8, 16 and 32 of a 64-pixel input
NAMES = ("cat", "dog", "bird")
# (centre x, centre y, width, height, class, score) of the anchors that score: the dog; a box over it by an IoU of 0.88,
# a dog too (suppressed) and a bird (kept: another class); a cat below the threshold of 0.25; a cat apart
SCORED = [(16, 16, 16, 16, 1, 0.9), (17, 16, 16, 16, 1, 0.8), (17, 16, 16, 16, 2, 0.85), (48, 48, 8, 8, 0, 0.2),
          (44, 40, 20, 16, 0, 0.5)]
# what Ultralytics' predict keeps of them, best first: (class, score, x1, y1, x2, y2)
KEPT = [("dog", 0.9, 8, 8, 24, 24), ("bird", 0.85, 9, 8, 25, 24), ("cat", 0.5, 34, 32, 54, 48)]


def _per_anchor(coefficients: tuple[float, ...] = (), anchors: int = ANCHORS) -> torch.Tensor:
    """A YOLO head's ``4 + 3 classes (+ mask coefficients)`` rows of one number per anchor, the scores sigmoids'."""
    head = torch.full((4 + len(NAMES) + len(coefficients), anchors), 0.01)
    head[:4] = 2.0  # the anchors that do not score: small boxes in the corner
    for k, c in enumerate(coefficients):
        head[4 + len(NAMES) + k] = c
    for anchor, (cx, cy, w, h, label, score) in enumerate(SCORED):
        head[:4, anchor] = torch.tensor([cx, cy, w, h], dtype=torch.float)
        head[4 + label, anchor] = score
    return head


class Fixed(nn.Module):
    """A network that returns fixed tensors (``outputs``, one image's, batched) after a convolution that adds
    nothing: a detector's head whose answer is known."""

    def __init__(self, *outputs: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        for k, out in enumerate(outputs):
            self.register_buffer(f"out{k}", out)
        self.count = len(outputs)

    def forward(self, x):
        nothing = self.conv(x).mean((1, 2, 3))  # N zeros, so that each output has the images' batch
        outs = [getattr(self, f"out{k}")[None] + nothing.view(-1, *[1] * getattr(self, f"out{k}").dim())
                for k in range(self.count)]
        return outs[0] if self.count == 1 else tuple(outs)


class YoloHead(nn.Module):
    """A YOLO head as Ultralytics' is made: its boxes, and its class scores through a sigmoid (a stage whose value is
    N x classes x anchors, flattened from its maps), concatenated; anchor by anchor where ``transposed``."""

    def __init__(self, transposed: bool = False):
        super().__init__()
        self.conv, self.sigmoid, self.transposed = nn.Conv2d(3, 1, 1), nn.Sigmoid(), transposed
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        head = _per_anchor()
        self.register_buffer("boxes", head[:4])
        self.register_buffer("logits", torch.logit(head[4:]))

    def forward(self, x):
        nothing = self.conv(x).mean((1, 2, 3)).view(-1, 1, 1)  # N zeros, so that the output has the images' batch
        out = torch.cat([self.boxes + nothing, self.sigmoid(self.logits + nothing)], 1)
        return out.transpose(1, 2) if self.transposed else out


def yolo_transposed():
    return YoloHead(transposed=True)  # anchors x (4 + classes), as some exporters lay it out


def yolo_logits():
    head = _per_anchor()
    head[4:] = torch.logit(head[4:])  # class scores before their sigmoid: no probabilities
    return Fixed(head)


def yolov5():
    """YOLOv5's raw output: three anchors per place, each a row of centre, size, objectness and class scores."""
    rows = torch.full((3 * ANCHORS, 5 + len(NAMES)), 0.01)
    rows[:, :4] = 2.0
    for anchor, (cx, cy, w, h, label, score) in enumerate(SCORED):
        rows[anchor, :5] = torch.tensor([cx, cy, w, h, 1.0])  # objectness 1: the box scores its class's
        rows[anchor, 5 + label] = score
    return Fixed(rows)


def end_to_end(whole_classes: bool = True):
    """A list of 300 detections (x1, y1, x2, y2, score, class), as YOLO26 and an export with its NMS give them."""
    rows = torch.zeros(300, 6)
    rows[0] = torch.tensor([8, 8, 24, 24, 0.9, 1])
    rows[1] = torch.tensor([9, 8, 25, 24, 0.85, 2])
    rows[2] = torch.tensor([34, 32, 54, 48, 0.5, 0])
    rows[3] = torch.tensor([40, 40, 60, 60, 0.2, 0])  # below the threshold
    if not whole_classes:
        rows[:, 5] += 0.5  # no class numbers: a table of figures, not a detector's
    return Fixed(rows)


def not_end_to_end():
    return end_to_end(whole_classes=False)


@pytest.fixture
def importable(monkeypatch):
    """This module importable by name, for ``module:function``."""
    monkeypatch.setitem(sys.modules, "boxes_under_test", sys.modules[__name__])
    return "boxes_under_test"


def _ultralytics_onnx(net: nn.Module, path, task: str = "detect", outputs=("output0",), head: str | None = "Detect",
                      dynamic_axes=None, more: tuple[tuple[str, str], ...] = ()) -> str:
    """``net`` exported as Ultralytics exports its networks: ``images`` in, ``output0`` out, its names, task, head's
    class and size in the metadata (and ``more`` of it)."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, SIDE, SIDE),), str(path), dynamo=False,
                          input_names=["images"], output_names=list(outputs), dynamic_axes=dynamic_axes)
    graph = onnx.load(str(path))
    for key, value in (("author", "Ultralytics"), ("task", task), ("head", head), ("imgsz", f"[{SIDE}, {SIDE}]"),
                       ("names", str(dict(enumerate(NAMES)))), *more):
        if value is None:  # an older export's metadata, without the key
            continue
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    return str(path)


def saved_yolo_page(folder, tmp_path, net: nn.Module | None = None, task: str = "detect") -> Path:
    """An Ultralytics detector's export (a head of the known boxes :data:`KEPT`, or ``net``'s of its ``task``, its
    names in the metadata) as a saved page of the pictures in ``folder``, as ``cnnlab explore yolo.onnx --images
    FOLDER --export`` writes it, for the browser tests to open."""
    from cnnlab.explore.page import export_page

    path = _ultralytics_onnx(net or YoloHead(), tmp_path / "yolo.onnx", task)
    model, images = open_with_images(path, folder, Options())
    page = tmp_path / "yolo.html"
    export_page(model, images, page)
    return page


def _image() -> torch.Tensor:
    return torch.full((3, SIDE, SIDE), 128, dtype=torch.uint8)


def _drawn(entry) -> list[tuple]:
    return [(b["name"], pytest.approx(b["score"], abs=1e-6)) for b in entry["detected"]]


def _picture(entry) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["boxes"].split(",")[1]))))


def test_a_yolo_heads_raw_scores_are_drawn_as_ultralytics_predict_keeps_them(tmp_path):
    """An Ultralytics detector's ONNX export returns 4 + classes rows of a number per anchor, centres and sizes then
    class scores: the page showed their range in a table. Its boxes are kept as Ultralytics' predict keeps them (a
    score above 0.25; a box overlapping a better one of its class by an IoU above 0.7 suppressed, one of another
    class kept), drawn in their classes' colours and named by the names in the file's metadata."""
    model, _ = open_with_images(_ultralytics_onnx(YoloHead(), tmp_path / "yolo.onnx"), None, Options())
    assert model.scoring is None and model.classes == NAMES
    assert "The names of the 3 classes of what it finds are read from the model file." in model.notes
    assert not any("tokens" in n for n in model.notes), model.notes  # the head's N x 7 x 84 is no transformer's
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["name"], entry["shape"], entry["found"], entry["drawn"]) == ("output0", [7, ANCHORS], 3, 3)
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    assert "confidence above 0.25 and no overlap above IoU 0.7" in entry["kept"]
    picture = _picture(entry)
    dog, bird, cat = (tuple(bytes.fromhex(b["colour"][1:])) for b in entry["detected"])
    assert len({dog, bird, cat}) == 3
    # each box's outline at its corners (x1, y1, x2, y2 in the input's pixels), the grey input inside
    assert tuple(picture[16, 8]) == dog and tuple(picture[16, 25]) == bird and tuple(picture[40, 34]) == cat
    assert tuple(picture[40, 54]) == cat and tuple(picture[16, 16]) == (128, 128, 128)


def test_a_yolo_head_laid_out_anchor_by_anchor_is_named_by_the_classes_flag(importable):
    """The same head with a row per anchor (its transpose), as a module: ``--classes`` names its boxes (it was refused:
    no output was a map of 3 channels), and the head's per-anchor scores are not called a transformer's tokens."""
    source = f"{importable}:yolo_transposed"
    model, _ = open_with_images(source, None, Options(input_size=SIDE, classes=NAMES))
    assert not any("tokens" in n for n in model.notes), model.notes
    [entry] = analyze_image(model, _image())["outputs"]
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]


def test_scores_that_are_no_probabilities_are_not_read_as_a_yolo_head(importable):
    """A head's class scores before their sigmoid (or anything else of that shape) are not a YOLO head's: no boxes
    drawn from figures that are not what the head gives, the table shows them."""
    model, _ = open_with_images(f"{importable}:yolo_logits", None, Options(input_size=SIDE))
    [entry] = analyze_image(model, _image())["outputs"]
    assert "boxes" not in entry and entry["shape"] == [7, ANCHORS]


def test_a_yolo_segmentation_heads_boxes_and_masks_are_drawn_and_its_prototypes_are_no_classes(tmp_path):
    """A YOLO segmentation head adds each box's mask coefficients after its class scores (the metadata's names count
    the classes), beside a map of as many mask prototypes: its boxes are drawn with their masks (the prototypes they
    weigh summed, above 0, inside the box, as Ultralytics makes them), and the prototypes are not pictured as a
    segmentation model's class per pixel (the channel largest at each pixel: a picture meaning nothing)."""
    prototypes = torch.zeros(4, SIDE // 4, SIDE // 4)
    prototypes[0, :, :SIDE // 8] = 1.0  # the left half of the input
    prototypes[0, :, SIDE // 8:] = -1.0
    prototypes[1:] = torch.linspace(-1, 1, 3 * (SIDE // 4) ** 2).view(3, SIDE // 4, SIDE // 4)
    path = _ultralytics_onnx(Fixed(_per_anchor((2.0, 0.0, 0.0, 0.0)), prototypes), tmp_path / "yolo-seg.onnx",
                             "segment", ("output0", "output1"))
    model, _ = open_with_images(path, None, Options())
    head, maps = analyze_image(model, _image())["outputs"]
    assert head["shape"] == [11, ANCHORS] and _drawn(head) == [(name, score) for name, score, *_ in KEPT]
    assert maps["shape"] == [4, 16, 16] and "segments" not in maps
    assert head["with"] == "masks"
    picture, (dog, bird, _cat) = _picture(head), ((np.frombuffer(bytes.fromhex(b["colour"][1:]), np.uint8))
                                                 for b in head["detected"])
    # the dog's and the bird's boxes are on the left half: the bird's mask, tinted over the dog's, inside its box
    assert (picture[16, 16] == np.round(0.5 * (0.5 * 128 + 0.5 * dog) + 0.5 * bird)).all()
    assert (picture[40, 44] == 128).all()  # the cat's box is on the right: no mask
    assert (picture[40, 20] == 128).all()  # outside every box: none


def test_a_list_of_detections_is_drawn_above_the_threshold(importable):
    """An end-to-end detector's 300 rows of x1, y1, x2, y2, score and class (YOLO26's; an export with NMS inside): the
    rows scoring above 0.25 are drawn, in their classes' colours, named by --classes."""
    model, _ = open_with_images(f"{importable}:end_to_end", None, Options(input_size=SIDE, classes=NAMES))
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["shape"], entry["found"]) == ([300, 6], 3)
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    picture = _picture(entry)
    assert tuple(picture[16, 8]) == tuple(bytes.fromhex(entry["detected"][0]["colour"][1:]))


def test_rows_without_class_numbers_are_no_detections(importable):
    """Rows of six figures whose sixth is no class number are not read as detections (a table of figures)."""
    model, _ = open_with_images(f"{importable}:not_end_to_end", None, Options(input_size=SIDE))
    [entry] = analyze_image(model, _image())["outputs"]
    assert "boxes" not in entry


def test_yolov5s_anchors_score_their_objectness_times_their_class(importable):
    """YOLOv5's three anchors per place, each a row of centre, size, objectness and class scores: a box scores its
    objectness times its class's score, and boxes of one class overlapping by an IoU above 0.45 are suppressed."""
    model, _ = open_with_images(f"{importable}:yolov5", None, Options(input_size=SIDE, classes=NAMES))
    [entry] = analyze_image(model, _image())["outputs"]
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    assert "objectness times class score above 0.25" in entry["kept"]


class Detr(nn.Module):
    """A DETR as Hugging Face's return it: a dict of ``logits`` (4 queries x classes, and DETR's "no object" where
    ``no_object``) and ``pred_boxes`` (centre and size scaled to the input's sides), its classes named by its
    ``config.id2label`` where ``named``."""

    def __init__(self, no_object: bool, named: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        if named:
            self.config = type("Config", (), {"id2label": dict(enumerate(NAMES))})()
        softmaxed = [[0, 5, 0, 0], [0, 0, 0, 5], [0, 0, 2, 0], [1, 0, 0, 0.5]]  # dog 0.98, none, bird 0.71, cat 0.43
        sigmoids = [[-5, 3, -5], [-5, -5, -5], [-5, -5, 1], [0.2, -5, -5]]  # dog 0.95, none, bird 0.73, cat 0.55
        self.register_buffer("logits", torch.tensor(softmaxed if no_object else sigmoids))
        self.register_buffer("boxes", torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.1, 0.1],
                                                    [0.75, 0.5, 0.25, 0.5], [0.5, 0.875, 0.5, 0.25]]))

    def forward(self, x):
        nothing = self.conv(x).mean((1, 2, 3)).view(-1, 1, 1)
        return {"logits": self.logits + nothing, "pred_boxes": self.boxes + nothing}


def detr():
    return Detr(no_object=True, named=True)


def detr_unnamed():
    return Detr(no_object=True, named=False)


def deformable_detr():
    return Detr(no_object=False, named=False)


def test_detrs_queries_are_drawn_as_hugging_face_keeps_them(importable):
    """DETR's boxes (one per query, centre and size scaled to 1) were left to the table: those whose best class (its
    softmax, DETR's no-object class left out) scores above 0.5 are drawn at the input's scale, named by the model's
    id2label, as Hugging Face's post_process_object_detection keeps them."""
    model, _ = open_with_images(f"{importable}:detr", None, Options(input_size=SIDE))
    assert model.classes == NAMES
    assert "The names of the 3 classes of what it finds are read from the model's config.id2label." in model.notes
    entry = next(o for o in analyze_image(model, _image())["outputs"] if o["name"] == "output['pred_boxes']")
    e = np.exp(1.0)
    assert _drawn(entry) == [("dog", e ** 5 / (e ** 5 + 3)), ("bird", e ** 2 / (e ** 2 + 3))]
    assert "softmax, its no-object class left out" in entry["kept"]
    picture = _picture(entry)
    dog, bird = (tuple(bytes.fromhex(b["colour"][1:])) for b in entry["detected"])
    assert tuple(picture[16, 8]) == dog and tuple(picture[16, 24]) == dog  # x1 8, x2 24 at 64 pixels
    assert tuple(picture[32, 40]) == bird and tuple(picture[47, 48]) == bird  # x1 40, y2 48


def test_a_sigmoid_detrs_best_query_classes_are_drawn_and_an_unnamed_detr_is_not(importable):
    """Deformable DETR's and RT-DETR's logits have one per class (sigmoids): the best of any query and class above
    0.5 are drawn, named by --classes; without names, which kind it is cannot be told, and nothing is drawn."""
    model, _ = open_with_images(f"{importable}:deformable_detr", None, Options(input_size=SIDE, classes=NAMES))
    entry = next(o for o in analyze_image(model, _image())["outputs"] if o["name"] == "output['pred_boxes']")
    sigmoid = torch.sigmoid(torch.tensor([3.0, 1.0, 0.2])).tolist()
    assert _drawn(entry) == list(zip(("dog", "bird", "cat"), sigmoid, strict=True))
    model, _ = open_with_images(f"{importable}:detr_unnamed", None, Options(input_size=SIDE))
    assert not any("boxes" in o for o in analyze_image(model, _image())["outputs"])


def test_a_yolo_pose_heads_keypoints_are_drawn_where_confident(tmp_path):
    """A YOLO pose head adds each box's keypoints (x, y and a confidence) after its class scores: they are drawn as dots
    of its box's colour where their confidence is above 0.25, as Ultralytics plots them."""
    keypoints = (0.0,) * 6  # two keypoints per box: set for the dog's anchor below
    head = _per_anchor(keypoints)
    head[7:13, 0] = torch.tensor([16.0, 16.0, 0.9, 20.0, 20.0, 0.1])  # one seen, one not
    model, _ = open_with_images(_ultralytics_onnx(Fixed(head), tmp_path / "yolo-pose.onnx", "pose"), None, Options())
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["with"] == "keypoints" and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    picture, dog = _picture(entry), tuple(bytes.fromhex(entry["detected"][0]["colour"][1:]))
    assert tuple(picture[16, 16]) == dog and tuple(picture[20, 20]) == (128, 128, 128)


def test_a_yolo_pose_heads_keypoints_of_x_and_y_alone_are_all_drawn(tmp_path):
    """A pose head of keypoints with no confidence (Ultralytics' kpt_shape [P, 2]: pairs of x, y after the class
    scores) left its boxes undrawn, in the table: they are drawn, every keypoint a dot, as Ultralytics plots them."""
    head = _per_anchor((0.0,) * 4)  # two keypoints per box: set for the dog's anchor below
    head[7:11, 0] = torch.tensor([16.0, 16.0, 20.0, 20.0])
    model, _ = open_with_images(_ultralytics_onnx(Fixed(head), tmp_path / "yolo-pose.onnx", "pose"), None, Options())
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["with"] == "keypoints" and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    picture, dog = _picture(entry), tuple(bytes.fromhex(entry["detected"][0]["colour"][1:]))
    assert tuple(picture[16, 16]) == dog and tuple(picture[20, 20]) == dog


def _refused_one_name_short(importable: str, function: str) -> dict:
    """``function``'s head of four classes opened with the three :data:`NAMES` (refused: they count no head's classes)
    and then with a fourth: its one output's entry."""
    with pytest.raises(CnnlabError, match=rf"^--classes gives 3 names, but boxes_under_test:{function} is not a "
                                          r"classifier"):
        open_with_images(f"{importable}:{function}", None, Options(input_size=SIDE, classes=NAMES))
    model, _ = open_with_images(f"{importable}:{function}", None, Options(input_size=SIDE, classes=(*NAMES, "fox")))
    [entry] = analyze_image(model, _image())["outputs"]
    return entry


def pose_of_four_classes():
    """A pose head of four classes, the fourth scoring 0.01 everywhere, and a keypoint (x, y and a confidence) per box:
    at 16, 16, seen, for the dog's anchor."""
    head = torch.cat([_per_anchor(), torch.full((1, ANCHORS), 0.01), torch.full((3, ANCHORS), 0.5)])
    head[8:11, 0] = torch.tensor([16.0, 16.0, 0.9])
    return Fixed(head)


def test_a_pose_head_named_by_one_class_fewer_than_it_scores_is_refused(importable):
    """--classes naming three of a four-class pose head's classes leaves the fourth's score before each box's
    keypoint, four numbers: they were read as two keypoints of x and y alone (0.01, 16 and 16, 0.9) and the boxes
    drawn with them, where the names were refused before keypoints of x and y alone were read. The first number after
    the named scores within 0 and 1 at every box is a class's score, not a keypoint's x in the input's pixels."""
    entry = _refused_one_name_short(importable, "pose_of_four_classes")
    assert entry["with"] == "keypoints" and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    picture, dog = _picture(entry), tuple(bytes.fromhex(entry["detected"][0]["colour"][1:]))
    assert tuple(picture[16, 16]) == dog


def six_classes():
    """A YOLO head of six classes: the three of :data:`NAMES`, then three more (the dog's anchor scoring them too)."""
    head = torch.cat([_per_anchor(), torch.full((3, ANCHORS), 0.01)])
    head[7:10, 0] = torch.tensor([0.3, 0.6, 0.7])
    return Fixed(head)


def test_a_yolo_head_named_by_fewer_classes_than_it_scores_draws_no_keypoints(importable):
    """--classes naming three of a six-class head's classes left three rows of sigmoids after the named scores: they
    were read as a pose head's keypoint (x 0.3, y 0.6 in the input's pixels) and the boxes drawn "with their
    keypoints" (one name fewer, and they were refused: rows not in threes). A pose head's keypoints are in the input's
    pixels, not all within its first one: the names are refused for counting no head's classes, as for any other
    count."""
    with pytest.raises(CnnlabError, match=r"^--classes gives 3 names, but boxes_under_test:six_classes is not a "
                                          r"classifier, and none of its outputs is a map of 3 channels"):
        open_with_images(f"{importable}:six_classes", None, Options(input_size=SIDE, classes=NAMES))
    model, _ = open_with_images(f"{importable}:six_classes", None,
                                Options(input_size=SIDE, classes=(*NAMES, "fox", "owl", "emu")))
    [entry] = analyze_image(model, _image())["outputs"]
    assert "with" not in entry and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]  # each its best class


def yolov5_inside_out():
    """YOLOv5's raw output where the dog's box, kept, has a width below 0."""
    net = yolov5()
    net.out0[0, 2] = -16.0
    return net


class InsideOutDetector(nn.Module):
    """torchvision's dict per image, of one box whose corners are swapped: x2 left of x1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        nothing = self.conv(x).mean((1, 2, 3)) * 0
        return [{"boxes": torch.tensor([[24.0, 8, 8, 24]]) + n, "labels": torch.tensor([1]),
                 "scores": torch.tensor([0.8]) + n} for n in nothing]


def inside_out_detector():
    return InsideOutDetector()


def test_boxes_turned_inside_out_are_left_to_the_table(tmp_path, importable):
    """A box kept with a width below 0 (a YOLO head's, YOLOv5's, one in torchvision's dict) made drawing it fail, and
    the picture's whole analysis with it, blamed on the network ("failed on the picture ... expected a network that
    answers any picture"); an Ultralytics export's names were taken for naming such boxes. Boxes turned inside out
    are no detector's: its output stays in the table, as a list of detections' does, and the page is made."""
    head = _per_anchor()
    head[2, 0] = -16.0  # the dog's width
    for source, options in ((_ultralytics_onnx(Fixed(head), tmp_path / "yolo.onnx"), Options()),
                            (f"{importable}:yolov5_inside_out", Options(input_size=SIDE)),
                            (f"{importable}:inside_out_detector", Options(input_size=SIDE))):
        model, _ = open_with_images(source, None, options)
        outputs = analyze_image(model, _image())["outputs"]
        assert outputs and not any("boxes" in entry for entry in outputs) and model.classes == (), source


class MaskDetector(nn.Module):
    """Mask R-CNN's answer, as torchvision's detectors give it: a dict per image of boxes, labels, scores and each
    box's mask (probabilities on the input, ``K x 1 x H x W``): one box, its left half masked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        masks = torch.zeros(1, 1, SIDE, SIDE)
        masks[0, 0, 8:24, 8:16] = 0.9
        nothing = self.conv(x).mean((1, 2, 3)) * 0
        return [{"boxes": torch.tensor([[8.0, 8, 24, 24]]), "labels": torch.tensor([1]),
                 "scores": torch.tensor([0.8]) + n, "masks": masks + n} for n in nothing]


def mask_detector():
    return MaskDetector()


def test_a_torchvision_detectors_masks_are_drawn_in_their_boxes_colours(importable):
    """Mask R-CNN's masks (a probability per pixel of each box's object) were a row of figures: each drawn box's mask
    above 0.5 is tinted in its colour."""
    model, _ = open_with_images(f"{importable}:mask_detector", None, Options(input_size=SIDE, classes=NAMES))
    entry = next(o for o in analyze_image(model, _image())["outputs"] if o["name"] == "output[0]['boxes']")
    assert entry["with"] == "masks" and _drawn(entry) == [("dog", 0.8)]
    picture, dog = _picture(entry), np.frombuffer(bytes.fromhex(entry["detected"][0]["colour"][1:]), np.uint8)
    assert (picture[16, 12] == np.round(0.5 * 128 + 0.5 * dog)).all() and (picture[16, 20] == 128).all()


def test_a_heads_numbers_of_an_unknown_kind_leave_its_boxes_undrawn(tmp_path):
    """A YOLO head whose numbers after the class scores are neither mask coefficients, keypoints nor an angle (five
    numbers within 0 and 1, which may change what each box is) is not drawn: its output stays in the table."""
    head = _per_anchor((-0.3,) * 5)
    model, _ = open_with_images(_ultralytics_onnx(Fixed(head), tmp_path / "yolo-x.onnx"), None, Options())
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["shape"] == [12, ANCHORS] and "boxes" not in entry


def obb_head():
    """An OBB head as a freshly initialised one answers: each box's angle, (sigmoid - 1/4) x pi, near pi/4 at every
    anchor: within 0 and 1, like a class's score."""
    return Fixed(_per_anchor((0.78,)))


def test_an_obb_heads_angle_is_not_read_as_a_class_without_names(tmp_path, importable):
    """Without the classes' names, every row after a YOLO head's box was read as a class: an OBB head's angle, within 0
    and 1, was a 4th class and its rotated boxes drawn upright, in a module opened without --classes. How many rows
    are classes is told by the names alone: unnamed, nothing is drawn; named (an Ultralytics export's metadata), the
    one number after the class scores is the angle that turns each box, where some anchor's lies outside 0 to 1, as
    a trained head's do; a fresh head's angles, all near pi/4, are not told from a class's scores, and stay in the
    table."""
    model, _ = open_with_images(f"{importable}:obb_head", None, Options(input_size=SIDE))
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["shape"] == [8, ANCHORS] and "boxes" not in entry
    model, _ = open_with_images(_ultralytics_onnx(obb_head(), tmp_path / "yolo-obb.onnx", "obb"), None, Options())
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["shape"] == [8, ANCHORS] and "boxes" not in entry
    model, _ = open_with_images(f"{importable}:yolo_transposed", None, Options(input_size=SIDE))
    [entry] = analyze_image(model, _image())["outputs"]
    assert "boxes" not in entry  # a plain head unnamed: its class count cannot be told either


def four_classes():
    """A YOLO head of four classes, upright: the three of :data:`NAMES`, then a fourth (the dog's anchor scoring it
    too)."""
    head = torch.cat([_per_anchor(), torch.full((1, ANCHORS), 0.01)])
    head[7, 0] = 0.6
    return Fixed(head)


def test_names_one_fewer_than_an_upright_heads_classes_are_refused_not_read_as_angles(importable):
    """--classes naming three of an upright head's four classes had the fourth class's scores read as an OBB head's
    angles, and its boxes drawn turned by them: a class's scores never leave 0 to 1, as a trained OBB head's angles
    do, so the names are refused for counting no head's classes, as for any other count."""
    entry = _refused_one_name_short(importable, "four_classes")
    assert "turned" not in entry and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]


P2_ANCHORS = 16 * 16 + ANCHORS  # a YOLO head's places at strides 4, 8, 16 and 32 of a 64-pixel input


class P2Head(YoloHead):
    """A YOLO head of four levels from stride 4 (Ultralytics' yolov8-p2.yaml and yolo26-p2.yaml, for small objects)."""

    def __init__(self):
        super().__init__()
        head = _per_anchor(anchors=P2_ANCHORS)
        self.boxes, self.logits = head[:4], torch.logit(head[4:])


def test_a_yolo_head_from_stride_4_is_drawn_and_no_transformers_tokens(tmp_path):
    """A P2 model's head scores a place per 4 pixels too (340 anchors at 64 pixels): it was no YOLO head (its boxes
    left to the table, its metadata's names dropped) and its scores per anchor were called a transformer's tokens."""
    model, _ = open_with_images(_ultralytics_onnx(P2Head(), tmp_path / "yolo-p2.onnx"), None, Options())
    assert model.classes == NAMES and not any("tokens" in n for n in model.notes), model.notes
    [entry] = analyze_image(model, _image())["outputs"]
    assert entry["shape"] == [7, P2_ANCHORS] and _drawn(entry) == [(name, score) for name, score, *_ in KEPT]


class ListedDetector(nn.Module):
    """torchvision's detector as its ONNX export answers one image: ``boxes``, ``labels`` and ``scores`` of the boxes
    found (no batch axis), and Mask R-CNN's ``masks``: a dog over the left half of its box, a cat below the threshold
    of no one's (torchvision keeps its boxes itself)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        masks = torch.zeros(2, 1, SIDE, SIDE)
        masks[0, 0, 8:24, 8:16] = 0.9
        self.register_buffer("masks", masks)

    def forward(self, x):
        nothing = self.conv(x).mean()
        return (torch.tensor([[8.0, 8, 24, 24], [34, 32, 54, 48]]) + nothing, torch.tensor([1, 0]),
                torch.tensor([0.8, 0.3]) + nothing, self.masks + nothing)


def test_a_torchvision_detectors_onnx_export_is_drawn_by_its_outputs_names(tmp_path):
    """torchvision's detectors exported to ONNX return their outputs named ``boxes``, ``labels``, ``scores`` (and
    ``masks``), as torchvision's own export names them: they were left to the table, and ``--classes`` was refused
    for naming nothing. Their boxes are drawn with their masks and named."""
    path = tmp_path / "maskrcnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ListedDetector().eval(), (torch.zeros(1, 3, SIDE, SIDE),), str(path), dynamo=False,
                          input_names=["images"], output_names=["boxes", "labels", "scores", "masks"])
    model, _ = open_with_images(path, None, Options(classes=NAMES))
    entry = next(o for o in analyze_image(model, _image())["outputs"] if o["name"] == "boxes")
    assert entry["with"] == "masks" and _drawn(entry) == [("dog", 0.8), ("cat", 0.3)]
    picture, dog = _picture(entry), np.frombuffer(bytes.fromhex(entry["detected"][0]["colour"][1:]), np.uint8)
    assert (picture[16, 12] == np.round(0.5 * 128 + 0.5 * dog)).all() and (picture[16, 20] == 128).all()


def empty_mask():
    """A binary segmentation model's answer squeezed of its channel (N x H x W of 0 or 1) where it finds nothing: all
    zeros, as a table of 48 rows of 6 + 42 numbers would read."""
    return Fixed(torch.zeros(48, 48))


def test_a_pictures_map_of_zeros_is_no_list_of_detections(importable):
    """A map of the input's pixels, all zeros (a mask that finds nothing), was read as an end-to-end detector's list of
    48 rows, none scoring, with 14 keypoints each: a picture of "its 0 boxes", and --classes taken for naming them.
    It is a map: no boxes, and --classes refused."""
    model, _ = open_with_images(f"{importable}:empty_mask", None, Options(input_size=48))
    [entry] = analyze_image(model, torch.full((3, 48, 48), 128, dtype=torch.uint8))["outputs"]
    assert entry["shape"] == [48, 48] and "boxes" not in entry
    with pytest.raises(CnnlabError, match="--classes gives 3 names, but .* is not a classifier"):
        open_with_images(f"{importable}:empty_mask", None, Options(input_size=48, classes=NAMES))


def end_to_end_inside_out():
    """YOLO26's list where an unlikely box is turned inside out (its head's distances from the anchor are a
    convolution's, negative where nothing was learnt): x2 < x1 in a row scoring 0.1."""
    net = end_to_end()
    net.out0[3] = torch.tensor([40, 40, 30, 60, 0.1, 0])
    return net


def rtdetr_rows():
    """Ultralytics' RT-DETR's answer: rows of a box's centre and size scaled to 1, a score and a class, whose one
    confident box (centred, large) reads as corners in order."""
    rows = torch.zeros(300, 6)
    rows[0] = torch.tensor([0.5, 0.5, 0.8, 0.9, 0.9, 1])
    return Fixed(rows)


def test_a_list_with_an_unlikely_box_inside_out_is_drawn_and_boxes_scaled_to_1_are_not(importable):
    """A list of detections was refused whole for any row's corners out of order, those of a row below the threshold
    too, as YOLO26's gives them for unlikely anchors: its boxes are drawn, the ones kept having theirs in order. Rows
    whose boxes kept all lie within 0 and 1 (centres and sizes scaled to 1, RT-DETR's) were drawn in the input's first
    pixel: they are not the input's pixels, and not drawn."""
    model, _ = open_with_images(f"{importable}:end_to_end_inside_out", None, Options(input_size=SIDE, classes=NAMES))
    [entry] = analyze_image(model, _image())["outputs"]
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    model, _ = open_with_images(f"{importable}:rtdetr_rows", None, Options(input_size=SIDE))
    [entry] = analyze_image(model, _image())["outputs"]
    assert "boxes" not in entry


# An OBB head's anchors that score, (centre x, centre y, width, height, angle, class, score): the dog, its width's side
# turned by 0.3 radians; a dog 3 pixels along that side (a probabilistic IoU of 0.82 with it: suppressed) and a bird
# there (another class: kept); a dog 6 pixels along (0.64 with the first dog, 0.82 with the one suppressed: suppressed
# too, as Ultralytics' fast NMS suppresses it, where a greedy one would keep it); a cat below the threshold of 0.25; a
# cat apart, a square turned by 45 degrees (a diamond, its corners 8 x sqrt(2) from its centre). Ultralytics 8.4.190's
# batch_probiou gives these IoUs.
TURN, ALONG = 0.3, (math.cos(0.3), math.sin(0.3))
TURNED = [(16, 16, 20, 8, TURN, 1, 0.9), (16 + 3 * ALONG[0], 16 + 3 * ALONG[1], 20, 8, TURN, 1, 0.8),
          (16 + 3 * ALONG[0], 16 + 3 * ALONG[1], 20, 8, TURN, 2, 0.85),
          (16 + 6 * ALONG[0], 16 + 6 * ALONG[1], 20, 8, TURN, 1, 0.7), (48, 48, 8, 8, 0.0, 0, 0.2),
          (44, 40, 16, 16, math.pi / 4, 0, 0.5)]


def turned_head():
    """An OBB head's ``4 + 3 classes + 1`` rows of one number per anchor: centre and size, class scores, angle; the
    anchors that do not score turned as a trained head turns them, anywhere from -pi/4 to 3pi/4."""
    head = _per_anchor((0.0,))
    head[-1] = torch.linspace(-math.pi / 4, 3 * math.pi / 4, ANCHORS)
    for anchor, (cx, cy, w, h, angle, label, score) in enumerate(TURNED):
        head[:4, anchor] = torch.tensor([cx, cy, w, h], dtype=torch.float)
        head[4 + label, anchor] = score
        head[-1, anchor] = angle
    return Fixed(head)


def turned_list():
    """An OBB model's list of detections (YOLO26-OBB's, an export with its NMS inside): rows of centre, size, score,
    class and angle, the boxes Ultralytics' predict keeps of :data:`TURNED` and the one below the threshold."""
    rows = torch.zeros(300, 7)
    for k, (cx, cy, w, h, angle, label, score) in enumerate(t for t in TURNED if t[6] != 0.8 and t[6] != 0.7):
        rows[k] = torch.tensor([cx, cy, w, h, score, label, angle])
    return Fixed(rows)


@pytest.mark.parametrize("at_once", [256, 1])
def test_an_obb_heads_turned_boxes_are_drawn_as_ultralytics_predict_keeps_them(at_once, tmp_path, monkeypatch):
    """An OBB head's boxes (Ultralytics' YOLOv8-OBB and YOLO11-OBB export: an angle after the class scores) were left
    to the table: they are kept as Ultralytics' predict keeps them (a best class above 0.25; then, class by class, no
    box whose probabilistic IoU with a better one is above 0.7, that better one suppressed or not) and drawn turned,
    by their corners, named by the metadata's names; the same where the boxes are measured one at a time against the
    others."""
    monkeypatch.setattr("cnnlab.explore.boxes.TURNED_AT_ONCE", at_once)
    model, _ = open_with_images(_ultralytics_onnx(turned_head(), tmp_path / "yolo-obb.onnx", "obb"), None, Options())
    assert model.classes == NAMES
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["shape"], entry["found"], entry["turned"]) == ([8, ANCHORS], 3, True)
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    assert "a probabilistic IoU below 0.7 with every better turned box of its class" in entry["kept"]
    picture, cat = _picture(entry), tuple(bytes.fromhex(entry["detected"][2]["colour"][1:]))
    # the cat's diamond: its top and left corners outlined, the corner of the upright box around it the input's grey
    assert tuple(picture[29, 44]) == cat and tuple(picture[40, 33]) == cat
    assert tuple(picture[29, 33]) == (128, 128, 128) and tuple(picture[40, 44]) == (128, 128, 128)


def test_a_turned_box_at_the_iou_threshold_itself_is_suppressed(monkeypatch):
    """Ultralytics' fast NMS keeps a turned box only where its probabilistic IoU with every better one of its class is
    below 0.7: at 0.7 itself it is suppressed (cnnlab kept it, suppressing above 0.7 alone, as torchvision's nms does
    upright boxes)."""
    overlaps = torch.tensor([[1.0, IOU], [IOU, 1.0]])  # the threshold itself, as the float compared
    monkeypatch.setattr("cnnlab.explore.boxes.probabilistic_iou", lambda first, second: overlaps[:len(first)])
    sizes = torch.tensor([[16.0, 16.0, 20.0, 8.0], [18.0, 16.0, 20.0, 8.0]])
    found = _turned_head("head", sizes, torch.tensor([0.3, 0.3]), torch.tensor([0.9, 0.8]),
                         torch.tensor([1, 1]))
    assert found.scores.tolist() == pytest.approx([0.9])


def test_an_obb_models_list_of_turned_detections_is_drawn_above_the_threshold(importable):
    """An OBB model's end-to-end list (YOLO26-OBB's; an export with its NMS inside: rows of centre, size, score, class
    and angle) was left to the table: its rows scoring above 0.25 are drawn turned, named by --classes."""
    model, _ = open_with_images(f"{importable}:turned_list", None, Options(input_size=SIDE, classes=NAMES))
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["shape"], entry["found"], entry["turned"]) == ([300, 7], 3, True)
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    picture, cat = _picture(entry), tuple(bytes.fromhex(entry["detected"][2]["colour"][1:]))
    assert tuple(picture[29, 44]) == cat and tuple(picture[29, 33]) == (128, 128, 128)


def test_the_probabilistic_iou_of_turned_boxes_is_one_less_their_gaussians_hellinger_distance():
    """Two boxes of one size, one shifted by d along its width w, have Gaussians whose Bhattacharyya distance is
    1.5 d^2 / w^2 (their covariances alike): the IoU is 1 - sqrt(1 - exp(-1.5 d^2 / w^2)), however both are turned, and
    a box's width and height swapped with its angle a quarter turn on is the same box."""
    shifts = torch.tensor([0.0, 1.0, 3.0, 6.0, 12.0])
    for angle in (0.0, 0.3, -0.7, 2.0):
        along = torch.tensor([math.cos(angle), math.sin(angle)])
        first = torch.tensor([[16.0, 16.0, 20.0, 8.0, angle]])
        second = torch.cat([16 + shifts[:, None] * along, torch.tensor([[20.0, 8.0, angle]]).expand(5, 3)], 1)
        expected = 1 - (1 - torch.exp(-1.5 * shifts[1:].double() ** 2 / 20 ** 2)).sqrt()
        iou = probabilistic_iou(first.double(), second.double())[0]
        # (a distance clamped above 1e-7, and 1e-7 added under the root, as Ultralytics does)
        assert iou[0] == pytest.approx(1.0, abs=1e-3) and iou[1:].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
        swapped = second[:, [0, 1, 3, 2, 4]] + torch.tensor([0, 0, 0, 0, math.pi / 2])
        assert torch.allclose(probabilistic_iou(first.double(), swapped.double())[0], iou, atol=1e-9)


def test_the_probabilistic_iou_of_boxes_of_any_sizes_and_angles_is_their_gaussians_bhattacharyya_form():
    """Boxes of other sizes and angles, whose Gaussians' covariances differ (the test above has alike ones, where the
    covariances' unlikeness is 0): each pair against the Bhattacharyya distance written with matrices, the covariance
    R diag(w^2 / 12, h^2 / 12) R^T, its mean's inverse solved and its determinants taken by torch.linalg."""
    generator = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(12, 2, generator=generator, dtype=torch.float64) * 40,
                       torch.rand(12, 2, generator=generator, dtype=torch.float64) * 30 + 1,
                       (torch.rand(12, 1, generator=generator, dtype=torch.float64) - 0.25) * math.pi], 1)
    cos, sin = boxes[:, 4].cos(), boxes[:, 4].sin()
    turn = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # 12 x 2 x 2
    spread = turn @ torch.diag_embed(boxes[:, 2:4] ** 2 / 12) @ turn.transpose(1, 2)
    mean = (spread[:, None] + spread[None]) / 2  # 12 x 12 x 2 x 2
    apart = (boxes[:, None, :2] - boxes[None, :, :2])[..., None]
    distance = (apart.transpose(-1, -2) @ torch.linalg.solve(mean, apart))[..., 0, 0] / 8 + 0.5 * torch.log(
        torch.linalg.det(mean) / (torch.linalg.det(spread)[:, None] * torch.linalg.det(spread)[None]).sqrt())
    expected = 1 - (1 - torch.exp(-distance.clamp(1e-7, 100)) + 1e-7).sqrt()
    assert torch.allclose(probabilistic_iou(boxes, boxes), expected, atol=1e-6)
    assert ((expected > 0.05) & (expected < 0.95)).sum() > 4  # overlaps of every degree, not only 0 and 1


# Ultralytics' RT-DETR's rows (its export from 8.4 on), the boxes of :data:`KEPT` and a cat below the threshold as
# centres and sizes scaled to the input's 64 pixels, a score and a class, best first
RTDETR_ROWS = [(16, 16, 16, 16, 0.9, 1), (17, 16, 16, 16, 0.85, 2), (44, 40, 20, 16, 0.5, 0), (48, 48, 8, 8, 0.2, 0)]


class RtdetrRows(nn.Module):
    """RT-DETR's answer as Ultralytics' ONNX export gives it: 300 rows for the one image it is exported for, the batch
    axis kept (1 x 300 x 6), and declared of a free length (the graph's shape inference names it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        rows = torch.zeros(300, 6)
        for k, (cx, cy, w, h, score, label) in enumerate(RTDETR_ROWS):
            rows[k] = torch.tensor([cx / SIDE, cy / SIDE, w / SIDE, h / SIDE, score, label])
        self.register_buffer("rows", rows)

    def forward(self, x):
        return self.rows[None] + self.conv(x).mean()


def rtdetr_queries():
    """RT-DETR's answer as Ultralytics exported it before 8.4, for 4 queries: each a box's centre and size scaled to 1,
    then 3 classes' sigmoids. Five of a query and a class score above 0.25 (the dog's query scores a bird too, the
    cat's a dog); its post-processing takes the 4 best of any query and class, as many as its queries."""
    queries = torch.tensor([[16, 16, 16, 16], [17, 16, 16, 16], [44, 40, 20, 16], [48, 48, 8, 8]]) / SIDE
    scores = torch.tensor([[0.01, 0.9, 0.3], [0.01, 0.01, 0.85], [0.5, 0.27, 0.01], [0.2, 0.01, 0.01]])
    return Fixed(torch.cat([queries, scores], 1))


def _ultralytics_rtdetr(tmp_path) -> str:
    """Ultralytics' RT-DETR export (:class:`RtdetrRows`, of a free length; its head named in the metadata)."""
    return _ultralytics_onnx(RtdetrRows(), tmp_path / "rtdetr.onnx", head="RTDETRDecoder",
                             dynamic_axes={"output0": {0: "rows"}})


def test_ultralytics_rtdetrs_rows_are_drawn_at_the_inputs_scale_where_named(tmp_path):
    """Ultralytics' RT-DETR export (rows of centre and size scaled to 1, score and class; 1 x 300 x 6, its length
    declared free) was left to the table and its metadata's names dropped: its rows scoring above 0.25 are drawn at the
    input's scale, as its predictor keeps them, named by the metadata."""
    model, _ = open_with_images(_ultralytics_rtdetr(tmp_path), None, Options())
    assert model.classes == NAMES
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["shape"], entry["found"]) == ([1, 300, 6], 3)
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]
    assert "RT-DETR predictor" in entry["kept"]
    picture = _picture(entry)
    dog, bird, cat = (tuple(bytes.fromhex(b["colour"][1:])) for b in entry["detected"])
    assert tuple(picture[16, 8]) == dog and tuple(picture[16, 25]) == bird and tuple(picture[40, 54]) == cat


def test_rtdetrs_queries_are_drawn_as_the_best_of_any_query_and_class(importable):
    """RT-DETR's queries as Ultralytics exported them before 8.4 (centre and size scaled to 1, then a sigmoid per
    class) were left to the table: named by --classes, the best of any query and class, as many as its queries, are
    drawn where they score above 0.25, as Ultralytics' RT-DETR keeps them (a query's second class too)."""
    model, _ = open_with_images(f"{importable}:rtdetr_queries", None, Options(input_size=SIDE, classes=NAMES))
    [entry] = analyze_image(model, _image())["outputs"]
    assert (entry["shape"], entry["found"]) == ([4, 7], 4)
    assert _drawn(entry) == [("dog", 0.9), ("bird", 0.85), ("cat", 0.5), ("bird", 0.3)]
    assert "of the 4 best of any query and class" in entry["kept"]
    model, _ = open_with_images(f"{importable}:rtdetr_queries", None, Options(input_size=SIDE))
    assert not any("boxes" in o for o in analyze_image(model, _image())["outputs"])  # unnamed: classes not counted


class TopKDetector(nn.Module):
    """An end-to-end detector whose last step is a top-k of any anchor and class (NMS-free, as some exports end): the
    4 best scores, then their anchors' boxes and classes, batched (N x 4, N x 4 x 4, N x 4): of the anchors of
    :data:`SCORED`, all but the cat below the threshold (no NMS)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        head = _per_anchor()
        self.register_buffer("corners", torch.cat([head[:2] - head[2:4] / 2, head[:2] + head[2:4] / 2]).T)
        self.register_buffer("scores", head[4:].T)  # anchors x classes

    def forward(self, x):
        nothing = self.conv(x).mean((1, 2, 3)).view(-1, 1, 1)
        scores = (self.scores + nothing).flatten(1)  # N x (anchors x classes)
        best, index = scores.topk(4)
        anchor, labels = index // len(NAMES), index % len(NAMES)
        return best, (self.corners + nothing)[0][anchor], labels


def test_a_detector_whose_first_output_is_a_topks_scores_is_opened_and_its_boxes_drawn(tmp_path):
    """An ONNX detector whose first output is a TopK's values (an end-to-end export's k best scores, boxes and classes
    beside them) was refused as a classifier's TopK ("expected N x classes of scores in the classes' order"), in
    explore too: beside boxes (N x k x 4) they are a detector's, opened as a network and its boxes drawn by their
    outputs' names, named by --classes; predict refuses it as no classifier."""
    path = tmp_path / "topk.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TopKDetector().eval(), (torch.zeros(1, 3, SIDE, SIDE),), str(path), dynamo=False,
                          input_names=["images"], output_names=["scores", "boxes", "labels"])
    model, _ = open_with_images(path, None, Options(classes=NAMES))
    assert any("its output 'scores' is a TopK's, each image's k largest scores in order, beside boxes (boxes)" in n
               for n in model.notes), model.notes
    entry = next(o for o in analyze_image(model, _image())["outputs"] if o["name"] == "boxes")
    assert _drawn(entry) == [("dog", 0.9), ("bird", 0.85), ("dog", 0.8), ("cat", 0.5)]
    picture = _picture(entry)
    assert tuple(picture[16, 8]) == tuple(bytes.fromhex(entry["detected"][0]["colour"][1:]))
    with pytest.raises(NotAClassifier, match="is a TopK's, each image's k largest scores in order, beside boxes"):
        open_model(path)


# A picture wider than the input, 128 x 74, of a gradient nowhere grey and a red block at x 68-108, y 38-70.
# Ultralytics' LetterBox halves it to 64 x 37 on grey 114, 13 rows above it and 14 below (round(13.5 - 0.1) above): the
# block lands at x 34-54, y 32-48, where :data:`KEPT`'s cat is, and its scale_boxes puts the cat's box back on it
WIDE_HW, RED_BLOCK, LETTERBOXED_ROWS = (74, 128), (68, 38, 108, 70), (13, 50)


def _wide_picture(folder: Path, name: str = "wide.png", hw: tuple[int, int] = WIDE_HW,
                  block: tuple[int, ...] = RED_BLOCK) -> np.ndarray:
    """The wide picture (or another of ``hw`` and its red ``block``), saved as ``folder``/``name`` in a new folder, and
    returned (uint8 ``H x W x 3``)."""
    y, x = np.mgrid[0:hw[0], 0:hw[1]]
    picture = np.stack([x * 2, np.full_like(x, 200), y * 3], 2).astype(np.uint8)
    x1, y1, x2, y2 = block
    picture[y1:y2, x1:x2] = (255, 0, 0)
    folder.mkdir()
    Image.fromarray(picture).save(folder / name)
    return picture


def _resized(picture: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """torch's bilinear resize (half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR in floats): ``C x H x W``."""
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].double()
    return nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)[0]


def _red_bounds(image: torch.Tensor) -> tuple[int, int, int, int]:
    """``x1, y1, x2, y2`` (the last exclusive) of the red pixels of a ``3 x H x W`` image."""
    red = ((image[0] > 200) & (image[1] < 60)).nonzero()
    return int(red[:, 1].min()), int(red[:, 0].min()), int(red[:, 1].max()) + 1, int(red[:, 0].max()) + 1


def _scale_boxes(box, input_hw, hw) -> tuple[float, ...]:
    """A box in the input's pixels put back on a picture of ``hw`` by Ultralytics' scale_boxes arithmetic (8.4): the
    gain of each side as LetterBox rounded it, the padding of the left and top ``round(pad / 2 - 0.1)``."""
    gain = min(input_hw[0] / hw[0], input_hw[1] / hw[1])
    new_h, new_w = (max(round(side * gain), 1) for side in hw)
    pad_x, pad_y = round((input_hw[1] - new_w) / 2 - 0.1), round((input_hw[0] - new_h) / 2 - 0.1)
    x1, y1, x2, y2 = box
    return (x1 - pad_x) * hw[1] / new_w, (y1 - pad_y) * hw[0] / new_h, (x2 - pad_x) * hw[1] / new_w, \
        (y2 - pad_y) * hw[0] / new_h


def test_an_ultralytics_detectors_pictures_are_letterboxed_on_grey_114_as_its_predict_does(tmp_path):
    """Ultralytics' predict letterboxes a picture for its detectors: resized bilinearly (OpenCV's, not antialiased)
    to fit, on grey 114, the odd row of padding below. The explorer resized it with Lanczos onto its corners' median
    colour: the network saw another picture than its users' and found other boxes. The bars are grey 114 and the rows
    Ultralytics' own; the picture's pixels torch's bilinear's within a level (OpenCV rounds in integers); the network's
    box drawn on the page lies around the red block that Ultralytics' scale_boxes puts it back on; an upload is fed
    the same; and the page says how it was fed."""
    picture = _wide_picture(tmp_path / "pictures")
    model, images = open_with_images(_ultralytics_onnx(YoloHead(), tmp_path / "yolo.onnx"), tmp_path / "pictures",
                                     Options())
    assert "pictures letterboxed with grey 114 as Ultralytics' predict does" in model.spec.describe()
    fed = images.images[0]
    top, bottom = LETTERBOXED_ROWS
    assert (fed[:, :top] == 114).all() and (fed[:, bottom:] == 114).all()
    assert not (fed[:, top:bottom] == 114).all(0).any()  # no pixel of the picture itself is grey
    assert (fed[:, top:bottom].double() - _resized(picture, (bottom - top, SIDE))).abs().max() <= 1.5
    spec = model.spec
    upload = decode_upload((tmp_path / "pictures" / "wide.png").read_bytes(), spec.channels, spec.read_hw,
                           crop=spec.crop, fit=spec.fit)
    assert torch.equal(upload, fed)
    cat = KEPT[2][2:]
    assert _red_bounds(fed) == cat and _scale_boxes(cat, (SIDE, SIDE), WIDE_HW) == RED_BLOCK
    [entry] = analyze_image(model, fed)["outputs"]
    assert entry["detected"][2]["name"] == "cat"
    colour, drawn = tuple(bytes.fromhex(entry["detected"][2]["colour"][1:])), _picture(entry)
    assert tuple(drawn[40, cat[0]]) == colour and tuple(drawn[40, cat[2]]) == colour  # its sides, on the block's
    assert tuple(drawn[5, 5]) == (114, 114, 114)  # the page shows the bars the network saw


def test_ultralytics_rtdetrs_pictures_are_stretched_to_its_input_as_its_predictor_does(tmp_path):
    """Ultralytics' RT-DETR predictor stretches a picture to its square input (scale_fill), no padding, and scales its
    boxes (centre and size scaled to 1) by the picture's width and height: the explorer padded it, so a box scaled to 1
    was in the padded square's, not the picture's. The input is the whole picture resized bilinearly, and the red
    block's box, scaled to 1 by the picture's sides, lands on the block in it."""
    picture = _wide_picture(tmp_path / "pictures")
    model, images = open_with_images(_ultralytics_rtdetr(tmp_path), tmp_path / "pictures", Options())
    assert "stretched to it, not letterboxed, as Ultralytics' predict does" in model.spec.describe()
    fed = images.images[0]
    assert (fed.double() - _resized(picture, (SIDE, SIDE))).abs().max() <= 1.5
    (height, width), (x1, y1, x2, y2) = WIDE_HW, RED_BLOCK
    stretched = (x1 / width * SIDE, y1 / height * SIDE, x2 / width * SIDE, y2 / height * SIDE)
    assert all(abs(bound - edge) < 1 for bound, edge in zip(_red_bounds(fed), stretched, strict=True))


class SamplingRtdetr(nn.Module):
    """RT-DETR's queries (:func:`rtdetr_queries`) from a network that samples its maps where they point, as its
    decoder's deformable attention does (``F.grid_sample``, ONNX's GridSample), which no YOLO head does."""

    def __init__(self):
        super().__init__()
        self.queries = rtdetr_queries()

    def forward(self, x):
        sampled = nn.functional.grid_sample(x, torch.zeros(x.shape[0], 1, 1, 2), align_corners=False)
        return self.queries(x) + 0 * sampled.mean()


def test_an_rtdetr_export_older_than_the_head_metadata_is_stretched_as_rtdetr_reads_it(tmp_path):
    """An RT-DETR export whose metadata does not name its head (Ultralytics' exports before the ``head`` key) was
    letterboxed, as ``YOLO(file)`` feeds it: but YOLO(file) then reads its queries as a YOLO head's scores (by
    hand, Ultralytics 8.4.190 on rtdetr-l built from its YAML, exported at 320 px, its ``head`` key removed: boxes of
    corners 1.8, 0, 0.2, 0 on a 640 x 360 picture), and only ``RTDETR(file)``, which stretches the picture, gives its
    boxes (the same as the export with the key). Told by its graph's GridSample, it is stretched as RTDETR reads it;
    the same answer from a graph that samples nothing (a YOLO export's) stays letterboxed."""
    picture = _wide_picture(tmp_path / "pictures")
    path = _ultralytics_onnx(SamplingRtdetr(), tmp_path / "rtdetr.onnx", head=None)
    model, images = open_with_images(path, tmp_path / "pictures", Options())
    said = model.spec.describe()
    assert "stretched to it, not letterboxed, as Ultralytics' predict does" in said
    assert "stretch from the Ultralytics' metadata and RT-DETR's GridSample in its graph" in said
    assert (images.images[0].double() - _resized(picture, (SIDE, SIDE))).abs().max() <= 1.5
    plain = _ultralytics_onnx(rtdetr_queries(), tmp_path / "queries.onnx", head=None)
    assert "letterboxed with grey 114" in open_with_images(plain, None, Options())[0].spec.describe()


def test_another_detector_keeps_cnnlabs_own_padding(tmp_path):
    """Only an export Ultralytics' metadata names as its own is letterboxed: the same head exported without it is fed
    as before, resized with Lanczos onto its corners' median colour."""
    _wide_picture(tmp_path / "pictures")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(YoloHead().eval(), (torch.zeros(1, 3, SIDE, SIDE),), str(tmp_path / "head.onnx"),
                          dynamo=False, input_names=["images"], output_names=["output0"])
    model, images = open_with_images(tmp_path / "head.onnx", tmp_path / "pictures", Options(classes=NAMES))
    assert "letterbox" not in model.spec.describe()
    top, bottom = LETTERBOXED_ROWS
    assert tuple(images.images[0][:, 0, 0].tolist()) == (127, 200, 109)  # the corners' median, not grey 114
    assert not (images.images[0][:, top:bottom] == images.images[0][:, :1, :1]).all(0).any()


class UltralyticsDetector(YoloHead):
    """A stand-in of Ultralytics' DetectionModel as ``YOLO("yolov8n.pt").model`` gives it: its class in
    ultralytics.nn.tasks, its task and class names plain attributes."""

    task, names = "detect", dict(enumerate(NAMES))


UltralyticsDetector.__module__ = "ultralytics.nn.tasks"


def ultralytics_detector():
    return UltralyticsDetector()


def test_an_ultralytics_network_given_as_a_module_is_named_and_letterboxed(tmp_path, importable):
    """An Ultralytics network handed over as a module (``module:function`` returning ``YOLO(...).model``) was fed
    padded pictures and its names were not read, so its boxes went unnamed and undrawn: told by its class's module,
    it is named by its ``names`` and letterboxed on grey 114 as Ultralytics' predict feeds it."""
    picture = _wide_picture(tmp_path / "pictures")
    model, images = open_with_images(f"{importable}:ultralytics_detector", tmp_path / "pictures",
                                     Options(input_size=SIDE))
    assert model.classes == NAMES
    assert "letterboxed with grey 114 padded only to a multiple of its stride, 32" in model.spec.describe()
    fed = images.fed(0)  # its 27 rows of padding are less than a stride: the whole input
    top, bottom = LETTERBOXED_ROWS
    assert (fed[:, :top] == 114).all() and (fed[:, bottom:] == 114).all()
    assert (fed[:, top:bottom].double() - _resized(picture, (bottom - top, SIDE))).abs().max() <= 1.5
    [entry] = analyze_image(model, fed)["outputs"]
    assert _drawn(entry) == [(name, score) for name, score, *_ in KEPT]


# A picture of 128 x 40 with a red block at x 68-108, y 10-30. Ultralytics' LetterBox halves it to 64 x 20: on the
# whole 64 x 64 input, 22 rows of grey above and below; padded only to a multiple of the stride, 32 (its `auto`, for a
# PyTorch network or an export of dynamic sides), 44 rows of padding keep 44 % 32 = 12, 6 above and 6 below: a 32 x 64
# input, the block at x 34-54, y 11-21 (y 27-37 in the whole square). By hand, Ultralytics 8.4.190's predictor fed
# yolov8n exported with dynamic=True a 640 x 384 input for a 640 x 360 picture, and 640 x 640 exported without it.
STRIP_HW, STRIP_BLOCK, STRIP_INPUT, STRIP_ROWS = (40, 128), (68, 10, 108, 30), (32, 64), (6, 26)


class RedFinder(nn.Module):
    """A detector of any input size that answers in rows of x1, y1, x2, y2, score and class (an end-to-end list, as
    YOLO26 exports one): its one box is the bounds of the red pixels of the input it is fed, so that its answer says
    where the picture lay in that input. As a module, it keeps the shapes it was fed (``fed``)."""

    def __init__(self):
        super().__init__()
        self.fed: list[tuple[int, ...]] = []

    def forward(self, x):
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            self.fed.append(tuple(x.shape))
        red = ((x[:, 0] > 0.8) & (x[:, 1] < 0.25)).float()  # N x H x W
        ys = torch.arange(x.shape[2], dtype=x.dtype).view(1, -1, 1)
        xs = torch.arange(x.shape[3], dtype=x.dtype).view(1, 1, -1)
        away = (1 - red) * 1e4
        box = [(xs + away).amin((1, 2)), (ys + away).amin((1, 2)), (xs - away).amax((1, 2)) + 1,
               (ys - away).amax((1, 2)) + 1]
        row = torch.stack([*box, torch.full_like(box[0], 0.9), torch.zeros_like(box[0])], 1)  # N x 6: a cat
        return torch.stack([row, torch.zeros_like(row)], 1)


class UltralyticsRedFinder(RedFinder):
    """:class:`RedFinder` as ``YOLO(...).model`` gives a network: its class in ultralytics.nn.tasks, its task, names
    and strides plain attributes."""

    task, names, stride = "detect", dict(enumerate(NAMES)), torch.tensor([8.0, 16.0, 32.0])


UltralyticsRedFinder.__module__ = "ultralytics.nn.tasks"


def ultralytics_red_finder():
    return UltralyticsRedFinder()


def _found_box(model, image: torch.Tensor) -> tuple[int, ...]:
    """The box the red finder drew over ``image``, read from the page's picture of it: the bounds of its colour."""
    [entry] = analyze_image(model, image)["outputs"]
    drawn, colour = _picture(entry), bytes.fromhex(entry["detected"][0]["colour"][1:])
    assert drawn.shape[:2] == tuple(image.shape[-2:])  # the page shows the input the network saw
    ys, xs = np.nonzero((drawn == np.frombuffer(colour, np.uint8)).all(2))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())  # drawn on x2 and y2


@pytest.mark.parametrize("args, axes, rectangle", [
    ("{'dynamic': True, 'batch': 1}", True, True),
    (None, True, True),  # no export args: Ultralytics goes by the output's batch, free
    ("{'dynamic': False}", True, False),  # its export args say fixed: the whole square, whatever the graph's axes
    ("{'dynamic': True}", False, False),  # fixed sides, which a rectangle would fail on
])
def test_an_ultralytics_export_of_dynamic_sides_is_letterboxed_to_its_minimum_rectangle(tmp_path, args, axes,
                                                                                         rectangle):
    """Ultralytics' predict letterboxes a picture for an export of dynamic sides (by its export args, else by its
    output's free batch) only up to a multiple of the stride, as for a PyTorch network: the explorer padded it to the
    whole square, another input, on which the network's boxes and scores differ. Gallery and upload alike, the network
    is fed the picture's minimum rectangle and its box lands on the red block there; the gallery keeps the whole
    square's letterbox for its thumbnail. A fixed export is fed the square as before."""
    _wide_picture(tmp_path / "pictures", "strip.png", STRIP_HW, STRIP_BLOCK)
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch"}} if axes else None
    path = _ultralytics_onnx(RedFinder(), tmp_path / "yolo.onnx", dynamic_axes=dynamic,
                             more=(("stride", "32"), ("args", args)))
    model, images = open_with_images(path, tmp_path / "pictures", Options())
    spec, (top, bottom) = model.spec, STRIP_ROWS
    upload = decode_upload((tmp_path / "pictures" / "strip.png").read_bytes(), spec.channels, spec.read_hw,
                           crop=spec.crop, fit=spec.fit)
    x1, y1, x2, y2 = 34, 11, 54, 21
    if not rectangle:
        assert "letterboxed with grey 114 as Ultralytics' predict does" in spec.describe()
        assert upload.shape == (3, SIDE, SIDE) and _found_box(model, upload) == (x1, y1 + 16, x2, y2 + 16)
        assert torch.equal(upload, images.fed(0))
        return
    assert "padded only to a multiple of its stride, 32" in spec.describe()
    assert upload.shape == (3, *STRIP_INPUT)
    assert (upload[:, :top] == 114).all() and (upload[:, bottom:] == 114).all()
    assert not (upload[:, top:bottom] == 114).all(0).any()
    assert _found_box(model, upload) == (x1, y1, x2, y2)
    assert torch.equal(upload, images.fed(0))
    whole = images.images[0]  # the thumbnail: the whole square's letterbox, the rectangle in its middle
    assert whole.shape == (3, SIDE, SIDE) and torch.equal(whole[:, 16:48], upload) and (whole[:, :16] == 114).all()


def test_an_ultralytics_network_given_as_a_module_is_fed_its_minimum_rectangle(tmp_path, importable):
    """Ultralytics' predict feeds a PyTorch network each picture letterboxed only up to a multiple of its stride (the
    larger of its strides and 32): the module was fed the whole square."""
    _wide_picture(tmp_path / "pictures", "strip.png", STRIP_HW, STRIP_BLOCK)
    model, images = open_with_images(f"{importable}:ultralytics_red_finder", tmp_path / "pictures",
                                     Options(input_size=SIDE))
    spec = model.spec
    upload = decode_upload((tmp_path / "pictures" / "strip.png").read_bytes(), spec.channels, spec.read_hw,
                           crop=spec.crop, fit=spec.fit)
    assert _found_box(model, upload) == (34, 11, 54, 21)
    assert model.model.fed[-1] == (1, 3, *STRIP_INPUT)
    assert torch.equal(images.fed(0), upload)


class UltralyticsRedShare(RedFinder):
    """A network in Ultralytics' class whose task nothing says (no ``task``, ``args`` or ``Classify`` head), so that
    its predict letterboxes each picture to its minimum rectangle, and whose output is a classifier's: its scores are
    the shares of red, of grey 114 and of the rest among the pixels it is fed, which the padding changes."""

    names, stride = dict(enumerate(NAMES)), torch.tensor([8.0, 16.0, 32.0])

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)  # the identity: a map for Grad-CAM, which adds nothing to the scores
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        self.fed.append(tuple(x.shape))
        x = self.conv(x)
        red = ((x[:, 0] > 0.8) & (x[:, 1] < 0.25)).float().mean((1, 2))
        grey = ((x - 114 / 255).abs() < 1e-3).all(1).float().mean((1, 2))
        return 10 * torch.stack([red, grey, 1 - red - grey], 1) + 0 * x.mean((1, 2, 3))[:, None]


UltralyticsRedShare.__module__ = "ultralytics.nn.tasks"


def ultralytics_red_share():
    return UltralyticsRedShare()


def test_predict_classifies_pictures_of_several_minimum_rectangles_each_at_its_own(tmp_path, importable, capsys):
    """`cnnlab predict` of a classifier fed each picture's minimum rectangle (Ultralytics' letterbox to a multiple of
    its stride): a chunk of pictures of several shapes was stacked into one batch, an internal error. Each picture is
    scored at its own shape, as the explorer scores it."""
    import json

    from cnnlab.cli import main

    _wide_picture(tmp_path / "pictures", "strip.png", STRIP_HW, STRIP_BLOCK)
    Image.fromarray(np.full((SIDE, SIDE, 3), (255, 0, 0), np.uint8)).save(tmp_path / "pictures" / "square.png")
    source, files = f"{importable}:ultralytics_red_share", sorted((tmp_path / "pictures").iterdir())
    assert main(["predict", source, "--input-size", str(SIDE), "--json", *map(str, files)]) == 0
    answers = json.loads(capsys.readouterr().out)
    model, images = open_with_images(source, tmp_path / "pictures", Options(input_size=SIDE))
    for k, answer in enumerate(answers):
        expected = analyze_image(model, images.fed(k))["top"]
        assert [t["class"] for t in answer["top"]] == [t["class"] for t in expected]
        assert np.allclose([t["probability"] for t in answer["top"]], [t["probability"] for t in expected])
    assert {shape[2:] for shape in model.model.fed} >= {STRIP_INPUT, (SIDE, SIDE)}


class Classify(nn.Module):
    """An Ultralytics classifier's head as its class is named (ultralytics.nn.modules.head.Classify)."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.linear = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, len(NAMES))

    def forward(self, x):
        return self.linear(self.pool(torch.relu(self.conv(x))).flatten(1))


Classify.__module__ = "ultralytics.nn.modules.head"


class ClassificationModel(nn.Module):
    """An Ultralytics classifier as a checkpoint holds it (``torch.load("yolo11n-cls.pt")["model"]``): no ``task``,
    which Ultralytics' loader sets when it reads the file (``guess_model_task``), and ``args`` where ``given``."""

    names, stride = dict(enumerate(NAMES)), torch.tensor([32.0])

    def __init__(self, args=None):
        super().__init__()
        self.model = nn.Sequential(Classify())
        if args is not None:
            self.args = args

    def forward(self, x):
        return self.model(x)


ClassificationModel.__module__ = "ultralytics.nn.tasks"


def checkpoint_classifier():
    return ClassificationModel()


def checkpoint_classifier_of_args():
    return ClassificationModel({"task": "classify", "imgsz": 32})


@pytest.mark.parametrize("function", ["checkpoint_classifier", "checkpoint_classifier_of_args"])
def test_an_ultralytics_classifier_without_its_task_is_framed_as_its_classify_predict_frames_it(importable, function):
    """An Ultralytics classifier taken from its checkpoint (module:function returning ``torch.load(...)["model"]``) has
    no ``task``: Ultralytics' loader guesses it (its ``args``' task, else its ``Classify`` head), and its classify
    predict resizes the shorter side and crops the centre. The explorer took it for a detector and letterboxed each
    picture to its minimum rectangle."""
    spec = open_model(f"{importable}:{function}", Options(input_size=SIDE)).spec
    assert "resized by the shorter side and centre-cropped as Ultralytics' classify predict does" in spec.describe()
    assert "letterbox" not in spec.describe()


@pytest.mark.parametrize("task, fitted", [("segment", "letterboxed with grey 114"),
                                          ("pose", "letterboxed with grey 114"),
                                          ("classify", "resized by the shorter side")])
def test_a_graph_that_samples_its_maps_is_rtdetr_only_among_detectors(tmp_path, task, fitted):
    """RT-DETR is a detector (its metadata's task detect): an export of another task whose graph samples its maps (a
    GridSample) and whose metadata names no head is fed as that task's predictor feeds it, as ``YOLO(file)`` picks the
    predictor by the task. It was stretched as RT-DETR, and the page said a classifier's framing was read from
    RT-DETR's GridSample."""
    path = _ultralytics_onnx(SamplingRtdetr(), tmp_path / f"{task}.onnx", task=task, head=None)
    said = open_with_images(path, None, Options())[0].spec.describe()
    assert fitted in said and "stretched" not in said and "GridSample" not in said
