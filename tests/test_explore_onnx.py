"""cnnlab explore of ONNX graphs (explore/onnx_model.py).

Graphs exported by torch's two exporters, graphs built with onnx.helper as other tools write them (NHWC, float16,
uint8 input, quantized, optimized by onnxruntime, of dynamic or -1 sides) and bad files of every kind. onnxruntime
running the file as it is, and torch, are the oracles.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import explore_support
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.images import decode_upload
from cnnlab.explore.model import Options, analyze_image, model_card
from cnnlab.explore.sources import open_model, open_with_images, predict_any
from explore_support import _graph_of_others, _nhwc_graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# shared fixtures
one_thread, rgb_folder = explore_support.one_thread, explore_support.rgb_folder


class GreyToRgb(nn.Module):
    """A grey-picture model on an RGB backbone: the picture repeated to three channels before the first conv."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x.repeat(1, 3, 1, 1))).mean((2, 3)))


@pytest.mark.parametrize("layout", [None, "NCHW"])
def test_an_onnx_graph_whose_first_convolution_reads_the_image_repeated_takes_the_inputs_channels(layout, tmp_path):
    # The layout was told by the axis holding the first convolution's 3 input channels; a 1 x 1 x 16 x 16 input
    # repeated to 3 has none, so the graph was refused ("cannot tell the layout"), and with --layout NCHW refused
    # again with a hint of --layout NHWC. The .pt2 and module kinds opened it.
    net = GreyToRgb().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 16, 16),), str(tmp_path / "grey.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    model = open_model(tmp_path / "grey.onnx", Options(layout=layout))
    assert (model.spec.layout, model.spec.channels, model.spec.hw) == ("NCHW", 1, (16, 16))
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(images.float() / 255)
    assert torch.allclose(model.logits(images), expected, atol=1e-5)
    assert tuple(model.kernels().shape) == (4, 3, 3, 3)


def test_an_onnx_graph_of_several_outputs_says_which_it_reads(tmp_path):
    class Two(nn.Module):  # logits and the features before them, as some exports give both
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

        def forward(self, x):
            features = self.conv(x).mean((2, 3))
            return self.fc(features), features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Two().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "two.onnx"), dynamo=False,
                          input_names=["images"], output_names=["logits", "features"])
    model = open_model(tmp_path / "two.onnx")
    assert len(model.classes) == 3  # silently the first output before, now with a line on the page
    assert "The graph has 2 outputs: its first, 'logits', is read as the class scores (not 'features')." in \
        model.notes


def _scikit_learn_graph(path, zipmap: bool, classes: int = 3, labels: list | None = None) -> None:
    """A linear classifier on 1 x 28 x 28 images laid out as skl2onnx converts scikit-learn's: each image's class
    first (``label``, N int64), then its probabilities: an N x classes tensor (``zipmap=False``), or a ZipMap's
    sequence of maps from class to probability (skl2onnx's default), keyed by ``labels`` (the classifier's
    ``classes_``: integers, 0 to classes - 1 by default, or strings)."""
    labels = list(range(classes)) if labels is None else labels
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.05, (28 * 28, classes)).astype(np.float32), "coef"),
               numpy_helper.from_array(rng.normal(0, 1, classes).astype(np.float32), "intercept"),
               numpy_helper.from_array(np.array([-1, 28 * 28], np.int64), "flat_shape")]
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "coef"], ["scores"]),
             helper.make_node("Add", ["scores", "intercept"], ["decision"]),
             helper.make_node("Softmax", ["decision"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])]
    if zipmap:
        strings = isinstance(labels[0], str)
        keyed = {"classlabels_strings": labels} if strings else {"classlabels_int64s": labels}
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                                      **keyed))
        maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.STRING if strings else TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        outputs.append(helper.make_value_info("output_probability", maps))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]))
    graph = helper.make_graph(nodes, "scikit-learn", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                    ["N", 1, 28, 28])],
                              outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


@pytest.mark.parametrize(("labels", "named"), [(["cat", "dog", "fox"], ("cat", "dog", "fox")),
                                               ([3, 5, 7], ("3", "5", "7"))])
def test_a_scikit_learn_classifiers_zipmap_names_its_classes(labels, named, tmp_path):
    """skl2onnx's ZipMap keys each probability by the classifier's ``classes_`` (strings or integers): they name the
    classes, where they were numbered; --classes still comes first."""
    _scikit_learn_graph(tmp_path / "model.onnx", zipmap=True, labels=labels)
    model = open_model(tmp_path / "model.onnx")
    assert model.classes == named and "Class names: the graph's ZipMap (its class labels)" in " ".join(model.notes)
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    assert open_model(tmp_path / "model.onnx", Options.from_flags(classes=tmp_path / "names.txt")).classes == \
        ("a", "b", "c")


@pytest.mark.parametrize("zipmap", [False, True])
def test_a_scikit_learn_classifiers_graph_is_read_by_its_probabilities(zipmap, tmp_path):
    """A classifier converted from scikit-learn by skl2onnx returns each image's class first (N int64) and its
    probabilities second: refused as no classifier ("its output 'label' has shape 1 of int64"), where its
    probabilities are the class scores, as a tensor or as a ZipMap's input. They are read, and the page says so."""
    _scikit_learn_graph(tmp_path / "model.onnx", zipmap)
    folder = tmp_path / "pictures"
    folder.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for k, picture in enumerate(pixels):
        Image.fromarray(picture).save(folder / f"{k}.png")
    model = open_model(tmp_path / "model.onnx")
    assert len(model.classes) == 3
    said = ("The graph has 2 outputs: its first, 'label', is each image's class (a scikit-learn classifier's, as "
            "skl2onnx converts it); ")
    said += ("the N x classes tensor 'probabilities' that its 'output_probability' turns into a sequence of maps (a "
             "ZipMap's) is read as the class scores." if zipmap else "its 'probabilities' (N x classes) is read as the "
             "class scores.")
    assert said in model.notes
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"image": pixels[:, None].astype(np.float32) / 255})
    if zipmap:  # onnxruntime's answer as the file gives it: one {class: probability} per image
        probabilities = np.array([[row[c] for c in range(3)] for row in probabilities])
    results = predict_any(tmp_path / "model.onnx", [folder], topk=3)
    assert [Path(r["file"]).name for r in results] == [f"{k}.png" for k in range(4)]
    for result, expected, label in zip(results, probabilities, labels, strict=True):
        assert result["top"][0]["index"] == label
        got = {t["index"]: t["probability"] for t in result["top"]}
        assert [got[c] for c in range(3)] == pytest.approx(expected.tolist(), abs=1e-6)
    if zipmap:  # opened as a network (--no-classes), its sequence of maps was an internal error
        network = open_model(tmp_path / "model.onnx", Options(no_classes=True, any_network=True))
        assert "Its output 'output_probability', no tensor (a sequence or a map), is not shown." in network.notes
        assert [row.name for row in network.stages(torch.zeros(1, 28, 28, dtype=torch.uint8))][-1:] == ["label"]


class _Twice(nn.Module):
    """A residual block whose one ReLU runs twice, as torchvision's BasicBlock's does."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x)))) + x


class Named(nn.Module):
    """Stages in modules, one module run twice, and a max pool of the network's own forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.stem, self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), _Twice()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(self.block(self.stem(x)), 2).mean((2, 3)))


def test_an_onnx_graph_of_torchs_exporter_names_its_layers_by_module(tmp_path):
    """torch.onnx.export(dynamo=True) names its nodes by their op (node_conv2d, node_Conv_11), and the page showed
    those; each node's metadata holds the module path it ran in, which the module's own page shows."""
    from cnnlab.explore.module_model import ModuleModel

    net, x = Named().eval(), torch.zeros(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), None, dynamo=True, verbose=False, input_names=["images"],
                          output_names=["logits"]).save(str(tmp_path / "new.onnx"), external_data=False)
        torch.onnx.export(net, (x,), str(tmp_path / "old.onnx"), dynamo=False, input_names=["images"],
                          output_names=["logits"])
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    hooked = [r.name for r in ModuleModel(net, "named", Options(input_size=8)).stages(image)][:-1]
    assert hooked == ["stem.0", "stem.1", "block.conv1", "block.relu", "block.conv2", "block.relu#2"]
    new = onnx.load(str(tmp_path / "new.onnx"))
    [node] = [n.name for n in new.graph.node if n.op_type == "MaxPool"]
    pool = "max_pool2d"  # the root's own op, named as the .pt2 program names it (its node: node_max_pool2d)
    assert node == f"node_{pool}"

    def names(path) -> tuple[list[str], list[str]]:
        model = open_model(path)
        return [r.name for r in model.stages(image)], [row["name"] for row in model.layers()]

    assert names(tmp_path / "new.onnx") == ([*hooked, pool, "logits"], [*hooked, pool, "fc"])
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "named.pt2"))
    assert pool in names(tmp_path / "named.pt2")[0]  # the same name on the program's page
    old = onnx.load(str(tmp_path / "old.onnx")).graph.node  # the older exporter's node names are module paths
    assert names(tmp_path / "old.onnx")[0] == [*(n.name for n in old if n.op_type in ("Conv", "Relu", "MaxPool")),
                                               "logits"]
    # A file with the path in its namespace line alone; a path that is the output's name is numbered, not shared.
    for node in new.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key != "pkg.torch.onnx.name_scopes"]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    first = next(n for n in new.graph.node if n.op_type == "Conv")
    first.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'logits', 'conv2d']")
    onnx.save(new, str(tmp_path / "namespace.onnx"))
    assert names(tmp_path / "namespace.onnx") == (["logits#2", *hooked[1:], pool, "logits"],
                                                  ["logits#2", *hooked[1:], pool, "fc"])


class Gated(nn.Module):
    """x * gate(x) after the first convolution, then a squeeze-and-excitation gate (a sigmoid of the pooled map,
    multiplying the map: no activation of its own input)."""

    def __init__(self, gate):
        super().__init__()
        torch.manual_seed(2)
        self.conv, self.squeeze, self.fc, self.gate = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.Linear(4, 3), gate

    def forward(self, x):
        y = self.conv(x)
        y = y * self.gate(y)
        y = y * torch.sigmoid(self.squeeze(y.mean((2, 3), keepdim=True)))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("gate, kind, oracle", [(torch.sigmoid, "silu", F.silu),
                                                (F.hardsigmoid, "hardswish", F.hardswish)])
def test_an_activation_written_as_a_gate_times_its_input_is_shown_as_the_activation(gate, kind, oracle, tmp_path):
    """torch's older exporter (Ultralytics' YOLO exports, torchvision's EfficientNet) writes SiLU as a Sigmoid and a
    Mul, with no record of the operation: the page showed the gate, sigmoid(x), as the layer's output."""
    net = Gated(gate).eval()
    model = open_model(explore_support._onnx_of(net, tmp_path / "gated.onnx"))
    image = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rows = model.stages(image)
    assert [r.kind for r in rows] == ["Conv", kind, "Conv", "Sigmoid", "output"]  # the excitation stays a gate
    with torch.no_grad():
        torch.testing.assert_close(rows[1].output, oracle(net.conv(image[None].float() / 255)), atol=1e-5, rtol=1e-5)


def test_an_ultralytics_classifiers_class_names_are_read_from_its_metadata(tmp_path):
    """Ultralytics stores a classifier's names as a Python dict's text in the ONNX metadata (``names``): read as a
    literal, they name the classes; ``--classes`` still comes first, and a ``names`` of another form is no names."""
    _nhwc_graph(tmp_path / "plain.onnx")
    model = onnx.load(str(tmp_path / "plain.onnx"))

    def with_names(text: str) -> tuple[str, ...]:
        del model.metadata_props[:]
        model.metadata_props.add(key="names", value=text)
        onnx.save(model, str(tmp_path / "yolo.onnx"))
        return open_model(tmp_path / "yolo.onnx").classes

    assert with_names("{0: 'cat', 1: 'dog', 2: 'tabby cat'}") == ("cat", "dog", "tabby cat")
    for other in ("cat,dog,bird", "{'a': 0, 'b': 1, 'c': 2}", "{1: 'a', 2: 'b', 3: 'c'}", "__import__('os')"):
        assert with_names(other) == ("class 0", "class 1", "class 2"), other
    with_names("{0: 'cat', 1: 'dog', 2: 'bird'}")
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    assert open_model(tmp_path / "yolo.onnx", Options.from_flags(classes=tmp_path / "names.txt")).classes == \
        ("a", "b", "c")
    assert not open_model(tmp_path / "yolo.onnx").spec.crop  # names alone say nothing of how it is fed


def _ultralytics_classifier(tmp_path) -> Path:
    _nhwc_graph(tmp_path / "plain.onnx")
    model = onnx.load(str(tmp_path / "plain.onnx"))
    for key, value in (("author", "Ultralytics"), ("task", "classify"), ("names", "{0: 'a', 1: 'b', 2: 'c'}")):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp_path / "yolo.onnx"))
    return tmp_path / "yolo.onnx"


def test_an_ultralytics_classifier_is_fed_centre_crops_as_ultralytics_feeds_it(tmp_path):
    """Ultralytics resizes a picture's shorter side and crops its centre for a classifier (its metadata: author
    Ultralytics, task classify); the explorer padded a wide photo to a square, another image than the model's."""
    opened = open_model(_ultralytics_classifier(tmp_path))
    assert "resized by the shorter side and centre-cropped as Ultralytics' classify predict does" in \
        opened.spec.describe()
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, 16:32] = 200  # a bright centre between black sides: cropped, the model sees only the centre
    Image.fromarray(wide).save(tmp_path / "wide.png")
    spec = opened.spec
    picture = decode_upload((tmp_path / "wide.png").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop,
                            fit=spec.fit)
    assert picture.shape == (3, 16, 16) and picture.min() == 200, picture.float().mean()


@pytest.mark.parametrize("wh", [(37, 20), (20, 45), (9, 11)])
def test_an_ultralytics_classifiers_picture_is_torchvisions_resize_then_centre_crop(tmp_path, wh):
    """Ultralytics' classify predict feeds torchvision's Resize(side) (the shorter side to the input's, the longer
    truncated, Pillow's bilinear) then CenterCrop(side): the explorer cropped the picture first and then resized the
    crop (ImageOps.fit), pixels tens of levels off at its edges, and left a photo's EXIF orientation unapplied."""
    import torchvision.transforms as T

    spec = open_model(_ultralytics_classifier(tmp_path)).spec
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned a quarter clockwise, as cv2.imread (Ultralytics') reads it
    picture.save(tmp_path / "photo.png", exif=exif)
    expected = np.asarray(T.Compose([T.Resize(16), T.CenterCrop(16)])(picture.transpose(Image.Transpose.ROTATE_270)))
    fed = decode_upload((tmp_path / "photo.png").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop,
                        fit=spec.fit)
    assert np.array_equal(fed.permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("imgsz, hw", [("[24, 32]", (24, 32)), ("40", (40, 40)), ("[24]", None), ("[1, 99999]", None),
                                      ("os.system('x')", None)])
def test_an_ultralytics_export_of_dynamic_sides_is_run_at_the_size_its_metadata_keeps(imgsz, hw, tmp_path):
    """`yolo export ... dynamic=True` leaves the input's sides free and keeps the size it was made for (imgsz) in its
    metadata: that size, as --input-size would give it; the export was refused without the flag. Another form is
    no size, and the refusal asks for --input-size as before."""
    _nhwc_graph(tmp_path / "free.onnx", dynamic=True)
    model = onnx.load(str(tmp_path / "free.onnx"))
    for key, value in (("author", "Ultralytics"), ("imgsz", imgsz)):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp_path / "yolo.onnx"))
    if hw is None:
        with pytest.raises(CnnlabError, match="has a dynamic input size .* pass --input-size"):
            open_model(tmp_path / "yolo.onnx")
        return
    spec = open_model(tmp_path / "yolo.onnx").spec
    assert spec.hw == hw and "size from the Ultralytics' metadata" in spec.describe()
    assert open_model(tmp_path / "yolo.onnx", Options(input_size=16)).spec.hw == (16, 16)  # the flag comes first


def _hugging_face_export(folder, processor: dict, id2label: dict, net: nn.Module | None = None) -> nn.Module:
    """A folder as ``optimum-cli export onnx`` leaves one: model.onnx of free batch, height and width (input
    pixel_values, normalised outside), config.json (id2label) and preprocessor_config.json beside it; of ``net``, or
    of a small seeded network."""

    torch.manual_seed(0)
    net = (net or nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(4, 3))).eval()
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(folder / "model.onnx"), dynamo=False,
                          input_names=["pixel_values"], output_names=["logits"],
                          dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    (folder / "config.json").write_text(json.dumps({"architectures": ["Net"], "id2label": id2label}))
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return net


VIT = {"do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_resize": True,
       "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 0.5], "size": {"height": 24, "width": 20}}


@pytest.mark.parametrize("processor, hw", [
    (VIT, (24, 20)),
    ({**VIT, "do_center_crop": True, "crop_size": {"height": 16, "width": 16}}, (16, 16)),  # DeiT's: the crop
    ({**VIT, "size": {"shortest_edge": 32}}, (32, 32)),  # ConvNeXt's
])
def test_a_hugging_face_export_is_fed_as_the_files_beside_it_say(processor, hw, tmp_path):
    """optimum's export folder says beside model.onnx how the model is fed and what it answers; the explorer
    refused its free height and width without --input-size, fed it unnormalised pixels, and numbered its classes.
    Torch's network fed the processor's normalisation is the oracle."""
    net = _hugging_face_export(tmp_path / "vit", processor, {"0": "cat", "1": "dog", "2": "fox"})
    model = open_model(tmp_path / "vit" / "model.onnx")
    assert model.classes == ("cat", "dog", "fox") and model.spec.hw == hw
    said = model.spec.describe()
    assert "size from the preprocessor_config.json beside it" in said
    assert "normalisation from the preprocessor_config.json beside it" in said
    assert any("config.json beside it (id2label)" in note for note in model.notes)
    images = torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean, std = torch.tensor(VIT["image_mean"]).view(1, 3, 1, 1), torch.tensor(VIT["image_std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(images), net((images / 255 - mean) / std), atol=1e-4, rtol=1e-4)
    # the flags come first
    flagged = open_model(tmp_path / "vit" / "model.onnx", Options(input_size=12, mean=(0.1,), std=(0.2,)))
    assert flagged.spec.hw == (12, 12) and flagged.spec.mean == (0.1, 0.1, 0.1)
    assert "beside it" not in flagged.spec.describe()


def test_a_hugging_face_export_without_its_processors_file_asks_for_its_size_naming_its_free_sides(tmp_path):
    """optimum's export names its free sides "height" and "width": without the preprocessor_config.json that gives
    the size, the refusal read "a dynamic input size (height x width height x width)"; the names are quoted."""
    _hugging_face_export(tmp_path / "vit", VIT, {"0": "cat", "1": "dog", "2": "fox"})
    (tmp_path / "vit" / "preprocessor_config.json").unlink()
    with pytest.raises(CnnlabError, match=r"model.onnx has a dynamic input size \(height x width 'height' x "
                                          r"'width'\); pass --input-size SIDE or HEIGHTxWIDTH$"):
        open_model(tmp_path / "vit" / "model.onnx")


def test_a_hugging_face_export_folder_named_for_its_model_points_at_its_model_onnx(tmp_path, capsys):
    """optimum's export is a folder, which a user names as the model: predict and eval said it "holds no best.pt or
    last.pt (expected a .pt file written by cnnlab train)", and explore that it is "served as runs"; each line names
    the folder's model.onnx to pass."""
    _hugging_face_export(tmp_path / "vit", VIT, {"0": "cat", "1": "dog", "2": "fox"})
    picture = tmp_path / "p.png"
    Image.new("RGB", (20, 24)).save(picture)
    onnx_file = tmp_path / "vit" / "model.onnx"
    for argv in (["predict", str(tmp_path / "vit"), str(picture)], ["eval", str(tmp_path / "vit"), "--data-dir",
                                                                     str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"is a folder; pass {onnx_file}; a model is a .onnx" in err[0], err
    assert main(["explore", str(tmp_path / "vit"), "--images", str(tmp_path), "--export", str(tmp_path / "x.html")]) \
        == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"(for the model in it, pass {onnx_file})" in err[0], err


def test_a_command_of_cnnlab_checkpoints_given_a_hugging_face_export_folder_does_not_point_at_its_model_onnx(
        tmp_path, capsys):
    """export takes a cnnlab checkpoint, not an ONNX file: given an export folder, it said "pass vit/model.onnx
    (expected the model file in it)", which it then refused as "not a PyTorch checkpoint"; it says the folder holds no
    checkpoint, as before the folder's model.onnx was pointed at."""
    _hugging_face_export(tmp_path / "vit", VIT, {"0": "cat", "1": "dog", "2": "fox"})
    assert main(["export", str(tmp_path / "vit"), "--output", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "vit is a folder holding no best.pt or last.pt (expected a .pt file written by cnnlab " \
        "train)" in err[0], err
    assert not (tmp_path / "out.onnx").exists()


def test_summary_of_a_folder_in_the_working_folder_names_the_model_file_in_it(tmp_path, monkeypatch, capsys):
    """cnnlab summary of a folder named without a slash (``vit``, ``runs``) said "unknown model 'vit'" and listed
    cnnlab's own models; named so or with a slash, it said the folder is no model without naming the file in it.
    Each is one line naming the file to pass."""
    _hugging_face_export(tmp_path / "vit", VIT, {"0": "cat", "1": "dog", "2": "fox"})
    monkeypatch.chdir(tmp_path)
    for given in ("vit", "vit/"):
        assert main(["summary", given]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "is a folder; pass vit/model.onnx; a model is a .onnx" in err[0], err


def test_summary_of_one_of_cnnlabs_names_is_its_model_beside_a_folder_so_named(tmp_path, monkeypatch, capsys):
    """A folder of the working folder is read for a bare word that is no model's name; one of cnnlab's names stays its
    model (a ``resnet18/`` folder of a user's beside it), and the folder is named with a slash."""
    (tmp_path / "resnet18").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "resnet18"]) == 0
    assert capsys.readouterr().out.startswith("resnet18 (d2l 8.6) at input 1 x 1 x 96 x 96")
    assert main(["summary", "resnet18/"]) == 2
    assert "resnet18 is a folder; a model is a .onnx" in capsys.readouterr().err


# microsoft/resnet-50's and facebook/convnext-tiny-224's form (Transformers' ConvNextImageProcessor), at a small size:
# the shorter side resized to int(16 / 0.8) = 20 with Pillow's bicubic (resample 3), the centre 16 x 16 cropped
CONVNEXT = {**VIT, "size": {"shortest_edge": 16}, "crop_pct": 0.8, "resample": 3}
# BiT's and CLIP's form: the shorter side resized to shortest_edge with Pillow's bilinear (resample 2), crop_size cut
BIT = {**VIT, "size": {"shortest_edge": 20}, "do_center_crop": True, "crop_size": {"height": 16, "width": 16},
       "resample": 2}


@pytest.mark.parametrize("processor, words, resample", [
    (CONVNEXT, "20 (bicubic)", Image.Resampling.BICUBIC), (BIT, "20 (bilinear)", Image.Resampling.BILINEAR)])
@pytest.mark.parametrize("wh", [(37, 21), (21, 40), (20, 20)])
def test_a_hugging_face_exports_picture_is_framed_as_its_processor_frames_it(processor, words, resample, wh,
                                                                             tmp_path):
    """A ConvNeXt processor (also Transformers' ResNets') resizes a picture's shorter side to shortest_edge / crop_pct
    with its filter and crops the centre, its offsets rounded down, and BiT's resizes it to shortest_edge and crops
    crop_size; the explorer padded the picture to the input, another image than the one the model's users feed it.
    Pillow's own resize and crop, step by step, are the oracle (37 x 21: the resized 35 px side leaves 19 to crop,
    9 on the left, where rounding would take 10)."""
    _hugging_face_export(tmp_path / "convnext", processor, {"0": "cat", "1": "dog", "2": "fox"})
    spec = open_model(tmp_path / "convnext" / "model.onnx").spec
    assert spec.hw == (16, 16)
    assert f"pictures resized by the shorter side to {words} and centre-cropped to 16 as its " \
        "preprocessor_config.json says" in spec.describe()
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    picture.save(tmp_path / "photo.png")
    fed = decode_upload((tmp_path / "photo.png").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop,
                        fit=spec.fit)
    expected = explore_support.processor_framed(picture, 20, 16, resample)
    assert np.array_equal(fed.permute(1, 2, 0).numpy(), expected)
    # the flag comes first: at another input size the processor's framing does not hold, and pictures are padded
    flagged = open_model(tmp_path / "convnext" / "model.onnx", Options(input_size=12)).spec
    assert flagged.fit == "pad" and "shorter side" not in flagged.describe()


@pytest.mark.parametrize("processor, change", [
    (CONVNEXT, {"do_resize": False}), (CONVNEXT, {"crop_pct": None}), (CONVNEXT, {"resample": 17}),
    (CONVNEXT, {"resample": "3"}), (CONVNEXT, {"size": {"shortest_edge": 384}}),
    (CONVNEXT, {"do_center_crop": True, "crop_size": 16}), (BIT, {"resample": None}),
    (BIT, {"size": {"height": 20, "width": 20}}), (BIT, {"crop_size": {"height": 24, "width": 16}})])
def test_a_processor_file_of_another_form_says_nothing_of_the_framing(processor, change, tmp_path):
    """A processor that does not resize, names no crop_pct or a filter Pillow has no number for, stretches (an edge of
    384 or more, a size of a height and width), crops twice or more than it resized to: its pictures are padded as
    any model's, the page says nothing of a framing."""
    processor = {k: v for k, v in {**processor, **change}.items() if v is not None}
    _hugging_face_export(tmp_path / "convnext", processor, {"0": "cat", "1": "dog", "2": "fox"})
    spec = open_model(tmp_path / "convnext" / "model.onnx").spec
    assert spec.fit == "pad" and "shorter side" not in spec.describe()


@pytest.mark.parametrize("processor", [{**VIT, "rescale_factor": 1.0}, {**VIT, "image_std": [0, 1, 1]},
                                       {**VIT, "do_normalize": False}, {**VIT, "image_mean": "imagenet"}])
def test_a_processor_file_of_another_scale_or_shape_says_nothing_of_the_normalisation(processor, tmp_path):
    _hugging_face_export(tmp_path / "vit", processor, {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"})
    model = open_model(tmp_path / "vit" / "model.onnx")
    assert model.spec.mean is None and "normalisation" not in model.spec.describe()
    assert model.classes == ("class 0", "class 1", "class 2")  # placeholders name nothing


@pytest.mark.parametrize("tail", ["reshape-1", "softmax", "float16", "qlinear", "qdq"])
def test_graphs_as_other_tools_write_them(tail, tmp_path):
    # Each was refused, failed on every image, or showed softmax applied twice.
    import onnxruntime as ort

    kernels = _graph_of_others(tmp_path / "m.onnx", tail)
    model = open_model(tmp_path / "m.onnx")
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    own = np.concatenate([session.run(None, {"x": (im[None].float() / 255).numpy()})[0] for im in images])
    probs = own if tail == "softmax" else torch.from_numpy(own).softmax(1).numpy()
    assert np.allclose(model.logits(images).softmax(1).numpy(), probs, atol=1e-3)  # the model's own answers
    result = analyze_image(model, images[0])
    assert result["top"][0]["probability"] == pytest.approx(float(probs[0].max()), abs=1e-3)
    assert result["explanation"] is not None  # occlusion ran its batches of patched images
    names = [r["name"] for r in result["rows"]]
    assert names == (["relu", "g", "y"] if tail == "qlinear" else ["conv", "relu", "g", "y"])  # int8: the table's
    assert ("one at a time" in " ".join(model.notes)) == (tail == "reshape-1")
    if kernels is not None:  # the first layer's, a quantized weight dequantized (QLinearConv's are not shown)
        assert np.allclose(model.kernels().numpy(), kernels, atol=1e-6)
    table = {row["name"]: row for row in model.layers()}
    assert table["conv"]["params"] == 36 and table["conv"]["shape"] == [4, 6, 6]  # 4 x 1 x 3 x 3, quantized or not
    assert not any(row["op"].endswith("QuantizeLinear") for row in table.values())  # scales are not layers


def test_a_quantized_graphs_scores_are_onnxruntimes_for_the_file_as_it_is(tmp_path):
    # The stages' outputs added to the graph keep onnxruntime from fusing DequantizeLinear -> Conv -> QuantizeLinear
    # into its integer QLinearConv, and the float Conv rounds otherwise: the scores shown were another computation's
    # than the file's (for mobilenet_v3_small quantized by onnxruntime, a logit 1.1 away on a photo). Here every
    # picture is a tie for one of the two (pixel * 0.1 / 0.2), which the float Conv's rounding breaks either way.
    def scale(name, value, zero_type=np.uint8):
        return [numpy_helper.from_array(np.array(value, np.float32), name),
                numpy_helper.from_array(np.array(0, zero_type), name + "_zero")]

    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "sx_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "sx_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "sw_zero"], ["w"]),
             helper.make_node("Conv", ["xd", "w"], ["conv"]),
             helper.make_node("QuantizeLinear", ["conv", "sy", "sy_zero"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "sy_zero"], ["yd"]),
             helper.make_node("GlobalAveragePool", ["yd"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["y"])]
    weights = [numpy_helper.from_array(np.ones((2, 1, 1, 1), np.int8), "wq"), *scale("sx", 1.0),
               *scale("sw", 0.1, np.int8), *scale("sy", 0.2)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, tmp_path / "int8.onnx")
    images = torch.arange(1, 256, 2, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    expected = torch.from_numpy(session.run(None, {"x": images.float().numpy()})[0])
    opened = open_model(tmp_path / "int8.onnx", Options(pixel_range="0-255"))
    assert torch.allclose(opened.logits(images), expected, atol=1e-6)
    rows = opened.stages(images[1])
    assert [r.kind for r in rows] == ["Conv", "GlobalAveragePool", "output"]  # the maps are still shown
    assert torch.allclose(rows[-1].output, expected[1:2], atol=1e-6)
    assert any("quantized graph" in note for note in opened.notes)


def test_a_graph_whose_answer_depends_on_the_batch_is_run_one_image_at_a_time(tmp_path):
    # Dynamic quantization takes one scale for the whole batch's values: predict on a folder ran its pictures in
    # one batch, and each picture's answer depended on the others beside it (another top class than the page's,
    # which analyses one image, and than the file's for that picture alone).
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(tmp_path / "float.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "dynamic.onnx"), weight_type=QuantType.QInt8)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[0] //= 16  # a dark picture beside bright ones: the batch's scale is not its own
    session = ort.InferenceSession(str(tmp_path / "dynamic.onnx"), providers=["CPUExecutionProvider"])
    alone = torch.cat([torch.from_numpy(session.run(None, {"x": images[k:k + 1].float().numpy() / 255})[0])
                       for k in range(4)])
    model = open_model(tmp_path / "dynamic.onnx")
    assert torch.allclose(model.logits(images), alone, atol=1e-6)
    assert any("depends on the others run with it" in note for note in model.notes)
    float_model = open_model(tmp_path / "float.onnx")  # a float graph is still run in batches
    assert float_model.batch is None and not any("one at a time" in note for note in float_model.notes)


def test_shapes_shape_inference_leaves_unknown_come_from_a_run(tmp_path):
    """Padding computed at run time (Keras's "same" padding reads the input's shape; here the pads come from its
    values, which no inference can know) left every shape after it symbolic in the layer table (``unk__4``, as in most
    rows of a Keras MobileNetV3's). One run of the graph gives them."""
    int64 = lambda values, name: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    rng = np.random.default_rng(0)
    w, fc = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    nodes = [helper.make_node("ReduceMin", ["x"], ["low"], keepdims=0),
             helper.make_node("Mul", ["low", "zero"], ["none"]), helper.make_node("Add", ["none", "one"], ["pad"]),
             helper.make_node("Cast", ["pad"], ["padi"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["padi", "shape1"], ["p"]),
             helper.make_node("Concat", ["z2", "p", "p", "z2", "p", "p"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["padded"]),
             helper.make_node("Conv", ["padded", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array(1, np.float32), "one"), int64([1], "shape1"), int64([0, 0], "z2")]
    graph = helper.make_graph(nodes, "pads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "pads.onnx"))
    model = open_model(tmp_path / "pads.onnx")
    layers = {r["name"]: r for r in model.layers()}
    assert layers["conv"]["shape"] == [4, 8, 8] and layers["relu"]["shape"] == [4, 8, 8]  # 10 x 10 padded, 3 x 3
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert list(model.stages(image)[0].output.shape) == [1, 4, 8, 8]


def test_an_nhwc_graph(tmp_path, rgb_folder):
    w, b, fc = _nhwc_graph(tmp_path / "nhwc.onnx")
    model, images = open_with_images(tmp_path / "nhwc.onnx", rgb_folder, Options(mean=(0.5,), std=(0.25,)))
    assert (model.spec.layout, model.spec.hw, model.spec.channels) == ("NHWC", (16, 16), 3)
    assert "layout from the graph" in model.spec.describe() and "normalisation from the flags" in model.spec.describe()
    x = (images.images.float() / 255 - 0.5) / 0.25
    conv = F.conv2d(x, w, b, padding=1)
    expected = F.max_pool2d(conv.relu(), 2).mean((2, 3)) @ fc.T
    assert torch.allclose(model.logits(images.images), expected, atol=1e-4)
    rows = model.stages(images.images[0])
    assert [r.kind for r in rows] == ["Conv", "Relu", "MaxPool", "GlobalAveragePool", "output"]
    assert torch.allclose(rows[0].output, conv[:1], atol=1e-4)
    assert torch.equal(model.kernels(), w)
    layers = {r["name"]: r for r in model.layers()}
    assert layers["conv"]["shape"] == [4, 16, 16] and layers["conv"]["params"] == 4 * 27 + 4
    assert layers["pool"]["shape"] == [4, 8, 8]


def test_a_layout_flag_the_graph_contradicts_is_named(tmp_path):
    """An NHWC graph opened with --layout NCHW: its 16 x 16 x 3 input would read as 16 channels of 16 x 3 pixels."""
    _nhwc_graph(tmp_path / "nhwc.onnx")
    with pytest.raises(CnnlabError, match=r"--layout NCHW reads input 'x' \(N x 16 x 16 x 3\) as 16 channels, but its "
                                          r"first convolution takes 3; expected --layout NHWC, or no --layout"):
        open_model(tmp_path / "nhwc.onnx", Options(layout="NCHW"))
    assert open_model(tmp_path / "nhwc.onnx", Options(layout="NHWC")).spec.layout == "NHWC"


def test_an_input_size_a_graph_of_dynamic_sides_cannot_take_is_one_line(tmp_path):
    # A graph of dynamic height and width that takes one size only (a Linear of a fixed width after a Flatten),
    # opened with another --input-size: onnxruntime's InvalidArgument was an internal error.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "flat.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    with pytest.raises(CnnlabError, match=r"flat.onnx failed on a 1 x 3 x 24 x 24 input in onnxruntime \(.*Gemm.*\); "
                                          r"pass an --input-size the graph allows; expected a classifier") as e:
        open_model(tmp_path / "flat.onnx", Options(input_size=24))
    assert "\n" not in str(e.value)
    assert open_model(tmp_path / "flat.onnx", Options(input_size=16)).spec.hw == (16, 16)


def test_dims_of_minus_one_are_dynamic_as_paddle2onnx_writes_them(tmp_path):
    # paddle2onnx (and older converters) write -1 for a dynamic side; the graph was refused as fixing its input to
    # -1 x -1, even with --input-size
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "net.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    graph = onnx.load(tmp_path / "net.onnx")
    for k in (0, 2, 3):
        dim = graph.graph.input[0].type.tensor_type.shape.dim[k]
        dim.Clear()
        dim.dim_value = -1
    onnx.save(graph, tmp_path / "paddle.onnx")
    with pytest.raises(CnnlabError, match=r"paddle.onnx has no fixed input size; pass --input-size"):
        open_model(tmp_path / "paddle.onnx")
    model = open_model(tmp_path / "paddle.onnx", Options(input_size=(20, 24)))
    assert model.spec.hw == (20, 24) and model.batch is None
    images = torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.logits(images), net(images.float() / 255), atol=1e-5)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x08\x01garbage, not a protobuf" * 10), "is not an ONNX model"),
    (lambda p: _nhwc_graph(p, input_rank=2), "has no image input"),
    (lambda p: _nhwc_graph(p, input_type=TensorProto.INT64), "'x' is N x 16 x 16 x 3 of int64, expected N x C x H x "
                                                             "W or N x H x W x C of float32, float16, float64, uint8"),
    (lambda p: _nhwc_graph(p, output_4d=True), r"is not a classifier: its output 'p' has shape .*, expected N x "
                                                r"classes \(a map of scores per pixel is a segmentation model's"),
    # onnxruntime's internal errors, or 30 GB asked for a first black image, before these were read as they are
    (lambda p: _nhwc_graph(p, side=100000), "fixes its input's height x width to 100000 x 100000; expected sides "
                                            "from 8 to 2048 pixels, as --input-size takes"),
    (lambda p: _nhwc_graph(p, side=0), "fixes its input's height x width to 0 x 0; expected sides from 8 to 2048"),
    (lambda p: _nhwc_graph(p, batch=0), r"fixes the batch of input 'x' \(0 x 16 x 16 x 3\) to 0 images; expected 1 or "
                                        "more, or a free batch"),
])
def test_bad_onnx_files(tmp_path, make, message):
    path = tmp_path / "bad.onnx"
    make(path)
    with pytest.raises(CnnlabError, match=message) as e:
        open_model(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("input_type, name, tolerance", [(TensorProto.FLOAT16, "float16", 5e-3),
                                                        (TensorProto.DOUBLE, "float64", 1e-6),
                                                        (TensorProto.UINT8, "uint8", 1e-6)])
def test_an_onnx_graph_of_another_input_type_is_fed_that_type(tmp_path, input_type, name, tolerance):
    """A graph converted to float16 whole, or one that takes the pixel values themselves (uint8) and scales them
    inside, was refused as having no image input; it is fed its own type, and scores as its float twin does."""
    _nhwc_graph(tmp_path / "float.onnx")
    _nhwc_graph(tmp_path / "other.onnx", input_type=input_type)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    other, float_ = open_model(tmp_path / "other.onnx"), open_model(tmp_path / "float.onnx")
    assert other.spec.describe().startswith(f"{name} N x H x W x C, 3 channels at 16 x 16, pixels ")
    # the uint8 graph divides by 255 itself: it is given the bytes, and scores as the float graph given pixels / 255
    if name == "uint8":
        assert "pixels 0-255" in other.spec.describe() and "pixel range from the graph's uint8 input" in \
            other.spec.describe()
    torch.testing.assert_close(other.logits(images), float_.logits(images), atol=tolerance, rtol=tolerance)
    page = analyze_image(other, images[0])
    assert page["explanation"]["method"] == "occlusion" and len(page["rows"]) > 1


KERAS_MEAN, KERAS_STD = [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]


@pytest.mark.parametrize("scaling, pixel_max", [
    # Keras MobileNetV3's Rescaling(1/127.5, offset=-1), then its first convolution's "same" padding
    ([("Mul", 1 / 127.5), ("Add", -1.0), ("Pad", [0, 1, 1, 0, 0, 1, 1, 0])], 255),
    ([("Mul", 1 / 255), ("Sub", np.array(KERAS_MEAN) / 255), ("Div", np.array(KERAS_STD) / 255)], 255),  # EfficientNet
    ([("Sub", KERAS_MEAN), ("Div", KERAS_STD)], 255),  # ConvNeXt's Normalization on the pixel values
    ([("Mul", 2.0), ("Sub", 1.0)], 1),  # x * 2 - 1 of pixels / 255: a torch model's own
    ([("Sub", [0.485, 0.456, 0.406]), ("Div", [0.229, 0.224, 0.225])], 1),  # torchvision's normalisation inside
])
def test_a_graph_that_scales_its_input_itself_is_fed_the_pixels_it_scales(tmp_path, scaling, pixel_max):
    """A Keras model keeps its Rescaling/Normalization layers inside and takes the pixel values themselves; fed
    pixels / 255 it saw a nearly black picture and answered with confidence. The range the graph's own scaling is
    made for is read from it, and onnxruntime given those pixels is the oracle."""
    _nhwc_graph(tmp_path / "scales.onnx", scaling=scaling)
    model = open_model(tmp_path / "scales.onnx")
    assert model.spec.pixel_max == pixel_max
    assert f"pixels {'0-255' if pixel_max == 255 else '/ 255'}" in model.spec.describe()
    assert "pixel range from the graph's own scaling" in model.spec.describe()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    fed = images.permute(0, 2, 3, 1).numpy().astype(np.float32) / (255 / pixel_max)
    want = ort.InferenceSession(str(tmp_path / "scales.onnx")).run(None, {"x": fed})[0]
    torch.testing.assert_close(model.logits(images), torch.from_numpy(want), atol=1e-4, rtol=1e-4)
    # the flags still decide where given, and say so
    flagged = open_model(tmp_path / "scales.onnx", Options(pixel_range="0-1")).spec
    assert flagged.pixel_max == 1 and "graph's own scaling" not in flagged.describe()


@pytest.mark.parametrize("scaling", [
    [],  # no scaling inside: pixels / 255, the common reading, claimed from nowhere
    [("Sub", [103.939, 116.779, 123.68])],  # Caffe's mean alone: 0-255 values far from 0 either way; flags tell
    [("Mul", 1.0)],
])
def test_a_graph_whose_scaling_does_not_tell_its_range_is_fed_pixels_over_255_without_a_claim(tmp_path, scaling):
    _nhwc_graph(tmp_path / "plain.onnx", scaling=scaling)
    spec = open_model(tmp_path / "plain.onnx").spec
    assert spec.pixel_max == 1 and "pixel range" not in spec.describe()


def test_a_torch_models_own_scaling_of_the_pixel_values_is_read_from_its_export(tmp_path):
    """torch's exporter writes ``(x - 127.5) / 127.5`` with constants of its own: the graph takes 0-255."""
    net = explore_support.OwnScaling(lambda x: (x - 127.5) / 127.5).eval()
    model = open_model(explore_support._onnx_of(net, tmp_path / "scaled.onnx"))
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert model.spec.pixel_max == 255
    with torch.no_grad():
        torch.testing.assert_close(model.logits(images), net(images.float()), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("flags, said", [(dict(pixel_range="0-1"), "--pixel-range"),
                                         (dict(mean=[0.5], std=[0.25]), "--mean/--std")])
def test_a_graph_of_uint8_input_refuses_scaling_flags(tmp_path, flags, said):
    _nhwc_graph(tmp_path / "bytes.onnx", input_type=TensorProto.UINT8)
    with pytest.raises(CnnlabError, match=rf"bytes.onnx takes uint8 pixels \(input 'x'\), the values themselves, and "
                                          rf"scales them inside; expected no {said} for it$"):
        open_model(tmp_path / "bytes.onnx", Options(**flags))
    # what says nothing against bytes is taken
    assert open_model(tmp_path / "bytes.onnx", Options(pixel_range="0-255", bgr=True)).spec.bgr


@pytest.mark.parametrize("tail, returns", [("ArgMax", "1 x 1 of int64"), ("Greater", "1 x 3 of bool"),
                                           ("Transpose", "3 x 1")])
def test_an_onnx_output_that_is_not_float_logits_per_image_is_refused_as_a_programs_is(tail, returns, tmp_path):
    # An ArgMax's indices and a comparison's booleans were read as logits (a page of wrong answers, exit 0), and
    # logits transposed to classes x N failed later with an internal error.
    _nhwc_graph(tmp_path / "m.onnx", tail=tail)
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "m.onnx")
    assert str(e.value) == (f"{tmp_path / 'm.onnx'} (output 'y') is not a classifier: for 1 image it returns "
                            f"{returns}, expected 1 x classes of float logits; cnnlab explore and cnnlab summary "
                            "open any network for its layers")


def test_a_top_k_output_is_refused_not_read_as_the_classes_scores(tmp_path):
    # A graph ending in Softmax -> TopK (each image's k largest probabilities, sorted, then their class indices, as
    # deployment graphs end) was read as class scores in class order: the first column, "class 0", won every image,
    # and with k the class count --classes named the sorted columns, every name and figure wrong with exit 0.
    _nhwc_graph(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    model.graph.node.extend([helper.make_node("Softmax", ["y"], ["prob"], axis=1),
                             helper.make_node("TopK", ["prob", "k"], ["top", "index"], axis=1)])
    model.graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "k"))
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("top", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("index", TensorProto.INT64, None)])
    onnx.save(model, str(tmp_path / "top.onnx"))
    assert open_model(tmp_path / "m.onnx").classes == ("class 0", "class 1", "class 2")
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "top.onnx", Options(classes=("a", "b", "c")))
    assert str(e.value) == (f"{tmp_path / 'top.onnx'}: its output 'top' is a TopK's, each image's k largest scores in "
                            "order, whose classes are the TopK's indices (its output 'index'); expected N x classes of "
                            "scores in the classes' order (the graph before its TopK)")


@pytest.mark.parametrize("tail, damage, message", [
    ("plain", "short", "initializer 'w' does not hold the 4 x 1 x 3 x 3 float values it declares (buffer size must be "
                       "a multiple of element size); expected its data to fill its dims"),
    ("plain", "empty", "initializer 'w' does not hold the 4 x 1 x 3 x 3 float values it declares (cannot reshape "
                       "array of size 0 into shape (4,1,3,3)); expected its data to fill its dims"),
    ("qdq", "scales", "the DequantizeLinear of 'wq' (4 x 1 x 3 x 3) cannot apply its scale (3) and zero point"),
])
def test_a_first_convolution_weight_that_is_not_what_it_declares_is_one_line(tail, damage, message, tmp_path):
    # numpy's errors reading it (ValueError) were internal errors, exit 1.
    _graph_of_others(tmp_path / "m.onnx", tail)
    model = onnx.load(str(tmp_path / "m.onnx"))
    weight = next(t for t in model.graph.initializer if t.name == ("ws" if damage == "scales" else "w"))
    weight.raw_data = weight.raw_data[:{"short": 10, "empty": 0, "scales": 12}[damage]]
    if damage == "scales":
        weight.dims[:] = [3]
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "m.onnx")
    assert str(e.value).startswith(f"{tmp_path / 'm.onnx'}: {message}") and "\n" not in str(e.value)


def _graph_adding(path, tensor: str, holder: str) -> None:
    """A grey 8 x 8 classifier of 4 classes whose logits are 0 * Gemm(...) + ``tensor``, a 1 x 4 tensor that the
    ``holder`` gives: ``"sparse initializer"``, ``"Constant"`` (its sparse_value), ``"If branch"`` (a Constant in a
    subgraph) or ``"initializer"`` (a dense one); the values are external, in ``secret.bin`` as the file names it."""
    values = helper.make_tensor(tensor if holder == "sparse initializer" else "s_values", TensorProto.FLOAT, [4],
                                vals=np.zeros(4, np.float32))
    values.ClearField("float_data")
    values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "16")):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "s_idx"), [1, 4])
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z"]), helper.make_node("Mul", ["z", "zero"], ["z0"]),
             helper.make_node("Add", ["z0", tensor], ["y"])]
    sparse_initializers = []
    if holder == "sparse initializer":
        sparse_initializers.append(sparse)
    elif holder == "Constant":
        nodes.insert(0, helper.make_node("Constant", [], [tensor], sparse_value=sparse))
    elif holder == "If branch":
        branch = helper.make_graph([helper.make_node("Constant", [], ["b"], sparse_value=sparse)], "branch", [],
                                   [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])])
        nodes.insert(0, helper.make_node("If", ["yes"], [tensor], then_branch=branch, else_branch=branch))
        inits.append(numpy_helper.from_array(np.array(True), "yes"))
    else:
        values.name = tensor
        values.dims[:] = [1, 4]
        inits.append(values)
    graph = helper.make_graph(nodes, holder, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits,
                              sparse_initializer=sparse_initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())  # as it is: onnx.save would write the external data itself


@pytest.mark.parametrize("holder", ["sparse initializer", "Constant", "If branch"])
def test_a_sparse_tensors_external_data_is_refused_not_read_from_the_working_folder(holder, tmp_path, monkeypatch):
    """onnx.load checks the external data paths of dense tensors only: onnxruntime, handed the model, read a sparse
    tensor's relative to the folder cnnlab ran in, and the page showed that file's bytes as the logits."""
    import onnxruntime as ort

    secret = np.array([1, 5, 2, 3], np.float32).tobytes()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "secret.bin").write_bytes(secret)
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    sessions = []
    session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: sessions.append(a) or session(*a, **k))
    _graph_adding(tmp_path / "model" / "m.onnx", "s", holder)
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "model" / "m.onnx")
    name = "s" if holder == "sparse initializer" else "s_values"  # a sparse initializer is named by its values
    assert str(e.value) == (f"{tmp_path / 'model' / 'm.onnx'}: sparse tensor {name!r} "
                            "keeps its data in another file ('secret.bin'), which cnnlab does not read; it reads "
                            "external data only for dense tensors, from the model's folder: expected that tensor's "
                            "data inside the model file")
    assert not sessions  # refused before onnxruntime saw it: the working folder's file was never read
    # A dense tensor's external data is read, from the model's folder and not the working one.
    _graph_adding(tmp_path / "model" / "dense.onnx", "s", "initializer")
    (tmp_path / "model" / "secret.bin").write_bytes(np.array([4, 3, 2, 1], np.float32).tobytes())
    model = open_model(tmp_path / "model" / "dense.onnx")
    assert model.logits(torch.zeros(1, 1, 8, 8, dtype=torch.uint8)).tolist() == [[4, 3, 2, 1]]


def test_a_legacy_export_s_copies_of_shared_initializers_are_no_layers(tmp_path):
    # torch's legacy exporter keeps one initializer for parameters of equal values (two GroupNorms' weights of ones,
    # biases of zeros) and gives each other parameter an Identity of it: the layer table showed rows "Identity_6 |
    # Identity | 8 x 1 x 1 | 8" and counted the copies' parameters there, and the second GroupNorm's none.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "legacy.onnx"), dynamo=False)
    assert "Identity" in [n.op_type for n in onnx.load(str(tmp_path / "legacy.onnx")).graph.node]
    model = open_model(tmp_path / "legacy.onnx")
    layers = model.layers()
    assert "Identity" not in [row["op"] for row in layers], layers
    assert sum(row["params"] for row in layers) == model_card(model)["params"] == \
        sum(p.numel() for p in net.parameters())  # each GroupNorm's weight and bias counted, as the module counts
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(image[None].float() / 255)
    assert torch.allclose(model.logits(image[None]), expected, atol=1e-5)


def _quantized(net: nn.Module, exported, quantized, quant_format: str, side: int = 16) -> None:
    """``net`` exported to ``exported`` (torch's older exporter, input ``x``) and quantized (:func:`_quantize`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, side, side),), str(exported), dynamo=False, opset_version=17,
                          input_names=["x"])
    _quantize(exported, quantized, quant_format, "x", (1, 3, side, side))


def _quantize(graph, quantized, quant_format: str, name: str, shape: tuple[int, ...]) -> None:
    """The ONNX file ``graph`` quantized by onnxruntime's static quantization into ``quantized``, in
    ``quant_format`` ("QDQ" or "QOperator"), calibrated on random pictures of ``shape`` at its input ``name``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{name: rng.random(shape, dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(graph), str(quantized), Calibration(), quant_format=QuantFormat[quant_format])


def test_a_quantized_linear_layers_weights_are_counted(tmp_path):
    """onnxruntime's static quantization (QOperator format) makes a Linear a com.microsoft QGemm, whose int8
    weight and int32 bias were left out of the parameter count (1392 for the float graph's 1477)."""
    torch.manual_seed(12)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5)).eval()
    _quantized(net, tmp_path / "f.onnx", tmp_path / "q.onnx", "QOperator")
    assert any(n.op_type == "QGemm" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    params = sum(p.numel() for p in net.parameters())
    assert model_card(open_model(tmp_path / "q.onnx"))["params"] == model_card(open_model(tmp_path / "f.onnx"))[
        "params"] == params


def test_a_quantized_legacy_exports_copies_of_a_shared_bias_are_no_layers(tmp_path):
    """Two convolutions' equal biases are one initializer and an Identity of it in a legacy export; QDQ quantization
    dequantizes the initializer and the Identity copies the DequantizeLinear's output: those copies were rows
    ("Identity_1 | Identity | 8"), and the second convolution's bias counted in none."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4)).eval()
    for conv in (net[0], net[2]):
        nn.init.zeros_(conv.bias)
    _quantized(net, tmp_path / "f.onnx", tmp_path / "q.onnx", "QDQ")
    nodes = onnx.load(str(tmp_path / "q.onnx")).graph.node
    assert any(n.op_type == "Identity" for n in nodes) and any(n.op_type == "DequantizeLinear" for n in nodes)
    rows = open_model(tmp_path / "q.onnx").layers()
    assert "Identity" not in [row["op"] for row in rows], rows
    assert [row["params"] for row in rows if row["op"] == "Conv"] == [3 * 8 * 9 + 8, 8 * 8 * 9 + 8]
    assert sum(row["params"] for row in rows) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("quant_format, before", [("QDQ", "QuantizeLinear"), ("QOperator", "QLinearSoftmax")])
def test_a_quantized_graph_ending_in_softmax_gives_probabilities_not_softmaxed_again(quant_format, before, tmp_path):
    """The ONNX Model Zoo's -qdq and -int8 classifiers of Caffe's (AlexNet, CaffeNet, GoogLeNet) end in a Softmax
    that onnxruntime's quantization follows by a QuantizeLinear and DequantizeLinear (QDQ), or makes a com.microsoft
    QLinearSoftmax (QOperator): the graph's last node was no Softmax, and its probabilities were softmaxed a second
    time (about 11% for every class of ten, whatever the picture)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10), nn.Softmax(1)).eval()
    with torch.no_grad():  # confident answers, far from a flat 10% each
        net[4].weight.mul_(40)
    _quantized(net, tmp_path / "f.onnx", tmp_path / "q.onnx", quant_format)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {node.output[0]: node for node in graph.node}
    last = producers[graph.output[0].name]
    assert (last.op_type, producers[last.input[0]].op_type) == ("DequantizeLinear", before)
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"x": image[None].float().numpy() / 255})[0] for image in images])
    out = out.astype(np.float64)
    assert out.max() > 0.5
    opened = open_model(tmp_path / "q.onnx")
    shown = opened.scoring.probabilities(opened.logits(images)).double().numpy()
    # the file's own probabilities, which its integer rounding leaves summing to 1 within a few of its steps
    assert np.allclose(shown, out / out.sum(1, keepdims=True), atol=1e-6)
    assert "The graph ends in Softmax: its outputs are taken as probabilities." in opened.notes


@pytest.mark.parametrize("quant_format, before", [("QDQ", "QuantizeLinear"), ("QOperator", "QLinearSigmoid")])
def test_a_quantized_graph_ending_in_sigmoid_gives_a_probability_per_class(quant_format, before, tmp_path):
    """The same for a multi-label graph ending in Sigmoid, quantized: its probabilities were read as logits and
    softmaxed over the classes."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4), nn.Sigmoid()).eval()
    _quantized(net, tmp_path / "f.onnx", tmp_path / "q.onnx", quant_format)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {node.output[0]: node for node in graph.node}
    assert producers[producers[graph.output[0].name].input[0]].op_type == before
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"x": image[None].float().numpy() / 255})[0] for image in images])
    opened = open_model(tmp_path / "q.onnx")
    assert opened.scoring.multi_label
    assert np.allclose(opened.scoring.probabilities(opened.logits(images)).numpy(), out, atol=1e-6)


def test_a_graph_onnxruntime_optimized_shows_the_networks_own_maps_and_first_kernels(tmp_path):
    """A graph saved by onnxruntime's optimizer (``SessionOptions.optimized_model_filepath``). At its extended level a
    Conv and its activation are one com.microsoft FusedConv and SiLU a QuickGelu: neither was a stage, and the
    page's first-layer kernels were those of the first plain Conv left, a 1 x 1 one deep inside. At its highest
    level on an x86 CPU, com.microsoft.nchwc's convolutions work in a blocked layout: their outputs were shown as
    N x C x H x W maps (a scramble, of channels padded to the block) and their reordered weights as the kernels."""
    torch.manual_seed(13)
    # 4 channels, fewer than a block on every x86 CPU (8 with AVX2, 16 with AVX-512): each convolution then reads the
    # network's own layout and the value before it is turned back, the same graph on either. With 8 channels an
    # AVX2 host chained every convolution in blocks and left no map to show but the pooled one
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Sigmoid(), nn.Conv2d(4, 4, 1), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 24, 24),), str(tmp_path / "f.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"])
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = open_model(tmp_path / "f.onnx")
    maps, x = [], plain.spec.to_input(image[None])
    with torch.no_grad():
        for layer in net:  # the output of each of the network's layers
            x = layer(x)
            maps.append(x)
    for level, name in [(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "extended"),
                        (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "all")]:
        options = ort.SessionOptions()
        options.graph_optimization_level, options.optimized_model_filepath = level, str(tmp_path / f"{name}.onnx")
        ort.InferenceSession(str(tmp_path / "f.onnx"), options, providers=["CPUExecutionProvider"])
        domains = {node.domain for node in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node}
        model = open_model(tmp_path / f"{name}.onnx")
        rows = model.stages(image)
        torch.testing.assert_close(rows[-1].output, plain.stages(image)[-1].output, atol=1e-5, rtol=1e-4)
        # every row is one of the network's own maps (the rows of the graph as torch exported it)
        assert len(rows) > 4
        for row in rows[:-1]:
            assert any(row.output.shape == m.shape and torch.allclose(row.output, m, atol=1e-5) for m in maps), \
                (name, row.name, row.kind)
        if "com.microsoft.nchwc" in domains:  # no blocked weights for kernels
            assert model.kernels() is None
            assert any("com.microsoft.nchwc" in note for note in model.notes)
        else:
            assert "com.microsoft" in domains, domains
            torch.testing.assert_close(model.kernels(), plain.kernels())
            assert {"FusedConv", "QuickGelu"} <= {row.kind for row in rows}
            assert all(layer["shape"] for layer in model.layers() if layer["op"] == "FusedConv")


def test_a_value_onnxruntime_turns_back_channels_last_is_shown_as_channels(tmp_path):
    """Where a channels-last Transpose follows a convolution, onnxruntime's highest level turns its blocked output
    back to N x H x W x C at once (ReorderOutput, channels_last=1): that row was shown as H maps of W x C."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1], name="last"),
             helper.make_node("Sigmoid", ["t"], ["s"], name="sigmoid"),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[1, 2], keepdims=0, name="mean"),
             helper.make_node("MatMul", ["m", "fc"], ["y"], name="fc")]
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "fc")]
    graph = helper.make_graph(nodes, "last", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "f.onnx"))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "all.onnx")
    ort.InferenceSession(str(tmp_path / "f.onnx"), options, providers=["CPUExecutionProvider"])
    if not any(node.op_type == "ReorderOutput" and any(a.name == "channels_last" and a.i for a in node.attribute)
               for node in onnx.load(str(tmp_path / "all.onnx")).graph.node):
        pytest.skip("onnxruntime wrote no channels-last ReorderOutput on this CPU")
    image = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    maps = [row.output for row in open_model(tmp_path / "f.onnx").stages(image)[:-1]]
    rows = open_model(tmp_path / "all.onnx").stages(image)[:-1]
    assert [tuple(row.output.shape) for row in rows] == [(1, 16, 12, 10)] * 2
    for row in rows:
        assert any(row.output.shape == m.shape and torch.allclose(row.output, m, atol=1e-5) for m in maps), row.name


def test_a_float16_graph_with_an_op_shape_inference_does_not_know_opens(tmp_path):
    """ONNX shape inference gives no type after an op of com.microsoft's (its Gelu here; FusedConv in a graph
    onnxruntime optimized): the stages after it were added as float32 outputs, and onnxruntime refused the float16
    graph ("Type (tensor(float)) of output arg ... does not match expected type (tensor(float16))")."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Gelu", ["c"], ["gl"], name="gelu", domain="com.microsoft"),
             helper.make_node("Relu", ["gl"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1, name="fc")]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float16), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float16), "fc")]
    half = [helper.make_tensor_value_info(name, TensorProto.FLOAT16, dims) for name, dims in
            (("x", ["N", 3, 12, 12]), ("y", ["N", 3]))]
    graph = helper.make_graph(nodes, "half", half[:1], half[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "half.onnx"))
    opened = open_model(tmp_path / "half.onnx")
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    rows = {row.name: row.output for row in opened.stages(image)}
    model.graph.output.extend([helper.make_value_info(name, onnx.TypeProto()) for name in ("gl", "r")])
    x = opened.spec.to_input(image[None]).numpy().astype(np.float16)
    gelu, relu = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["gl", "r"], {"x": x})
    torch.testing.assert_close(rows["gelu"], torch.from_numpy(gelu.astype(np.float32)))
    torch.testing.assert_close(rows["relu"], torch.from_numpy(relu.astype(np.float32)))


def test_an_input_of_no_static_axis_read_by_a_convolution_is_nchw(tmp_path):
    """Hugging Face's ONNX exports (optimum) name every axis of pixel_values (batch_size x num_channels x height x
    width): no static axis told the layout, and explore and predict refused ("cannot tell the layout ... pass
    --layout"). A Conv reads it, scaled on the way: ONNX's Conv takes N x C x H x W."""
    torch.manual_seed(14)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()

    class Normalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - 0.5) / 0.25)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Normalised(), (torch.zeros(1, 3, 16, 16),), str(tmp_path / "hf.onnx"), dynamo=False,
                          opset_version=17, input_names=["pixel_values"], output_names=["logits"],
                          dynamic_axes={"pixel_values": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"},
                                        "logits": {0: "batch_size"}})
    model = open_model(tmp_path / "hf.onnx", Options(input_size=(16, 20)))
    assert (model.spec.layout, model.spec.channels, model.spec.hw) == ("NCHW", 3, (16, 20))
    images = torch.randint(0, 256, (2, 3, 16, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = Normalised()(images.float() / 255)
    torch.testing.assert_close(model.logits(images), expected, atol=1e-5, rtol=1e-4)


class _StdConv2d(nn.Conv2d):  # weight standardisation in forward, as timm's StdConv2d (BiT's ResNetV2)
    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_a_first_convolution_of_a_computed_weight_shows_no_kernels_rather_than_a_later_layers(tmp_path):
    """torch's older exporter leaves a weight-standardised convolution's weight computed in the graph; the page's
    first-layer kernels were then those of the first Conv of a constant weight, here the 1 x 1 classifier head's."""
    torch.manual_seed(15)
    net = nn.Sequential(_StdConv2d(3, 8, 3, padding=1), nn.ReLU(), _StdConv2d(8, 8, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 3, 1), nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "std.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"])
    first = next(n for n in onnx.load(str(tmp_path / "std.onnx")).graph.node if n.op_type == "Conv")
    assert first.input[1] not in {t.name for t in onnx.load(str(tmp_path / "std.onnx")).graph.initializer}
    model = open_model(tmp_path / "std.onnx")
    assert model.kernels() is None
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(images), net(images.float() / 255), atol=1e-5, rtol=1e-4)


def test_an_onnx_file_newer_than_the_runtime_is_refused_with_the_runtimes_reason(tmp_path):
    """The reason onnxruntime gives comes through, not the C++ signature in front of it (200 characters of it, seen
    when onnxruntime 1.30 met onnx 1.23's newest IR version)."""
    weight = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((4, 3), np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 99  # no onnxruntime reads it
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "future.onnx")
    said = rf"onnxruntime {re.escape(ort.__version__)} cannot run \S+future.onnx \(\[ONNXRuntimeError\] : \d+ : \w+ : "
    assert re.fullmatch(said + r"Unsupported model IR version: 99, max supported IR version: \d+\)", str(e.value))


def test_an_onnx_transpose_of_a_value_of_no_inferred_shape_opens(tmp_path):
    """vit_b_16's ONNX export transposes a value whose shape ONNX shape inference leaves unknown (an Unsqueeze by
    axes it cannot compute): the layouts read its rank as 0, and opening the file failed with ZeroDivisionError."""
    weight = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3), dtype=np.float32), "w")
    fc = numpy_helper.from_array(np.random.default_rng(1).random((4, 5), dtype=np.float32), "fc")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=0),  # N x 4
             helper.make_node("ReduceMax", ["axes"], ["top"], keepdims=1),  # [3], computed
             helper.make_node("Sub", ["top", "one"], ["at"]),  # [2]
             helper.make_node("Unsqueeze", ["m", "at"], ["u"]),  # N x 4 x 1, of a rank shape inference cannot tell
             helper.make_node("Transpose", ["u"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Flatten", ["t"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [weight, fc, axes, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # onnx's newest IR version is newer than some onnxruntime releases read
    onnx.save(model, str(tmp_path / "u.onnx"))
    model = open_model(tmp_path / "u.onnx")
    assert len(model.classes) == 5
    result = analyze_image(model, torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert [r["kind"] for r in result["rows"]] == ["Conv", "Relu", "output"]


def _cntk_mnist(path, opset: int = 8) -> dict[str, np.ndarray]:
    """The ONNX Model Zoo's mnist-8 as CNTK wrote it (IR version 3: every initializer a graph input too; opset 8;
    ``opset`` 12 is mnist-12, of IR version 7):
    Conv (auto_pad SAME_UPPER) and an Add of a C x 1 x 1 bias twice, each then Relu and MaxPool, a Reshape of the
    maps to 1 x 256, and a MatMul by its Dense weight, stored 16 x 4 x 4 x 10 and reshaped to 256 x 10 by the
    graph's first node (``Times212_reshape1``), then an Add of the bias. Returns its float weights by name."""
    rng = np.random.default_rng(8)
    weights = {"Parameter5": (8, 1, 5, 5), "Parameter6": (8, 1, 1), "Parameter87": (16, 8, 5, 5),
               "Parameter88": (16, 1, 1), "Parameter193": (16, 4, 4, 10), "Parameter194": (1, 10)}
    weights = {name: (rng.standard_normal(shape) * 0.2).astype(np.float32) for name, shape in weights.items()}
    shapes = {"Pooling160_Output_0_reshape0_shape": np.array([1, 256], np.int64),
              "Parameter193_reshape1_shape": np.array([256, 10], np.int64)}
    same = {"kernel_shape": [5, 5], "strides": [1, 1], "auto_pad": "SAME_UPPER", "group": 1, "dilations": [1, 1]}
    nodes = [helper.make_node("Reshape", ["Parameter193", "Parameter193_reshape1_shape"], ["Parameter193_reshape1"],
                              name="Times212_reshape1"),
             helper.make_node("Conv", ["Input3", "Parameter5"], ["Convolution28_Output_0"], "Convolution28", **same),
             helper.make_node("Add", ["Convolution28_Output_0", "Parameter6"], ["Plus30_Output_0"], "Plus30"),
             helper.make_node("Relu", ["Plus30_Output_0"], ["ReLU32_Output_0"], "ReLU32"),
             helper.make_node("MaxPool", ["ReLU32_Output_0"], ["Pooling66_Output_0"], "Pooling66",
                              kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], auto_pad="NOTSET"),
             helper.make_node("Conv", ["Pooling66_Output_0", "Parameter87"], ["Convolution110_Output_0"],
                              "Convolution110", **same),
             helper.make_node("Add", ["Convolution110_Output_0", "Parameter88"], ["Plus112_Output_0"], "Plus112"),
             helper.make_node("Relu", ["Plus112_Output_0"], ["ReLU114_Output_0"], "ReLU114"),
             helper.make_node("MaxPool", ["ReLU114_Output_0"], ["Pooling160_Output_0"], "Pooling160",
                              kernel_shape=[3, 3], strides=[3, 3], pads=[0, 0, 0, 0], auto_pad="NOTSET"),
             helper.make_node("Reshape", ["Pooling160_Output_0", "Pooling160_Output_0_reshape0_shape"],
                              ["Pooling160_Output_0_reshape0"], "Times212_reshape0"),
             helper.make_node("MatMul", ["Pooling160_Output_0_reshape0", "Parameter193_reshape1"],
                              ["Times212_Output_0"], "Times212"),
             helper.make_node("Add", ["Times212_Output_0", "Parameter194"], ["Plus214_Output_0"], "Plus214")]
    initializers = [numpy_helper.from_array(v, k) for k, v in {**weights, **shapes}.items()]
    ir_version = 3 if opset < 9 else 7
    inputs = [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 28, 28])]
    if ir_version < 4:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "CNTKGraph", inputs,
                              [helper.make_tensor_value_info("Plus214_Output_0", TensorProto.FLOAT, [1, 10])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="CNTK",
                              ir_version=ir_version)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weights


def test_a_weight_the_graph_reshapes_is_its_layers_parameter_and_the_reshape_no_layer(tmp_path):
    """CNTK's graphs (the ONNX Model Zoo's mnist-8, the first ONNX file many open) reshape their Dense weight before
    the MatMul that reads it: the layer table showed a row ``Times212_reshape1 Reshape 256 x 10`` holding its 2,560
    parameters, and no row of the MatMul, the layer itself."""
    weights = _cntk_mnist(tmp_path / "mnist-8.onnx")
    model = open_model(tmp_path / "mnist-8.onnx")
    rows = {row["name"]: row for row in model.layers()}
    assert "Times212_reshape1" not in rows and "Times212_reshape0" not in rows
    assert (rows["Times212"]["op"], rows["Times212"]["shape"], rows["Times212"]["params"]) == ("MatMul", [10], 2560)
    assert [rows[name]["params"] for name in ("Convolution28", "Plus30", "Convolution110", "Plus112", "Plus214")] == \
        [200, 8, 3200, 16, 10]
    assert model_card(model)["params"] == sum(w.size for w in weights.values())
    # fed pixels / 255, as its README says, and scored as onnxruntime scores the file
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    session = ort.InferenceSession(str(tmp_path / "mnist-8.onnx"), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"Input3": image[None].float().numpy() / 255})[0]
                               for image in images])
    assert np.allclose(model.logits(images).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("quant_format, matmul, add", [("QDQ", "MatMul", "Add"),
                                                        ("QOperator", "QLinearMatMul", "QLinearAdd")])
def test_a_quantized_graphs_weights_are_counted_as_the_float_graphs(quant_format, matmul, add, tmp_path):
    """onnxruntime's quantization of mnist-12 (as the zoo's mnist-12-int8 is made) quantizes at run time the Dense
    weight the graph reshapes (a QuantizeLinear of the Reshape's output): those 2,560 parameters were counted in no
    row, and QOperator's com.microsoft QLinearAdd of each bias left the biases out too."""
    weights = _cntk_mnist(tmp_path / "mnist-12.onnx", opset=12)
    _quantize(tmp_path / "mnist-12.onnx", tmp_path / "q.onnx", quant_format, "Input3", (1, 1, 28, 28))
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {node.output[0]: node for node in graph.node}
    chain, value = [], next(node for node in graph.node if node.op_type == matmul).input[1 if matmul == "MatMul" else 3]
    while value in producers:  # the MatMul's weight, back to the initializer
        chain.append(producers[value].op_type)
        value = producers[value].input[0]
    assert chain[-2:] == ["QuantizeLinear", "Reshape"]  # quantized at run time, after the graph's Reshape
    model = open_model(tmp_path / "q.onnx")
    assert model_card(model)["params"] == sum(w.size for w in weights.values())
    rows = model.layers()
    assert [row["params"] for row in rows if row["op"] == matmul] == [2560]
    assert [row["params"] for row in rows if row["op"] == add] == [8, 16, 10]


def test_a_quantized_first_convolution_says_how_many_channels_it_takes(tmp_path):
    """A QOperator graph's first convolution is a QLinearConv, whose integer weight was not read for its input
    channels: a wrong --layout NHWC on the zoo's bvlcalexnet-12-int8 was taken, and refused only for the height x
    width it made of the input (3 x 224), not for the layout."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5)).eval()
    _quantized(net, tmp_path / "f.onnx", tmp_path / "q.onnx", "QOperator")
    assert onnx.load(str(tmp_path / "q.onnx")).graph.node[1].op_type == "QLinearConv"
    with pytest.raises(CnnlabError, match=r"^--layout NHWC reads input 'x' \(1 x 3 x 16 x 16\) as 16 channels, but "
                                          r"its first convolution takes 3; expected --layout NCHW, or no --layout"):
        open_model(tmp_path / "q.onnx", Options(layout="NHWC"))
    assert open_model(tmp_path / "q.onnx").spec.layout == "NCHW"


def test_shape_inference_is_handed_the_graph_without_its_weights(tmp_path, monkeypatch):
    """ONNX shape inference reads an initializer's type and dims, not its values: it was handed a copy of the whole
    file, which it serialises and parses twice more, so that opening a large graph (the ONNX Model Zoo's AlexNet and
    VGG files are hundreds of MB) held its weights several times over at once. The shapes it gives are the same."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (64, 3, 3, 3)), ("w2", (64, 64, 3, 3)), ("fc", (5, 64)))]
    target = numpy_helper.from_array(np.array([1, 64], np.int64), "flat")  # a shape data propagation reads
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]), helper.make_node("Reshape", ["g", "flat"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [*weights, target])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.save(model, str(tmp_path / "w.onnx"))
    handed, infer = [], onnx.shape_inference.infer_shapes

    def recording(proto, *args, **kwargs):
        handed.append(proto.ByteSize())
        return infer(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", recording)
    opened = open_model(tmp_path / "w.onnx")
    assert handed and max(handed) < model.ByteSize() / 10  # w2's 36,864 values (of 39,104) are left as their dims
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # as the explorer fixes it, on the whole graph
    full = infer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), data_prop=True)
    assert {v.name: opened.shapes[v.name] for v in full.graph.value_info} == \
        {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in full.graph.value_info}
    assert opened.shapes["f"] == [1, 64]  # through the Reshape: its shape's values were there to read


def _small_classifier(path, opset: int, ir_version: int = 7, before: tuple = (), after_conv: tuple = (),
                      constants: tuple = (), weight: str = "w") -> None:
    """A classifier of 3 x 8 x 8 images (input ``image``) and 5 classes built with onnx.helper, as the older converters
    wrote them: Conv (``c``), Relu, GlobalAveragePool, Flatten, Gemm with ``transB`` (``broadcast`` below operator
    set 7). ``before`` are nodes from ``image`` to the Conv's input ``x`` (or to the Conv's ``weight``, where it is no
    initializer ``w``), ``after_conv`` from ``c`` to the Relu's input ``u``, with their ``constants``; below IR
    version 4 every initializer is a graph input too."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (4, 3, 3, 3)), ("fc", (5, 4)), ("b", (5,)))] + list(constants)
    image = "x" if any("x" in node.output for node in before) else "image"
    nodes = [*before, helper.make_node("Conv", [image, weight], ["c"], pads=[1, 1, 1, 1]),
             *after_conv, helper.make_node("Relu", ["u" if after_conv else "c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["y"], transB=1, **({"broadcast": 1} if opset < 7 else {}))]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])]
    if ir_version < 4:  # initializers were graph inputs too, as in the Caffe2 and CNTK files of the ONNX Model Zoo
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version),
              str(path))


@pytest.mark.parametrize("op, weight, attributes", [
    ("Cast", np.ones((4, 3, 3, 3), np.float16), {"to": TensorProto.FLOAT}),  # a float16 graph's op kept in float32
    ("Reshape", np.ones((4, 27), np.float32), {}),
    ("Transpose", np.ones((3, 4, 3, 3), np.float32), {"perm": [1, 0, 2, 3]}),
])
def test_a_convolutions_weight_the_graph_casts_or_rearranges_is_its_parameter(op, weight, attributes, tmp_path):
    """A Conv whose weight reaches it through a Cast (a graph converted to float16 but for some ops), a Reshape or a
    Transpose of an initializer: the Cast's (or Reshape's) row held the 108 parameters and the Conv's none."""
    shape = numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), "shape")
    inputs = ["w_stored", "shape"] if op == "Reshape" else ["w_stored"]
    _small_classifier(tmp_path / "w.onnx", 13, before=(helper.make_node(op, inputs, ["w_used"], **attributes),),
                      constants=(numpy_helper.from_array(weight, "w_stored"), shape), weight="w_used")
    rows = {row["op"]: row["params"] for row in open_model(tmp_path / "w.onnx").layers()}
    assert op not in rows and rows["Conv"] == 108


@pytest.mark.parametrize("opset", [9, 13])
def test_an_upsamples_scales_are_no_parameters(opset, tmp_path):
    """The scales an Upsample (opset 9) or a Resize (opset 13: its region of interest and scales) reads from
    initializers were counted as the layer's parameters: 4 of an 8 x 8 upsampling by 2."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    if opset == 9:
        upsample = helper.make_node("Upsample", ["c", "scales"], ["u"], mode="nearest")
        constants = (scales,)
    else:
        upsample = helper.make_node("Resize", ["c", "roi", "scales"], ["u"], mode="nearest")
        constants = (numpy_helper.from_array(np.zeros(8, np.float32), "roi"), scales)
    _small_classifier(tmp_path / "up.onnx", opset, after_conv=(upsample,), constants=constants)
    model = open_model(tmp_path / "up.onnx")
    assert model_card(model)["params"] == 4 * 3 * 3 * 3 + 5 * 4 + 5
    assert not any(row["params"] for row in model.layers() if row["op"] in ("Upsample", "Resize"))


@pytest.mark.parametrize("opset, op", [(3, "Relu"), (6, "Gemm")])
def test_an_operator_set_older_than_onnxruntime_runs_says_which_it_needs(opset, op, tmp_path):
    """The ONNX Model Zoo keeps its Caffe2 classifiers at operator sets 3 and 6 too (bvlcalexnet-3, -6), which
    onnxruntime does not run: the line said only that it found no implementation of "Relu(1)" or "Gemm(6)", not
    what file to bring instead."""
    _small_classifier(tmp_path / "old.onnx", opset, ir_version=3)
    with pytest.raises(CnnlabError) as e:
        open_model(tmp_path / "old.onnx")
    said = str(e.value)
    assert "\n" not in said and f"Could not find an implementation for {op}(" in said
    assert said.endswith(f": its ONNX operator set is {opset}, and onnxruntime runs 7 and later; expected a file of "
                         "operator set 7 or later (the ONNX Model Zoo keeps each model at later ones too; "
                         "onnx.version_converter.convert_version(model, 7) converts some graphs)")


@pytest.mark.parametrize("scale, bias", [(2 / 255, [-1.0, -1.0, -1.0]), (1 / 58.0, [-2.1, -2.0, -1.8])])
def test_an_image_scaler_is_the_graphs_own_scaling(scale, bias, tmp_path):
    """ONNX's experimental ImageScaler (operator sets 1-9), which Core ML's converters write for an image input's
    scale and per-channel bias, scales the pixel values themselves: the graph was fed pixels / 255, scaled a second
    time into a nearly constant picture."""
    _small_classifier(tmp_path / "scaler.onnx", 9, ir_version=4,
                      before=(helper.make_node("ImageScaler", ["image"], ["x"], scale=scale, bias=bias),))
    model = open_model(tmp_path / "scaler.onnx")
    assert model.spec.origin["pixel range"] == "graph's own scaling"
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8))
    session = ort.InferenceSession(str(tmp_path / "scaler.onnx"), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"image": image[None].float().numpy()})[0] for image in images])
    assert np.allclose(model.logits(images).numpy(), expected, atol=1e-4)


def test_a_graph_of_one_value_an_image_is_said_to_have_no_class_axis(tmp_path):
    """An ONNX output of one value per image (N) was said to have "shape 1" (the probe's one image), which reads as one
    class: its one axis is the batch's, and the line says so."""
    graph = helper.make_graph([helper.make_node("ReduceMax", ["image"], ["score"], keepdims=0, axes=[1, 2, 3])], "one",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "one.onnx")
    with pytest.raises(CnnlabError, match=r"its output 'score' has shape N \(one value an image, no class axis\), "
                                          r"expected N x classes"):
        open_model(tmp_path / "one.onnx")


class _OneValueAnImage(nn.Module):
    """A network of maps of two sizes (8 x 8, then 4 x 4) that ends in one value an image: no backbone's features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.down(F.relu(self.conv(x))).amax((1, 2, 3))


def test_a_free_batch_graph_of_one_value_an_image_is_refused_for_its_own_outputs_alone(tmp_path):
    """A graph of a free batch whose one output is one value an image is refused for that output alone: its stages'
    maps, which the explorer adds as outputs of its copy of the graph, were read as the graph's own, and their two
    sizes hinted "maps at several scales are a backbone's features" of a graph that returns none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_OneValueAnImage().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "one.onnx"),
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    with pytest.raises(CnnlabError, match=r"its output 'y' has shape N \(one value an image, no class axis\), "
                                          r"expected N x classes; cnnlab explore"):
        open_model(tmp_path / "one.onnx")


def test_a_free_batch_run_together_by_a_flatten_of_axis_0_is_run_one_image_at_a_time_saying_why(tmp_path):
    """A graph of a free batch ending in a Flatten of axis 0 (1 x 5 for one image, 1 x 10 for two) is run one image at
    a time, each image's scores onnxruntime's; the page said it "fails on two images at once", which it does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(explore_support.Scorer(5).eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "scores.onnx"),
                          dynamo=False, input_names=["x"], output_names=["scores"], dynamic_axes={"x": {0: "N"}})
    graph = onnx.load(str(tmp_path / "scores.onnx"))
    graph.graph.node.append(helper.make_node("Flatten", ["scores"], ["y"], axis=0))
    graph.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "all"]))
    onnx.save(graph, str(tmp_path / "flat.onnx"))
    model = open_model(tmp_path / "flat.onnx")
    assert "The graph's batch axis is free, but it returns 1 x 10 for two images, not a row each: images are run one " \
        "at a time." in model.notes
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    session = ort.InferenceSession(str(tmp_path / "flat.onnx"), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"x": model.spec.to_input(image[None]).numpy()})[0]
                               for image in images])
    assert np.allclose(model.logits(images).numpy(), expected, atol=1e-6)


def test_a_graph_of_a_fixed_batch_whose_scores_run_together_is_refused_for_what_it_returns(tmp_path):
    """A graph fixed to 2 images whose scores end in a Reshape to [-1] (10 values for the 2) was told "shape N (one
    value an image, no class axis)", which it is not; which values are whose cannot be told (2 x 5 or 5 x 2), so it
    is refused, saying what it returns for the images it takes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(explore_support.DropsBatchAxis("reshape(-1)").eval(), (torch.zeros(2, 1, 8, 8),),
                          str(tmp_path / "two.onnx"), dynamo=False, input_names=["x"], output_names=["y"])
    with pytest.raises(CnnlabError, match=r"^\S*two.onnx is not a classifier: its output 'y' has shape 10 for the 2 "
                                          r"images it takes at once \(no axis of them\), expected N x classes"):
        open_model(tmp_path / "two.onnx")


def test_eval_of_a_hugging_face_export_frames_each_picture_of_a_folder_as_its_processor_does(tmp_path, capsys):
    """eval of a labelled folder feeds a Hugging Face export each picture as its image processor frames it (the
    shorter side resized with its filter, the centre cropped), as the explorer and predict do: it cropped each
    picture's square centre before resizing it, which keeps the shorter side's edges the processor crops away. The
    network answers the brightest colour channel; each picture is one colour with a band of another along the edges
    of its shorter side, filed under the colour the processor's framing shows the network (the background's)."""

    _hugging_face_export(tmp_path / "rgb", CONVNEXT, {"0": "red", "1": "green", "2": "blue"},
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    for k, (wh, ground, band) in enumerate([((40, 22), 0, 1), ((22, 40), 1, 2), ((44, 24), 2, 0), ((24, 44), 0, 2)]):
        picture = np.zeros((wh[1], wh[0], 3), dtype=np.uint8)
        picture[..., ground] = 120
        edges = (slice(0, 4), slice(-4, None))  # rows of a wide picture, columns of a tall one
        for edge in edges:
            picture[(edge, slice(None)) if wh[0] > wh[1] else (slice(None), edge)] = 0
            picture[(edge, slice(None), band) if wh[0] > wh[1] else (slice(None), edge, band)] = 255
        folder = tmp_path / "pics" / ("red", "green", "blue")[ground]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f"p{k}.png")
    assert main(["eval", str(tmp_path / "rgb" / "model.onnx"), "--dataset", f"folder:{tmp_path / 'pics'}",
                 "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 4 and scored["accuracy"] == 1.0


@pytest.mark.parametrize("end, free", [("squeeze(0)", False), ("reshape(-1)", False), ("reshape(-1)", True)])
def test_a_graph_of_one_image_that_drops_the_batch_axis_is_read_as_its_images_class_scores(end, free, tmp_path,
                                                                                          capsys):
    """A graph whose class scores lose the batch axis at the end (a Squeeze, a Reshape to [-1]: 5 values for one
    image) was read as "shape N (one value an image, no class axis)" and refused by predict and eval; a free batch's
    Reshape gives 10 values for 2 images. Its 5 values for one image are that image's: each image is run alone, its
    scores given their batch axis back, equal to onnxruntime's for the file; predict of a folder answers as the graph
    that keeps the axis (fixed to one image, fed one at a time) does, and eval scores alike."""
    net = explore_support.DropsBatchAxis(end).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "one.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}} if free else None)
        torch.onnx.export(net.scorer, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "kept.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"])
    model = open_model(tmp_path / "one.onnx")
    assert model.classes == tuple(f"class {k}" for k in range(5))
    assert any("The graph's output 'y' has no batch axis (5 values for one image" in n for n in model.notes)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    session = ort.InferenceSession(str(tmp_path / "one.onnx"), providers=["CPUExecutionProvider"])
    expected = np.stack([session.run(None, {"x": model.spec.to_input(image[None]).numpy()})[0] for image in images])
    assert expected.shape == (3, 5)
    assert np.allclose(model.logits(images).numpy(), expected, atol=1e-6)
    folder = tmp_path / "pics"
    for k, name in enumerate(["a", "b"]):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(images[k + i, 0].numpy()).save(folder / name / f"{i}.png")
    answers = {}
    for file in ("one.onnx", "kept.onnx"):
        assert main(["predict", str(tmp_path / file), str(folder / "a"), str(folder / "b")]) == 0
        answers[file] = capsys.readouterr().out
    assert answers["one.onnx"] == answers["kept.onnx"] and answers["one.onnx"].count("class ") == 12
    scored = {}
    for file in ("one.onnx", "kept.onnx"):
        assert main(["eval", str(tmp_path / file), "--dataset", f"folder:{folder}", "--classes",
                     str(_classes_file(tmp_path)), "--json"]) == 0
        scored[file] = json.loads(capsys.readouterr().out)
    assert scored["one.onnx"]["n"] == 4
    assert {k: v for k, v in scored["one.onnx"].items() if k not in ("checkpoint", "model")} == \
        {k: v for k, v in scored["kept.onnx"].items() if k not in ("checkpoint", "model")}


def _classes_file(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("a\nb\nc\nd\ne\n")
    return path


class _DropsBatchAxisDetector(nn.Module):
    """A detector of one image at a time that drops the batch axis: its 10 best scores and their boxes (10 x 4)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        scores = F.relu(self.conv(x)).flatten()[:10]
        return scores, torch.stack([scores] * 4, 1)


@pytest.mark.parametrize("free", [False, True])
def test_a_detector_of_one_image_that_drops_the_batch_axis_is_no_classifier(free, tmp_path, capsys):
    """A detector's 10 scores beside its 10 x 4 boxes, the batch axis dropped, are 10 detections, not 10 classes:
    they were read as a classifier's scores (predict answered "class 7"); predict refuses it in one line, and explore
    opens it as the network it is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_DropsBatchAxisDetector().eval(), (torch.zeros(1, 1, 16, 16),), str(tmp_path / "det.onnx"),
                          dynamo=False, input_names=["x"], output_names=["scores", "boxes"],
                          dynamic_axes={"x": {0: "N"}} if free else None)
    picture = tmp_path / "p.png"
    Image.new("L", (16, 16)).save(picture)
    assert main(["predict", str(tmp_path / "det.onnx"), str(picture)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "det.onnx is not a classifier: its output 'scores' has shape 10 for one image (no " \
        "batch axis), expected N x classes" in err[0], err
    model = open_model(tmp_path / "det.onnx", Options(any_network=True))
    assert model.scoring is None and model.classes == ()
