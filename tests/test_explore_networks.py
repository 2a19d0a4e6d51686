"""Networks that are no classifiers, in the explorer and in ``cnnlab summary``: a segmentation model and a detector,
as a module, its ONNX export and its ``.pt2`` program, opened for what their layers compute and what they return
(checked against torch's and onnxruntime's own outputs); ``predict`` and ``eval``, which answer with classes, still
refuse them, and say where they can be seen.
"""

from __future__ import annotations

import base64
import io
import re
import sys
import warnings
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options, analyze_image, model_card
from cnnlab.explore.outputs import RETURNED
from cnnlab.explore.probe import map_rows
from cnnlab.explore.sources import open_model, open_with_images, predict_any, summarize_any
from explore_support import _png

SIDE = 16


class Segmenter(nn.Module):
    """Two scores per pixel, ``red - 0.5`` and ``0.5 - red`` (through a convolution, a ReLU and a 1 x 1 head), in a
    dict as torchvision's segmentation models return them: channel 0 wins where the pixel's red is above half."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 1, 1), nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.head.bias.copy_(torch.tensor([-0.5, 0.5]))

    def forward(self, x):
        return {"out": self.head(torch.relu(self.conv(x)))}


class Detector(nn.Module):
    """One dict per image of a box and a score per channel, as torchvision's detectors return them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return [{"boxes": f[i].amax((1, 2)).view(1, 4), "scores": f[i].mean((1, 2))} for i in range(x.shape[0])]


def segmenter():
    return Segmenter()


def detector():
    return Detector()


@pytest.fixture
def importable(monkeypatch):
    """This module importable by name, for ``module:function``."""
    monkeypatch.setitem(sys.modules, "networks_under_test", sys.modules[__name__])
    return "networks_under_test"


def _file_of(kind: str, tmp_path) -> str:
    net, x = Segmenter().eval(), torch.zeros(1, 3, SIDE, SIDE)
    if kind == "onnx":
        path = tmp_path / "seg.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"], output_names=["out"])
    else:
        path = tmp_path / "seg.pt2"
        torch.export.save(torch.export.export(net, (x,)), path)
    return str(path)


def saved_page_of(source: str, folder, tmp_path, options: Options) -> Path:
    """The explorer's saved page of the network ``source`` (opened with ``options``) on the pictures in ``folder``, as
    ``cnnlab explore SOURCE --images FOLDER --export`` writes it, for the browser tests to open."""
    from cnnlab.explore.page import export_page

    model, images = open_with_images(source, folder, options)
    page = tmp_path / "network.html"
    export_page(model, images, page)
    return page


def saved_segmentation_page(folder, tmp_path) -> Path:
    """The segmentation model's ONNX export as a saved page of the pictures in ``folder``, its two channels named by
    ``--classes`` (``red``, ``dark``): the page every engine's browser test opens
    (:func:`browser_support.segmentation_page_reads_well`)."""
    return saved_page_of(_file_of("onnx", tmp_path), folder, tmp_path, Options(classes=("red", "dark")))


def _half_red() -> torch.Tensor:
    """A picture red on its left half, black on its right."""
    image = torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)
    image[0, :, :SIDE // 2] = 255
    return image


def _figures(entry: dict) -> list:
    """The least, mean and largest value "What it returns" gives for an output."""
    return [entry["min"], entry["mean"], entry["max"]]


def _figures_of(values: torch.Tensor) -> list:
    """The same figures of the oracle's own tensor, to the page's precision."""
    return pytest.approx([float(values.min()), float(values.double().mean()), float(values.max())], abs=1e-6)


def _oracle(kind: str, source: str, x: torch.Tensor) -> torch.Tensor:
    """The segmentation scores of ``x`` from torch (the module, the program) or onnxruntime (the graph)."""
    if kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["out"], {"x": x.numpy()})[0])
    net = torch.export.load(source).module() if kind == "pt2" else Segmenter().eval()
    with torch.no_grad():
        return net(x)["out"]


@pytest.mark.parametrize("kind", ["module", "onnx", "pt2"])
def test_a_segmentation_model_opens_for_what_its_layers_compute_in_every_kind(kind, importable, tmp_path):
    """explore refused every network that is no classifier ("is not a classifier: ... a map of scores per pixel is a
    segmentation model's"): it now shows its layers, feature maps and what it returns, with no classes."""
    source = f"{importable}:segmenter" if kind == "module" else _file_of(kind, tmp_path)
    options = Options(input_size=SIDE) if kind == "module" else Options()
    model, _ = open_with_images(source, None, options)
    assert model.scoring is None and model.classes == ()
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "a segmentation model's" in said[0], model.notes

    image = _half_red()
    answer = analyze_image(model, image)
    assert answer["top"] == [] and answer["explanation"] is None
    expected = _oracle(kind, source, model.spec.to_input(image[None]))[0]
    [out] = answer["outputs"]
    assert out["name"] == ("out" if kind == "onnx" else "output['out']")
    assert out["shape"] == [2, SIDE, SIDE] and out["dtype"] == "float32"
    assert _figures(out) == _figures_of(expected)
    assert out["channels"] == 2 and out["segments"].startswith("data:image/png;base64,")
    # the stages, with their maps; the output is the head's value, whose maps are shown once, under the head (they
    # were shown again under the output's name)
    names = [r["name"] for r in answer["rows"]]
    assert out["name"] not in names and len(names) >= 2 and answer["rows"][-1]["shape"] == out["shape"], names
    assert all(r["maps"] for r in answer["rows"])

    card = model_card(model)
    assert card["classifier"] is False and card["classes"] == []
    assert card["params"] == sum(p.numel() for p in Segmenter().parameters())


def test_the_segments_picture_colours_each_pixel_by_its_largest_channel(importable):
    model, _ = open_with_images(f"{importable}:segmenter", None, Options(input_size=SIDE))
    [out] = analyze_image(model, _half_red())["outputs"]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["segments"].split(",")[1]))))
    assert picture.shape == (SIDE, SIDE, 3)
    left, right = picture[:, :SIDE // 2].reshape(-1, 3), picture[:, SIDE // 2:].reshape(-1, 3)
    # channel 0 wins on the red half, channel 1 on the black one: one colour each, and not the same
    assert (left == left[0]).all() and (right == right[0]).all()
    assert not (left[0] == right[0]).all()
    # the legend: each channel that wins a pixel, by its share of them, named by number where no names are given
    assert [(c["name"], c["share"]) for c in out["legend"]] == [("channel 0", 0.5), ("channel 1", 0.5)]


def test_a_detectors_outputs_are_one_images_named_by_where_they_sit(importable):
    model, _ = open_with_images(f"{importable}:detector", None, Options(input_size=SIDE))
    assert model.scoring is None
    assert any("these are a detector's boxes" in n for n in model.notes), model.notes
    image = _half_red()
    outputs = analyze_image(model, image)["outputs"]
    with torch.no_grad():
        [expected] = Detector().eval()(model.spec.to_input(image[None]))
    assert [(o["name"], o["shape"]) for o in outputs] == [("output[0]['boxes']", [1, 4]),
                                                          ("output[0]['scores']", [4])]
    for o, key in zip(outputs, ("boxes", "scores"), strict=True):
        values = expected[key]
        assert _figures(o) == _figures_of(values)
        assert "segments" not in o


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_predict_and_eval_refuse_a_network_and_say_where_it_can_be_seen(kind, tmp_path, capsys):
    source = _file_of(kind, tmp_path)
    picture = tmp_path / "red.png"
    picture.write_bytes(_png(_half_red().permute(1, 2, 0).numpy()))
    with pytest.raises(CnnlabError, match=r"is not a classifier: .*a segmentation model's\); cnnlab explore and "
                                          r"cnnlab summary open any network for its layers$"):
        predict_any(source, [picture])
    assert main(["predict", source, str(picture)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cnnlab explore and cnnlab summary open any network" in err
    assert main(["eval", source, "--dataset", f"folder:{tmp_path}"]) == 2
    assert "is not a classifier" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["module", "onnx", "pt2"])
def test_classes_name_the_channels_of_a_segmentation_models_scores(kind, importable, tmp_path):
    """--classes was refused for any network that is no classifier; a segmentation model's channels are its classes,
    named in the legend of the picture of its largest channel per pixel, each with its share of the pixels."""
    source = f"{importable}:segmenter" if kind == "module" else _file_of(kind, tmp_path)
    model, _ = open_with_images(source, None, Options(classes=("red", "dark"), input_size=SIDE if kind == "module"
                                                      else None))
    assert model.scoring is None and model.classes == ("red", "dark")
    image = _half_red()
    image[0, :4, :] = 255  # the top 4 rows red all across: 4 x 8 more red pixels than dark ones
    [out] = analyze_image(model, image)["outputs"]
    red = (SIDE * SIDE // 2 + 4 * SIDE // 2) / (SIDE * SIDE)
    assert [(c["name"], c["channel"]) for c in out["legend"]] == [("red", 0), ("dark", 1)]
    assert [c["share"] for c in out["legend"]] == pytest.approx([red, 1 - red])
    assert out["legend"][0]["colour"] != out["legend"][1]["colour"]


@pytest.mark.parametrize("kind, returns", [
    ("onnx", "its output 'out' has shape 1 x 2 x 16 x 16"),
    ("pt2", r"for 1 image it returns a dict of 'out' \(1 x 2 x 16 x 16\)"),
    ("module", r"for 2 images it returns a dict of 'out' \(2 x 2 x 16 x 16\)")], ids=["onnx", "pt2", "module"])
def test_multi_label_for_a_network_is_refused_in_one_clean_line(kind, returns, importable, tmp_path, capsys):
    """The refusal said "expected" twice (the class scores expected of a classifier, then no --multi-label) and
    named the model by its full path, where the refusal of --classes beside it names it as the page does."""
    source = f"{importable}:segmenter" if kind == "module" else _file_of(kind, tmp_path)
    name = Path(source).name if kind != "module" else source
    message = (rf"--multi-label reads a classifier's outputs, but {re.escape(name)} is not a classifier: {returns} "
               r"\(a map of scores per pixel is a segmentation model's\); expected no --multi-label for it")
    with pytest.raises(CnnlabError, match=f"^{message}$"):
        open_with_images(source, None, Options(multi_label=True, input_size=SIDE if kind == "module" else None))
    args = ["--input-size", str(SIDE)] if kind == "module" else []
    images = tmp_path / "images"
    images.mkdir()
    (images / "red.png").write_bytes(_png(_half_red().permute(1, 2, 0).numpy()))
    assert main(["explore", source, "--multi-label", "--images", str(images), "--export", str(tmp_path / "p.html"),
                 *args]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert re.fullmatch(f"cnnlab explore: error: {message}", line) and line.count("expected") == 1


def test_classes_for_a_network_without_such_a_map_are_refused_in_one_line(tmp_path):
    source = _file_of("onnx", tmp_path)
    with pytest.raises(CnnlabError, match=r"^--classes gives 3 names, but seg.onnx is not a classifier, and none of "
                                          r"its outputs is a map of 3 channels of scores per pixel, nor of a class per "
                                          r"pixel or per thing found, for them to name \(its outputs: out 2 x 16 x "
                                          r"16\); expected as many names as a map's channels, or no --classes$"):
        open_with_images(source, None, Options(classes=("a", "b", "c")))


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_summary_of_a_network_that_is_no_classifier(kind, tmp_path, capsys):
    source = _file_of(kind, tmp_path)
    text = summarize_any(source)
    header, *_, total = text.splitlines()
    assert ", not a classifier, fed float32 N x C x H x W, 3 channels at 16 x 16" in header
    assert total.startswith(f"total: {sum(p.numel() for p in Segmenter().parameters())} parameters in ")
    assert main(["summary", source]) == 0
    assert capsys.readouterr().out.strip() == text


def test_explore_saves_the_page_of_a_network_from_the_command_line(tmp_path, capsys):
    source = _file_of("onnx", tmp_path)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "red.png").write_bytes(_png(_half_red().permute(1, 2, 0).numpy()))
    page = tmp_path / "page.html"
    assert main(["explore", source, "--images", str(pictures), "--export", str(page)]) == 0
    # one picture: "1 input" (it said "1 inputs")
    assert re.fullmatch(rf"{re.escape(str(page))}: \d+\.\d MiB, 1 input, 8 channels per stage",
                        capsys.readouterr().out.strip())
    assert "What it returns" in page.read_text()


class Detr(nn.Module):
    """A DETR-like detector: a dict of ``logits`` (a score per query and class, N x 5 x 3) and ``pred_boxes``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.conv(x)).flatten(2)  # N x 5 queries x pixels
        return {"logits": f[..., :3], "pred_boxes": f[..., :4].sigmoid()}


def detr():
    return Detr()


@pytest.mark.parametrize("kind", ["module", "pt2"])
def test_a_detector_returning_logits_beside_its_boxes_shows_both(kind, importable, tmp_path):
    """The class scores of a dict or output object are its "logits": a detector's (per query, N x queries x classes)
    are no classifier's, and its page showed them alone, its boxes left out."""
    if kind == "module":
        source, options = f"{importable}:detr", Options(input_size=SIDE)
    else:
        source, options = str(tmp_path / "detr.pt2"), Options()
        torch.export.save(torch.export.export(Detr().eval(), (torch.zeros(1, 3, SIDE, SIDE),)), source)
    model, _ = open_with_images(source, None, options)
    assert model.scoring is None
    outputs = analyze_image(model, _half_red())["outputs"]
    assert [(o["name"], o["shape"]) for o in outputs] == [("output['logits']", [5, 3]),
                                                          ("output['pred_boxes']", [5, 4])]


class KeypointDetector(nn.Module):
    """One dict per image of 3 boxes and their 17 keypoints (x, y, visibility), as torchvision's Keypoint R-CNN
    returns them: ``keypoints`` is 3 x 17 x 3, a list of what was found, not a map of 3 channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 51, 3, padding=1)

    def forward(self, x):
        f = self.conv(x).amax((2, 3))  # N x 51
        return [{"boxes": f[i, :12].view(3, 4), "keypoints": f[i].repeat(3).view(3, 17, 3)}
                for i in range(x.shape[0])]


def keypoint_detector():
    return KeypointDetector()


def _keypoint_graph(path) -> str:
    """An ONNX graph returning 4 boxes' 17 keypoints, 4 x 17 x 3 with no batch axis (as a detector's export does)."""
    from onnx import TensorProto, helper, numpy_helper, save

    weight = numpy_helper.from_array(np.full((51, 3, 8, 8), 0.01, np.float32), "w")
    shape = numpy_helper.from_array(np.array([4, 17, 3], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[8, 8]),  # 1 x 51 x 2 x 2
             helper.make_node("Reshape", ["c", "shape"], ["keypoints"])]
    graph = helper.make_graph(nodes, "keypoints", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 [1, 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, [4, 17, 3])],
                              [weight, shape])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


@pytest.mark.parametrize("kind", ["module", "onnx"])
def test_a_detectors_keypoints_are_a_list_not_a_map(kind, importable, tmp_path):
    """A detector's keypoints of one image (boxes x 17 x 3) were read as a map of as many channels as boxes: rows of
    17 x 3 pictures among the feature maps, and a segments picture of "which of its 3 channels is largest"."""
    source = f"{importable}:keypoint_detector" if kind == "module" else _keypoint_graph(tmp_path / "keypoints.onnx")
    model, _ = open_with_images(source, None, Options(input_size=SIDE) if kind == "module" else Options())
    image = _half_red()
    answer = analyze_image(model, image)
    name = "output[0]['keypoints']" if kind == "module" else "keypoints"
    [entry] = [o for o in answer["outputs"] if o["name"] == name]
    assert entry["shape"] == ([3, 17, 3] if kind == "module" else [4, 17, 3])
    assert "segments" not in entry
    [row] = [r for r in answer["rows"] if r["name"] == name]
    assert row["maps"] == []
    if kind == "module":  # its figures are still the module's own
        with torch.no_grad():
            [expected] = KeypointDetector().eval()(model.spec.to_input(image[None]))
        values = expected["keypoints"]
        assert _figures(entry) == _figures_of(values)


class Backbone(nn.Module):
    """Feature maps at two scales, as ``create_feature_extractor`` or timm's ``features_only=True`` return them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.down = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        c1 = torch.relu(self.stem(x))
        return {"c1": c1, "c2": torch.relu(self.down(c1))}


def backbone():
    return Backbone()


def test_a_backbones_maps_at_several_scales_get_no_segments_picture(importable):
    """Maps at several scales are a backbone's features, no scores per pixel: each had a picture of its "largest
    channel at each pixel (a segmentation model's class per pixel)" in 20 colours repeating, meaning nothing."""
    model, _ = open_with_images(f"{importable}:backbone", None, Options(input_size=SIDE))
    assert any("a backbone's features" in n for n in model.notes), model.notes
    outputs = analyze_image(model, _half_red())["outputs"]
    assert [(o["name"], o["shape"]) for o in outputs] == [("output['c1']", [4, SIDE, SIDE]),
                                                          ("output['c2']", [8, SIDE // 2, SIDE // 2])]
    assert not any("segments" in o for o in outputs)



def test_classes_are_refused_for_a_backbones_maps_at_several_scales(importable):
    """--classes of as many names as one of a backbone's maps has channels was taken, and named nothing: its maps at
    several scales get no picture with a legend. It is refused in one line, as for any network with no such map."""
    with pytest.raises(CnnlabError, match=r"^--classes gives 4 names, but \S+:backbone is not a classifier, and "
                                          r"none of its outputs is a map of 4 channels of scores per pixel, nor of "
                                          r"a class per pixel or per thing found, for them to name \(its outputs: "
                                          r"output\['c1'\] 4 x 16 x 16, output\['c2'\] 8 x 8 x 8\); expected as many "
                                          r"names as a map's channels, or no --classes$"):
        open_with_images(f"{importable}:backbone", None, Options(input_size=SIDE, classes=("a", "b", "c", "d")))


class Mean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x).mean()


def mean():
    return Mean()


def test_a_network_that_returns_a_single_number_says_so(importable):
    """A 0-d output was said as no text at all: "for 2 images it returns , expected 2 x classes"."""
    model, _ = open_with_images(f"{importable}:mean", None, Options(input_size=SIDE))
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "it returns a single number, expected" in said[0], model.notes
    [out] = analyze_image(model, _half_red())["outputs"]
    assert out["shape"] == [] and out["min"] == out["mean"] == out["max"]


def test_a_program_of_one_image_says_what_it_returned_for_the_image_it_ran(tmp_path):
    """A ``.pt2`` fixed to a batch of 1 runs 2 images one at a time; its note said "for 2 images it returns a dict of
    'out' (1 x 2 x 16 x 16)", which reads as the batch axis lost."""
    model, _ = open_with_images(_file_of("pt2", tmp_path), None, Options())
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "for 1 image it returns a dict of 'out' (1 x 2 x 16 x 16), expected 1 x classes" \
        in said[0], model.notes


def test_a_graphs_list_of_one_detection_keeps_its_axis(tmp_path):
    """An ONNX graph fed one image whose output is declared K x 6 (detections after NMS) and finds exactly one: its
    first axis was read as the batch's and cut, the table saying "6" for the 1 x 6 it returned."""
    from onnx import TensorProto, helper, numpy_helper, save

    constants = {"w": np.full((6, 3, SIDE, SIDE), 0.01, np.float32), "rows": np.array([-1, 6], np.int64),
                 "one": np.array([1], np.int64), "axis0": np.array([0], np.int64), "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),  # 1 x 6 x 1 x 1: the one box there is
             helper.make_node("Reshape", ["c", "rows"], ["boxes"]),  # 1 x 6
             helper.make_node("ReduceMax", ["x"], ["brightest"], keepdims=0),
             helper.make_node("Greater", ["brightest", "half"], ["found"]),  # a blank image finds none
             helper.make_node("Reshape", ["found", "one"], ["found1"]),
             helper.make_node("NonZero", ["found1"], ["where"]),  # 1 x K
             helper.make_node("Squeeze", ["where", "axis0"], ["kept"]),
             helper.make_node("Gather", ["boxes", "kept"], ["detections"], axis=0)]  # K x 6
    graph = helper.make_graph(nodes, "nms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["K", 6])],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    path = tmp_path / "one-box.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model, _ = open_with_images(path, None, Options())
    assert model.scoring is None  # for a blank image it returns 0 x 6
    [out] = analyze_image(model, _half_red())["outputs"]
    assert out["name"] == "detections" and out["shape"] == [1, 6]


class ModelOutput(dict):
    """An output object as Hugging Face's are (``transformers.utils.ModelOutput`` is an ordered dict)."""


class DetrOutput(Detr):
    """DETR's output as Hugging Face's object returns it, not a dict."""

    def forward(self, x):
        return ModelOutput(super().forward(x))


class SegFormerLike(nn.Module):
    """SegFormer's output: logits per pixel at a quarter of the input's side, and the hidden states."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Conv2d(3, 4, 4, stride=4), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        hidden = self.embed(x)
        return ModelOutput(logits=self.head(hidden), hidden_states=(hidden,))


def detr_output():
    return DetrOutput()


def segformer_like():
    return SegFormerLike()


@pytest.mark.parametrize("function, returned", [
    ("detr_output", [("output['logits']", [5, 3]), ("output['pred_boxes']", [5, 4])]),
    ("segformer_like", [("output['logits']", [3, SIDE // 4, SIDE // 4]),
                        ("output['hidden_states'][0]", [4, SIDE // 4, SIDE // 4])])])
def test_an_output_object_whose_logits_are_no_class_rows_is_shown_whole(function, returned, importable):
    """Of an output object whose ``logits`` are no rows of class scores (DETR's per query, SegFormer's per pixel)
    only the logits were shown, named ``output``: DETR's boxes and SegFormer's hidden states were missing."""
    model, _ = open_with_images(f"{importable}:{function}", None, Options(input_size=SIDE))
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "it returns a ModelOutput of 'logits' (2 x " in said[0], model.notes
    image = _half_red()
    outputs = analyze_image(model, image)["outputs"]
    assert [(o["name"], o["shape"]) for o in outputs] == returned
    with torch.no_grad():
        expected = globals()[function]().eval()(model.spec.to_input(image[None]))
    values = expected[returned[1][0].split("'")[1]]
    values = (values[0] if isinstance(values, tuple) else values)[0]
    o = outputs[1]
    assert _figures(o) == _figures_of(values)


class Autoencoder(nn.Module):
    """An image in, an image out: down by a strided convolution, up by a transposed one, through a sigmoid."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down, self.up = nn.Conv2d(3, 4, 2, stride=2), nn.ConvTranspose2d(4, 3, 2, stride=2)

    def forward(self, x):
        return torch.sigmoid(self.up(torch.relu(self.down(x))))


def autoencoder():
    return Autoencoder()


def test_an_autoencoders_image_is_not_said_to_be_scores_per_pixel(importable):
    """An autoencoder's output (an image of the input's 3 channels) was said to be "a map of scores per pixel ... a
    segmentation model's", which it is not."""
    model, _ = open_with_images(f"{importable}:autoencoder", None, Options(input_size=SIDE))
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "(a map of 3 channels is an image, as an autoencoder returns, or a segmentation " \
        "model's scores per pixel)" in said[0], model.notes
    [out] = analyze_image(model, _half_red())["outputs"]
    assert out["shape"] == [3, SIDE, SIDE] and 0 < out["min"] <= out["max"] < 1


class Thresholded(Segmenter):
    """The segmenter's pixels as the network answers them: a mask of where channel 0 wins (booleans), or the
    number of the channel that wins (``argmax``: int64), in one channel."""

    def __init__(self, labels: bool):
        super().__init__()
        self.labels = labels

    def forward(self, x):
        scores = super().forward(x)["out"]
        return scores.argmax(1, keepdim=True) if self.labels else scores[:, :1] > scores[:, 1:]


def mask():
    return Thresholded(labels=False)


def labels():
    return Thresholded(labels=True)


@pytest.mark.parametrize("kind", ["module", "onnx"])
@pytest.mark.parametrize("function, dtype, hint", [
    ("mask", "bool", "(a map of booleans is a mask, as a segmentation model that thresholds its scores returns)"),
    ("labels", "int64", "(a map of integers of 1 channel is a class per pixel, as a segmentation model that ends in "
                        "its own ArgMax returns)")])
def test_a_mask_or_a_class_per_pixel_is_not_said_to_be_an_image(kind, function, dtype, hint, importable, tmp_path):
    """A map of 1 channel of booleans (a thresholded mask) or of class numbers (a segmentation model's own ArgMax)
    was said to be "an image, as an autoencoder returns, or a segmentation model's scores per pixel": it is a mask, a
    class per pixel, in the refusal of predict and on the page (an ONNX graph's refusal now names the type too)."""
    source = f"{importable}:{function}"
    if kind == "onnx":
        source = str(tmp_path / f"{function}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(globals()[function]().eval(), (torch.zeros(2, 3, SIDE, SIDE),), source, dynamo=False,
                              input_names=["x"], output_names=["out"], dynamic_axes={"x": {0: "N"}, "out": {0: "N"}})
    size = SIDE if kind == "module" else None
    with pytest.raises(CnnlabError) as refused:
        open_model(source, Options(input_size=size))
    message = str(refused.value)
    assert f"x 1 x {SIDE} x {SIDE} of {dtype}, expected " in message and f" {hint}; cnnlab explore" in message
    assert "an image" not in message and "scores per pixel" not in message
    model, _ = open_with_images(source, None, Options(input_size=size))
    [said] = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert f" {hint}. Shown is what each layer computes" in said


@dataclass
class Found:
    """A model's own output type: a dataclass of its boxes and their scores."""

    boxes: torch.Tensor
    scores: torch.Tensor


class DataclassDetector(Detector):
    def forward(self, x):
        f = torch.relu(self.conv(x))
        return Found(boxes=f.amax((2, 3)).view(-1, 1, 4), scores=f.mean((2, 3)))


def dataclass_detector():
    return DataclassDetector()


def test_a_dataclass_a_network_returns_is_shown_field_by_field(importable):
    """A network returning its own dataclass (not a dict, not a tuple) had an empty "What it returns", and its note
    said only the type's name."""
    model, _ = open_with_images(f"{importable}:dataclass_detector", None, Options(input_size=SIDE))
    said = [n for n in model.notes if n.startswith("Not a classifier: ")]
    assert len(said) == 1 and "it returns a Found of 'boxes' (2 x 1 x 4), 'scores' (2 x 4), expected" in said[0]
    image = _half_red()
    outputs = analyze_image(model, image)["outputs"]
    assert [(o["name"], o["shape"]) for o in outputs] == [("output.boxes", [1, 4]), ("output.scores", [4])]
    with torch.no_grad():
        expected = DataclassDetector().eval()(model.spec.to_input(image[None]))
    for o, values in zip(outputs, (expected.boxes[0], expected.scores[0]), strict=True):
        assert _figures(o) == _figures_of(values)


class PanopticLike(nn.Module):
    """Scores per pixel for the whole batch, and each image's keypoints (a list, 4 x 17 x 3): one map, one list."""

    def __init__(self):
        super().__init__()
        self.segmenter, self.detector = Segmenter(), KeypointDetector()

    def forward(self, x):
        return self.segmenter(x)["out"], self.detector(x)


def panoptic_like():
    return PanopticLike()


def test_a_map_beside_a_detectors_list_keeps_its_segments_picture(importable):
    """Maps at several scales get no picture of a class per pixel; a detector's list (17 x 3 keypoints) is no map,
    and does not make a segmentation map beside it one of several scales."""
    model, _ = open_with_images(f"{importable}:panoptic_like", None, Options(input_size=SIDE))
    outputs = analyze_image(model, _half_red())["outputs"]
    assert [(o["name"], "segments" in o) for o in outputs] == [
        ("output[0]", True), ("output[1][0]['boxes']", False), ("output[1][0]['keypoints']", False)]


class OneAtATime(nn.Module):
    """A segmentation model written for one image (``view(1, ...)``): it fails on the 2 images it is first fed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return {"out": self.conv(x.view(1, 3, SIDE, SIDE))}


def one_at_a_time():
    return OneAtATime()


def test_a_network_that_fails_on_its_input_is_not_said_to_be_a_classifier(importable):
    """explore and summary open any network, yet a network failing on its input was told "expected a classifier of
    one image batch"; predict, which answers with classes, still says so."""
    source = f"{importable}:one_at_a_time"
    with pytest.raises(CnnlabError, match=r"one_at_a_time failed on a 2 x 3 x 16 x 16 NCHW input \(RuntimeError: "
                                          r".*\); if it takes another size, pass that --input-size; expected a network "
                                          r"that takes a batch of images$"):
        open_with_images(source, None, Options(input_size=SIDE))
    with pytest.raises(CnnlabError, match=r"; expected a classifier of one image batch$"):
        open_model(source, Options(input_size=SIDE))  # as predict opens it



class SqueezedClassifier(nn.Module):
    """A classifier whose forward ends in squeeze(), as many do: 2 x 5 scores for 2 images, 5 (no batch axis) for 1;
    ``fed`` records the channels of the inputs it is given (its second convolution takes 8)."""

    fed: set[int] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x):
        SqueezedClassifier.fed.add(x.shape[1])
        return self.head(torch.relu(self.stem(x))).mean((2, 3)).squeeze()


def squeezed_classifier():
    return SqueezedClassifier()


def test_a_classifier_that_drops_the_batch_axis_of_one_image_is_refused_not_opened_as_a_network(importable, capsys):
    """A classifier ending in squeeze() answers 2 images with class scores and 1 image with no batch axis. Refused
    when opened before explore opened networks, it was then opened as "Not a classifier", its classes lost, and
    predict's refusal said explore opens it: explore and summary refuse it too, saying what drops the axis."""
    source = f"{importable}:squeezed_classifier"
    said = (r"squeezed_classifier answers 2 images with 2 x 5 class scores, but for 1 image it returns 5, expected 1 x "
            r"classes of float logits: its forward drops the batch axis of one image, which every analysis runs \(a "
            r"final squeeze\(\); flatten\(1\) keeps the axis\)$")
    SqueezedClassifier.fed.clear()
    with pytest.raises(CnnlabError, match=r"^\S+:" + said):
        open_with_images(source, None, Options(input_size=SIDE))
    assert SqueezedClassifier.fed == {3}  # not fed blank inputs of its other convolutions' channels
    assert main(["summary", source, "--input-size", str(SIDE)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(said, err), err


class LabelsPerPixel(nn.Module):
    """A segmentation model that ends in its own ArgMax, as some ONNX exports do: the class of each pixel, 1 (red above
    half) or 0, as an N x H x W map of integers; and one NaN beside its scores, as a diverged network gives."""

    def __init__(self):
        super().__init__()
        self.scores = Segmenter()

    def forward(self, x):
        scores = self.scores(x)["out"]
        broken = scores.clone()
        broken[:, 0, 0, 0] = float("nan")
        return {"labels": 1 - scores.argmax(1), "broken": broken}


def labels_per_pixel():
    return LabelsPerPixel()


def test_a_class_per_pixel_is_coloured_and_named_and_a_nan_is_counted(importable):
    """A map of class numbers (a segmentation model ending in ArgMax) got no picture and --classes was refused for it;
    an output holding one NaN showed dashes for its least, mean and largest value, without saying why."""
    model, _ = open_with_images(f"{importable}:labels_per_pixel", None,
                                Options(input_size=SIDE, classes=("dark", "red")))
    answer = analyze_image(model, _half_red())
    labels, broken = answer["outputs"]
    # an output that is no stage's value again keeps its row of maps
    assert [r["name"] for r in answer["rows"]][-1] == "output['broken']"
    assert labels["name"] == "output['labels']" and labels["dtype"] == "int64" and labels.get("labels") is True
    assert [(c["name"], c["share"]) for c in labels["legend"]] == [("dark", 0.5), ("red", 0.5)]
    assert labels["segments"].startswith("data:image/png;base64,") and labels["nonfinite"] == 0
    # the NaN is counted, and the figures are those of the finite values
    with torch.no_grad():
        expected = Segmenter()(model.spec.to_input(_half_red()[None]))["out"][0].double().flatten()[1:]
    assert broken["nonfinite"] == 1
    assert [broken["min"], broken["max"]] == pytest.approx([float(expected.min()), float(expected.max())])


class BoxDetector(nn.Module):
    """A detector of two fixed boxes per image, as torchvision's detectors return them (a dict per image of x1, y1, x2,
    y2 boxes, labels and scores): the top-left quarter, labelled 2 and scored by its red, and the bottom-right quarter,
    labelled 0 and scored by its darkness."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        red = self.conv(x)[:, 0]
        half = SIDE // 2
        boxes = torch.tensor([[0.0, 0, half - 1, half - 1], [half, half, SIDE - 1, SIDE - 1]])
        return [{"boxes": boxes, "labels": torch.tensor([2, 0]),
                 "scores": torch.stack([r[:half, :half].mean(), 1 - r[half:, half:].mean()])} for r in red]


def box_detector():
    return BoxDetector()


def test_a_detectors_highest_scoring_boxes_are_drawn_and_named(importable):
    """A detector's boxes were a row of figures (their least, mean and largest coordinate): its highest-scoring boxes
    are drawn over the input, coloured by label and named by --classes (or torchvision's categories), with scores."""
    model, _ = open_with_images(f"{importable}:box_detector", None,
                                Options(input_size=SIDE, classes=("background", "cat", "dog")))
    image = _half_red()
    image[0, SIDE // 2:, SIDE // 2:] = 64  # the bottom-right quarter dim: its box scores 1 - 64/255
    boxes = next(o for o in analyze_image(model, image)["outputs"] if o["name"] == "output[0]['boxes']")
    assert (boxes["drawn"], boxes["found"]) == (2, 2)
    assert [b["name"] for b in boxes["detected"]] == ["dog", "background"]
    assert [b["score"] for b in boxes["detected"]] == pytest.approx([1.0, 1 - 64 / 255])
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(boxes["boxes"].split(",")[1]))))
    # each box's outline in its label's colour, where the input is drawn inside
    dog, background = (tuple(bytes.fromhex(b["colour"][1:])) for b in boxes["detected"])
    assert tuple(picture[0, 3]) == dog and tuple(picture[3, 0]) == dog
    assert tuple(picture[SIDE - 1, SIDE - 3]) == background and tuple(picture[3, 3]) == (255, 0, 0)
    with pytest.raises(CnnlabError, match=r"none of its outputs is a map of 4 channels of scores per pixel, nor of a "
                                          r"class per pixel or per thing found"):
        open_with_images(f"{importable}:detector", None, Options(input_size=SIDE, classes=("a", "b", "c", "d")))


@pytest.mark.parametrize("kind", ["module", "onnx", "pt2"])
def test_no_classes_reads_any_model_as_a_network(kind, importable, tmp_path, capsys):
    """An embedding (N x 512) or a detector's N x 4 boxes have the shape of class scores and were read as a classifier
    of 512 or 4 classes, with no way to say otherwise: --no-classes shows what any model returns as it is."""
    net, source = Detector().eval(), str(tmp_path / f"scores.{kind}")
    embed = nn.Sequential(net.conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # N x 4: class scores by their shape
    if kind == "module":
        source = f"{importable}:embedding"
    elif kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(embed, (torch.zeros(1, 3, SIDE, SIDE),), source, dynamo=False, input_names=["x"],
                              output_names=["features"])
    else:
        torch.export.save(torch.export.export(embed, (torch.zeros(1, 3, SIDE, SIDE),)), source)
    options = Options(input_size=SIDE if kind == "module" else None)
    assert open_with_images(source, None, options)[0].scoring is not None  # without the flag: 4 classes
    model, _ = open_with_images(source, None, replace(options, no_classes=True))
    assert model.scoring is None and model.classes == ()
    assert any(n.startswith("Read as a network, not a classifier (--no-classes)") for n in model.notes), model.notes
    [out] = analyze_image(model, _half_red())["outputs"]
    assert out["shape"] == [4] and out["name"] == ("features" if kind == "onnx" else "output")
    flags = ["--input-size", str(SIDE)] if kind == "module" else []
    assert main(["summary", source, "--no-classes", *flags]) == 0
    assert ", not a classifier, fed " in capsys.readouterr().out.splitlines()[0]
    with pytest.raises(CnnlabError, match=r"^--no-classes reads a model's outputs as they are, with no classes"):
        open_model(source, replace(options, no_classes=True))  # as predict and eval open it


def embedding():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class UnscoredBoxes(nn.Module):
    """Boxes and labels with no scores beside them: nothing the page draws, so no labels it names."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        f = self.conv(x)
        return [{"boxes": f[i, 0, :2, :4], "labels": torch.tensor([1, 0])} for i in range(x.shape[0])]


def unscored_boxes():
    return UnscoredBoxes()


def test_classes_name_only_the_labels_of_boxes_the_page_draws(importable):
    """--classes was taken for a detector's labels that have no scores beside them, whose boxes the page does not
    draw: names accepted and shown nowhere."""
    with pytest.raises(CnnlabError, match=r"none of its outputs is a map of 2 channels of scores per pixel, nor of a "
                                          r"class per pixel or per thing found"):
        open_with_images(f"{importable}:unscored_boxes", None, Options(input_size=SIDE, classes=("a", "b")))
    model, _ = open_with_images(f"{importable}:box_detector", None, Options(input_size=SIDE, classes=("a", "b", "c")))
    assert model.classes == ("a", "b", "c")


class Chain(nn.Module):
    """Six convolutions, each with a ReLU, then 8 scores per pixel, or with ``classes`` a classifier's scores. Each
    forward pass notes, as its convolutions end, how many of their outputs (those before the last two, which the
    network itself still reads) anyone still holds, through weak references taken as each was made."""

    def __init__(self, classes: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(*(m for k in range(6) for m in (nn.Conv2d(3 if k == 0 else 8, 8, 3, padding=1),
                                                                    nn.ReLU())))
        self.head = nn.Linear(8, classes) if classes else None
        self.made: list[weakref.ref] = []
        self.held: list[int] = []
        for m in self.layers:  # before the explorer's own hooks: each module's output as the module made it
            m.register_forward_hook(lambda mod, args, out: self.made.append(weakref.ref(out)))

    def forward(self, x):
        self.made = []
        y = self.layers(x)
        self.held.append(sum(made() is not None for made in self.made[:-2]))
        return y if self.head is None else self.head(y.mean((2, 3)))


def chain():
    return Chain().eval()


def chain_classifier():
    return Chain(classes=3).eval()


@pytest.mark.parametrize("builder", ["chain", "chain_classifier"])
def test_stage_outputs_are_let_go_once_their_pictures_are_taken(importable, builder):
    """The explorer held every stage's whole output (and the copy each passed on) until the pass ended, and made the
    page's pictures of a few channels only then: a detector at 800 px (torchvision's Mask R-CNN) held gigabytes.
    Each output is now let go once what the page shows of it is taken, in the page's pass and in every pass that
    opens the model (the blank one, the layer table's, the search for a final softmax); the page shows the same rows
    as pictures of the whole outputs would."""
    model, _ = open_with_images(f"{importable}:{builder}", None, Options(input_size=SIDE))
    net = model.model
    assert len(net.held) >= 4 and not any(net.held), net.held  # every pass that opened it
    image = _half_red()
    whole = model.stages(image)  # the outputs themselves, asked for: held until the pass ends (the check sees them)
    assert net.held[-1] == 10
    opened = len(net.held)
    answer = analyze_image(model, image)
    assert net.held[opened] == 0  # the page's pass (a classifier's Grad-CAM pass follows: its backward reads them)
    shown = whole if model.scoring is not None else [row for row in whole if row.kind not in RETURNED]
    assert answer["rows"] == map_rows(shown)
    assert [r["name"] for r in answer["rows"]][:12] == [f"layers.{k}" for k in range(12)]
    model.kernels()  # the layer table's pass, again
    assert net.held[-1] == 0
