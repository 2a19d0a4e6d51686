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

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options, analyze_image, model_card
from cnnlab.explore.sources import open_with_images, predict_any, summarize_any
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


def _half_red() -> torch.Tensor:
    """A picture red on its left half, black on its right."""
    image = torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)
    image[0, :, :SIDE // 2] = 255
    return image


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
    assert [out["min"], out["mean"], out["max"]] == pytest.approx(
        [float(expected.min()), float(expected.double().mean()), float(expected.max())], abs=1e-6)
    assert out["channels"] == 2 and out["segments"].startswith("data:image/png;base64,")
    # the stages before it, with their maps, and the output's own maps
    names = [r["name"] for r in answer["rows"]]
    assert names[-1] == out["name"] and len(names) >= 3, names
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
        assert [o["min"], o["mean"], o["max"]] == pytest.approx(
            [float(values.min()), float(values.double().mean()), float(values.max())], abs=1e-6)
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


def test_flags_that_read_a_classifiers_outputs_are_refused_for_a_network_in_one_line(tmp_path):
    source = _file_of("onnx", tmp_path)
    with pytest.raises(CnnlabError, match=r"^--multi-label reads a classifier's outputs, but \S*seg.onnx is not a "
                                          r"classifier: its output 'out' has shape 1 x 2 x 16 x 16, expected N x "
                                          r"classes \(a map of scores per pixel is a segmentation model's\); "
                                          r"expected no --multi-label for it$"):
        open_with_images(source, None, Options(multi_label=True))
    with pytest.raises(CnnlabError, match=r"^--classes gives 3 names, but seg.onnx is not a classifier, and none of "
                                          r"its outputs is a map of 3 channels of scores per pixel for them to name "
                                          r"\(its outputs: out 2 x 16 x 16\); expected as many names as a map's "
                                          r"channels, or no --classes$"):
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
