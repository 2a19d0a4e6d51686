"""cnnlab explore for any CNN: one model abstraction over cnnlab runs, ONNX graphs and PyTorch models.

The models are made here: a cnnlab LeNet trained a few steps and exported by cnnlab's own export (ONNX and .pt2),
torchvision's mobilenet_v3_small and resnet18 with seeded random weights exported by the test, an NHWC graph built
with onnx.helper, and bad files of every kind. Torch is the oracle for every number.
"""

from __future__ import annotations

import copy
import http.client
import io
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore import imagefolder
from cnnlab.explore.gradcam import explain_with
from cnnlab.explore.imagefolder import list_images
from cnnlab.explore.images import MAX_UPLOAD_BYTES
from cnnlab.explore.model import Options, analyze_image, model_card, occlusion, occlusion_pngs, patch_pixels
from cnnlab.explore.outputs import Scoring, read_classes
from cnnlab.explore.probe import map_rows
from cnnlab.explore.sources import open_model, open_with_images
from cnnlab.report.features import Row
from test_explore_api import make_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CLASSES = ("zero", "one", "two", "three")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory):
    """Class subfolders of 28 x 28 grey pictures with a bright square (so the maps are not flat)."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(2):
            a = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            a[4 + 4 * c:14 + 4 * c, 6:20] = 230
            (root / name / f"{i}.png").write_bytes(_png(a))
    return root


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """A flat folder of RGB pictures of different shapes (padded and resized when read)."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(40, 50), (64, 64), (30, 20)]):
        (root / f"p{i}.png").write_bytes(_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    (root / "notes.txt").write_text("not an image, not read")
    return root


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A cnnlab LeNet trained a few steps, its checkpoint, and cnnlab's own ONNX and .pt2 exports of it."""
    from cnnlab.export import export_checkpoint

    root = tmp_path_factory.mktemp("lenet")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, len(CLASSES), (64,), generator=g)
    run = make_run(root / "run", model="lenet", classes=CLASSES, channels=1, size=28, dataset="fashion-mnist",
                   train=(images, labels), test=(images[:16], labels[:16]), epochs=1, steps=3)
    files = {"run": run / "last.pt"}
    for fmt in ("onnx", "pt2"):
        files[fmt] = export_checkpoint(run / "last.pt", root / f"lenet.{fmt}", format=fmt)
    return files


def test_feature_maps_agree_across_kinds(lenet, grey_folder):
    """The run, its ONNX export and its .pt2 show the same feature maps and probabilities for the same image."""
    models = {kind: open_with_images(path, grey_folder)[0] for kind, path in lenet.items()}
    assert [models[k].kind for k in ("run", "onnx", "pt2")] == ["cnnlab run", "ONNX", "torch.export"]
    assert all(m.classes == CLASSES for m in models.values())  # the exports carry the class names
    _, images = open_with_images(lenet["run"], grey_folder)
    for image in images.images[:3]:
        rows = {kind: m.stages(image) for kind, m in models.items()}
        spatial = [r for r in rows["run"] if r.output.dim() == 4]
        assert len(spatial) == 4  # LeNet: conv+sigmoid, pool, conv+sigmoid, pool
        for row in spatial:
            for kind in ("onnx", "pt2"):
                same = [r for r in rows[kind] if r.output.shape == row.output.shape
                        and torch.allclose(r.output.float(), row.output.float(), atol=1e-4)]
                assert same, f"{kind} has no stage equal to the run's {row.name} {tuple(row.output.shape)}"
        # cnnlab's ONNX export names its stages by module path, as its .pt2 does (its nodes: node_Conv_0, ...)
        assert [r.name for r in rows["onnx"][:-1]] == [r.name for r in rows["pt2"][:-1]]
        probs = {k: r[-1].output.softmax(1) for k, r in rows.items()}
        assert torch.allclose(probs["onnx"], probs["run"], atol=1e-5)
        assert torch.allclose(probs["pt2"], probs["run"], atol=1e-5)
    kernels = {k: m.kernels() for k, m in models.items()}
    assert torch.equal(kernels["onnx"], kernels["run"]) and torch.equal(kernels["pt2"], kernels["run"])
    # ONNX counted the Reshape's target shape too (2 more than the module's parameters)
    params = {k: model_card(m)["params"] for k, m in models.items()}
    assert params["onnx"] == params["pt2"] == params["run"] > 0, params
    # Grad-CAM through the .pt2 program's interpreter equals Grad-CAM through the run's own stages.
    image = images.images[0]
    a_run, a_pt2 = (analyze_image(models[k], image) for k in ("run", "pt2"))
    assert a_run["explanation"]["method"] == a_pt2["explanation"]["method"] == "grad-cam"
    assert [t["class"] for t in a_run["top"]] == [t["class"] for t in a_pt2["top"]]
    occ = analyze_image(models["onnx"], image)["explanation"]
    assert occ["method"] == "occlusion" and occ["grid"] == [7, 7] and occ["occlusion"].startswith("data:image/png")


def test_occlusion_runs_a_large_image_in_batches_of_a_bounded_pixel_count(monkeypatch):
    # All 50 images went to the model in one batch: a 124-parameter ONNX graph took 10.5 GB at 1024 px, and at
    # 2048 px the kernel killed it.
    import cnnlab.explore.model as explore_model

    batches = []

    class Corner:  # class 0 scores the brightness of the top-left corner
        classes = ("corner", "none")
        scoring = Scoring(2)

        def logits(self, images):
            batches.append(images.shape[0])
            score = images[:, :, :300, :300].float().mean((1, 2, 3)) / 255 * 10
            return torch.stack([score, -score], 1)

    image = torch.randint(0, 256, (1, 1024, 1024), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    drop = occlusion(Corner(), image, 0)
    assert batches == [2] * 25  # the image and its 49 covered copies, two at a time
    assert 2 * 1024 * 1024 <= explore_model.OCCLUSION_PIXELS < 3 * 1024 * 1024
    monkeypatch.setattr(explore_model, "OCCLUSION_PIXELS", 10 ** 12)
    batches.clear()
    assert torch.equal(occlusion(Corner(), image, 0), drop) and batches == [50]  # the same map, in one batch
    monkeypatch.undo()
    batches.clear()
    occlusion(Corner(), image[:, :224, :224], 0)
    assert batches == [50]  # at 224 px, one batch still


@pytest.mark.parametrize("hw", [(64, 64), (32, 32), (10, 10), (28, 28), (16, 40), (40, 12)])
def test_occlusion_paints_each_patch_on_the_pixels_it_hid(hw):
    # The map was stretched over the image as if patches were side / 7 wide; they are ceil(side / 7) pixels, so at
    # 64 px the patch hiding rows 50..59 was painted on 46..54 (and at 10 px, 7 x 7 cells ran past the image).
    # A rectangle has patches of its own length along each side.
    steps = [-(-side // 7) for side in hw]
    cells = [-(-side // step) for side, step in zip(hw, steps, strict=True)]
    (lo_h, hi_h), (lo_w, hi_w) = (((n - 2) * step, (n - 1) * step) for n, step in zip(cells, steps, strict=True))

    class Spot:  # class 0 scores the brightness of one patch alone: the next to last along each side
        classes = ("spot", "none")
        scoring = Scoring(2)

        def logits(self, images):
            score = images[:, :, lo_h:hi_h, lo_w:hi_w].float().mean((1, 2, 3)) / 255 * 10
            return torch.stack([score, torch.zeros_like(score)], 1)

    image = torch.zeros(1, *hw, dtype=torch.uint8)
    image[:, lo_h:hi_h, lo_w:hi_w] = 255
    drop = occlusion(Spot(), image, 0)
    assert tuple(drop.shape) == tuple(cells) and divmod(int(drop.argmax()), cells[1]) == (cells[0] - 2, cells[1] - 2)
    hidden = patch_pixels(drop, hw) > 0
    rows, cols = torch.where(hidden)
    assert (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1) == (lo_h, hi_h, lo_w, hi_w)
    assert occlusion_pngs(Spot(), image, 0)["grid"] == cells


def _torchvision(name: str, size: int, tmp_path):
    """A seeded torchvision model, exported by the test to ONNX (dynamic batch) and .pt2 (fixed batch 2)."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=5).eval()
    x = torch.rand(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False, input_names=["images"],
                                    output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        program.save(str(tmp_path / f"{name}.onnx"), external_data=False)
        torch.export.save(torch.export.export(model, (x,)), str(tmp_path / f"{name}.pt2"))
    (tmp_path / f"tv_{name}.py").write_text(
        f"import torch, torchvision\n\ndef build():\n    torch.manual_seed(0)\n"
        f"    return torchvision.models.{name}(num_classes=5)\n")
    return model


FIRST_CONVS = '''
import torch
from torch import nn


class HeadFirst(nn.Module):  # the 1 x 1 head is registered before the stem that reads the image
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(16, 5, 1)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.head(self.stem(x)).mean((2, 3))


class Depthwise(nn.Module):  # the first conv is depthwise: its weight is 3 x 1 x 3 x 3 for 3 channels
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.ReLU(), nn.Conv2d(3, 8, 1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def head_first():
    return HeadFirst()


def depthwise():
    return Depthwise()
'''


CARRYING = '''
from types import SimpleNamespace

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def hugging_face():  # as a transformers classifier built from its config carries its labels and size
    net = Net()
    net.config = SimpleNamespace(id2label={0: "cat", 1: "dog", 2: "fox"}, image_size=16)
    return net


def placeholders():  # a config's default labels name nothing
    net = Net()
    net.config = SimpleNamespace(id2label={"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}, image_size=[12, 20])
    return net


def timm():  # as a timm model carries the input size and normalisation of its weights
    net = Net()
    net.pretrained_cfg = {"input_size": (3, 24, 24), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}
    return net
'''


def test_a_library_models_labels_size_and_normalisation_are_read_from_it(tmp_path, monkeypatch):
    """A Hugging Face model's config.id2label and image_size, a timm model's pretrained_cfg: the page showed class 0 ...
    and asked for --input-size, and a timm model was fed unnormalised pixels without a word."""
    (tmp_path / "carrying.py").write_text(CARRYING)
    monkeypatch.syspath_prepend(str(tmp_path))
    hf = open_model("carrying:hugging_face")
    assert hf.classes == ("cat", "dog", "fox") and hf.spec.hw == (16, 16)
    assert "Class names: the model's config.id2label." in hf.notes[0]
    assert "size from the model's config.image_size" in hf.spec.describe()
    named = open_model("carrying:placeholders")
    assert named.classes == ("class 0", "class 1", "class 2") and named.spec.hw == (12, 20)
    timm = open_model("carrying:timm")
    assert timm.spec.hw == (24, 24) and timm.spec.mean == (0.5, 0.4, 0.3) and timm.spec.std == (0.2, 0.25, 0.3)
    assert "normalisation from the model's pretrained_cfg" in timm.spec.describe()
    images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(timm.logits(images), timm.model((images / 255 - mean) / std))
    # the flags come first
    given = open_model("carrying:timm", Options(input_size=32, mean=[0.5], std=[0.5]))
    assert given.spec.hw == (32, 32) and given.spec.mean == (0.5,) * 3 and "from the flags" in given.spec.describe()
    (tmp_path / "names.txt").write_text("ant\nbee\neel\n")
    assert open_model("carrying:hugging_face", Options.from_flags(classes=tmp_path / "names.txt")).classes == \
        ("ant", "bee", "eel")


def test_the_input_channels_are_those_of_the_convolution_that_reads_the_image(tmp_path, monkeypatch):
    # The channels came from the first conv's weight.shape[1] (in_channels / groups: 1 for a depthwise stem) and,
    # for module:function, from the first conv registered (a head): each model was refused, with no flag to help.
    (tmp_path / "first_convs.py").write_text(FIRST_CONVS)
    monkeypatch.syspath_prepend(str(tmp_path))
    head_first = open_model("first_convs:head_first", Options(input_size=16))
    assert head_first.spec.channels == 3 and tuple(head_first.kernels().shape) == (16, 3, 3, 3)
    model = open_model("first_convs:depthwise", Options(input_size=16))
    assert model.spec.channels == 3 and tuple(model.kernels().shape) == (3, 1, 3, 3)
    x = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.model, (x,), str(tmp_path / "depthwise.onnx"), dynamo=False,
                          input_names=["images"])
        torch.export.save(torch.export.export(model.model, (x,)), str(tmp_path / "depthwise.pt2"))
    for path, options in ((tmp_path / "depthwise.onnx", Options()), (tmp_path / "depthwise.onnx",
                                                                     Options(layout="NCHW")),
                          (tmp_path / "depthwise.pt2", Options())):
        assert open_model(path, options).spec.channels == 3, (path, options)


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


class TwoHeads(nn.Module):
    """Logits of 6 classes and an auxiliary head's 3 scores, as GoogLeNet returns them in training."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.fc, self.aux = nn.Linear(4, 6), nn.Linear(4, 3)

    def forward(self, x):
        features = self.features(x).mean((2, 3))
        return self.fc(features), self.aux(features)


def test_a_model_of_two_outputs_is_read_by_its_first_in_every_kind(tmp_path):
    # The module and the .pt2 were refused ("returns a tuple of 2"), while the ONNX graph was read by its first.
    from cnnlab.explore.module_model import ModuleModel

    net = TwoHeads().eval()
    models = {"module": ModuleModel(net, "two", Options(input_size=8)),
              "pt2": open_model(_pt2_of(net, tmp_path / "two.pt2")),
              "onnx": open_model(_onnx_of(net, tmp_path / "two.onnx"))}
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = net(images.float() / 255)[0]
    for kind, model in models.items():
        assert len(model.classes) == 6, kind
        assert torch.allclose(model.logits(images), logits, atol=1e-5), kind
        for image, own in zip(images, logits, strict=True):
            assert [t["index"] for t in analyze_image(model, image)["top"]] == own.topk(5).indices.tolist(), kind
        [note] = [n for n in model.notes if "outputs:" in n]
        assert note.startswith(f"The {model.scoring.noun} has 2 outputs: its first, ") and \
            "is read as the class scores (not " in note, kind
    assert "The module has 2 outputs: its first, N x 6, is read as the class scores (not N x 3)." in \
        models["module"].notes


class FirstOfTwoTransposed(TwoHeads):
    """Two outputs whose first, a float 2-d tensor, is not one row an image: the logits averaged over the batch."""

    def forward(self, x):
        logits, aux = super().forward(x)
        return logits.mean(0, keepdim=True), aux


def test_a_first_of_several_outputs_with_the_wrong_rows_is_refused_as_the_first_of_them():
    # The refusal read "returns 1 x 6" of a model that returned a tuple: the shape shown was of its first output
    from cnnlab.explore.module_model import ModuleModel

    with pytest.raises(CnnlabError) as e:
        ModuleModel(FirstOfTwoTransposed().eval(), "two", Options(input_size=8))
    assert "is not a classifier: for 2 images its first of 2 outputs, read as the class scores, is 1 x 6, expected " \
        "2 x classes of float logits" in str(e.value)


def test_a_diverged_models_probabilities_are_none_on_both_pages():
    # NaN went out as null from the server (0.0% on its page) and as NaN into the static page (NaN%)
    from cnnlab.explore.module_model import ModuleModel

    class Diverged(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3))) * float("nan")

    model = ModuleModel(Diverged(), "diverged", Options(input_size=8))
    result = analyze_image(model, torch.zeros(1, 8, 8, dtype=torch.uint8))
    assert [t["probability"] for t in result["top"]] == [None] * 3
    json.dumps(result["top"], allow_nan=False)  # the same JSON for the server and the static page


class Scorer(nn.Module):
    """A grey 8 x 8 classifier of ``outputs`` scores, optionally ending in a sigmoid or a softmax (probabilities),
    then a Flatten (changes nothing, as such tails do)."""

    def __init__(self, outputs: int, sigmoid: bool = False, fc: torch.Tensor | None = None, softmax: bool = False):
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, outputs)
        if fc is not None:
            self.fc.weight.data, self.fc.bias.data = fc[:, :4].clone(), fc[:, 4].clone()
        self.final = nn.Sigmoid() if sigmoid else nn.Softmax(1) if softmax else nn.Identity()
        self.flat = nn.Flatten()

    def forward(self, x):
        return self.flat(self.final(self.fc(F.relu(self.conv(x)).mean((2, 3)))))


def _pt2_of(module: nn.Module, path):
    torch.export.save(torch.export.export(module.eval(), (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)), path)
    return path


def _onnx_of(module: nn.Module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def test_a_binary_classifier_of_one_output_is_two_classes(tmp_path):
    # A model of one output (a logit, trained with BCEWithLogitsLoss) was refused as "not a classifier".
    from cnnlab.explore.module_model import ModuleModel

    one = Scorer(1)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p1 = one(images.float() / 255)[:, 0].sigmoid()  # torch: class 1's probability
    # The oracle for everything else: the same network written as two classes, scores -z/2 and z/2.
    fc = torch.cat([one.fc.weight.data, one.fc.bias.data[:, None]], 1)
    two = ModuleModel(Scorer(2, fc=torch.cat([-fc / 2, fc / 2])), "two", Options(input_size=8))
    models = {"module": ModuleModel(one, "one", Options(input_size=8)),
              "onnx": open_model(_onnx_of(one, tmp_path / "one.onnx")),
              "onnx, ending in Sigmoid": open_model(_onnx_of(Scorer(1, sigmoid=True), tmp_path / "sig.onnx")),
              "module ending in Sigmoid": ModuleModel(Scorer(1, sigmoid=True), "sig", Options(input_size=8)),
              "pt2 ending in Sigmoid": open_model(_pt2_of(Scorer(1, sigmoid=True), tmp_path / "sig.pt2"))}
    for kind, model in models.items():
        assert model.classes == ("class 0", "class 1"), kind
        assert any(n.startswith("One output: read as a binary classifier's logit z") for n in model.notes), kind
        probs = model.scoring.probabilities(model.logits(images))
        assert torch.allclose(probs, torch.stack([1 - p1, p1], 1), atol=1e-5), kind
        result, oracle = analyze_image(model, images[0]), analyze_image(two, images[0])
        assert [t["class"] for t in result["top"]] == [t["class"] for t in oracle["top"]], kind
        assert [t["probability"] for t in result["top"]] == pytest.approx(
            [t["probability"] for t in oracle["top"]], abs=1e-5), kind
    for target in (0, 1):  # Grad-CAM of either class: the two-class network's, map for map
        got, want = models["module"].attribution(images[0], target), two.attribution(images[0], target)
        assert got == want
    # A confident answer through a final sigmoid (z = -40, p = 4e-18) keeps its gradient: torch.logit's eps clamped
    # p, and Grad-CAM went blank.
    confident = Scorer(1, sigmoid=True)
    confident.fc.bias.data.fill_(-40.0)
    plain = Scorer(1)
    plain.fc.bias.data.fill_(-40.0)
    sure, logit = (ModuleModel(m, "m", Options(input_size=8)) for m in (confident, plain))
    assert sure.scoring.ends_in == "Sigmoid" and logit.scoring.ends_in is None
    assert torch.allclose(sure.logits(images), logit.logits(images), rtol=1e-5)
    for target in (0, 1):
        got, want = sure.attribution(images[0], target), logit.attribution(images[0], target)
        assert not got["empty"] and got["gradcam"] == want["gradcam"], target
    names = tmp_path / "names.txt"
    names.write_text("dog\n")
    with pytest.raises(CnnlabError, match=r"^--classes names 1 classes, but the model has 1 output, read as a "
                                          r"binary classifier of 2 classes$"):
        ModuleModel(one, "one", Options(input_size=8, classes=("dog",)))
    assert ModuleModel(one, "one", Options(input_size=8, classes=("cat", "dog"))).classes == ("cat", "dog")


def test_a_multi_label_model_gives_each_class_its_own_probability(tmp_path):
    # Its sigmoid outputs were read as logits: a softmax over probabilities, every figure on the page wrong.
    import onnxruntime as ort

    from cnnlab.explore.module_model import ModuleModel

    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    logits = Scorer(3)
    with torch.no_grad():
        want = logits(images.float() / 255).sigmoid()
    path = _onnx_of(Scorer(3, sigmoid=True), tmp_path / "multi.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    own = torch.from_numpy(session.run(None, {"x": (images.float() / 255).numpy()})[0])
    assert torch.allclose(own, want, atol=1e-6)
    models = {"module --multi-label": ModuleModel(logits, "m", Options(input_size=8, multi_label=True)),
              "onnx ending in Sigmoid": open_model(path),
              "onnx of logits --multi-label": open_model(_onnx_of(logits, tmp_path / "logits.onnx"),
                                                         Options(multi_label=True)),
              "module ending in Sigmoid": ModuleModel(Scorer(3, sigmoid=True), "s", Options(input_size=8)),
              "pt2 ending in Sigmoid": open_model(_pt2_of(Scorer(3, sigmoid=True), tmp_path / "multi.pt2"))}
    for kind, model in models.items():
        assert model.classes == ("class 0", "class 1", "class 2"), kind
        assert torch.allclose(model.scoring.probabilities(model.logits(images)), want, atol=1e-5), kind
        top = analyze_image(model, images[0])["top"]
        assert [t["probability"] for t in top] == pytest.approx(want[0].sort(descending=True).values.tolist(),
                                                                abs=1e-5), kind
        source = {"onnx ending in Sigmoid": "the graph ends in Sigmoid", "module ending in Sigmoid": "the module "
                  "ends in Sigmoid", "pt2 ending in Sigmoid": "the program ends in Sigmoid"}.get(kind, "--multi-label")
        assert f"Multi-label ({source}): each output is its own class's probability" in " ".join(model.notes), kind
        drop = occlusion(model, images[0], 0)  # the first patch's drop, in the sigmoid's terms
        covered = images[0].clone()
        step = 2  # ceil(8 / 7)
        covered[:, :step, :step] = images[0].float().mean().round().to(torch.uint8)
        with torch.no_grad():
            hidden = logits(covered[None].float() / 255).sigmoid()[0, 0]
        assert float(drop[0, 0]) == pytest.approx(float(want[0, 0] - hidden), abs=1e-5), kind
    _graph_of_others(tmp_path / "softmax.onnx", "softmax")
    softmax = {"softmax.onnx": tmp_path / "softmax.onnx",
               "softmax.pt2": _pt2_of(Scorer(3, softmax=True), tmp_path / "softmax.pt2")}
    for name, path in softmax.items():
        with pytest.raises(CnnlabError, match=rf"{name} ends in Softmax, one distribution over its classes, and "
                                              r"--multi-label reads each output as a class's own probability"):
            open_model(path, Options(multi_label=True))


def test_a_pytorch_model_that_ends_in_softmax_shows_its_own_probabilities(tmp_path):
    # A module or program ending in nn.Softmax had a softmax taken over its probabilities: every figure flattened
    # towards 1 / classes. (ONNX graphs ending in Softmax were read so already.)
    from cnnlab.explore.module_model import ModuleModel

    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    net = Scorer(3, softmax=True)
    with torch.no_grad():
        want = net(images.float() / 255)
    for kind, model in {"module": ModuleModel(net, "soft", Options(input_size=8)),
                        "pt2": open_model(_pt2_of(net, tmp_path / "soft.pt2"))}.items():
        assert torch.allclose(model.scoring.probabilities(model.logits(images)), want, atol=1e-5), kind
        noun = "module" if kind == "module" else "program"
        assert f"The {noun} ends in Softmax: its outputs are taken as probabilities." in model.notes, kind
        top = analyze_image(model, images[0])["top"]
        assert top[0]["probability"] == pytest.approx(float(want[0].max()), abs=1e-5), kind

    class Tail(nn.Module):  # Softmax or Sigmoid, then an evaluation's dropout and a cast, as deployed models end
        def __init__(self, final: nn.Module, dtype: torch.dtype):
            super().__init__()
            self.net, self.final, self.drop, self.dtype = Scorer(3), final, nn.Dropout(0.2), dtype

        def forward(self, x):
            return self.drop(self.final(self.net(x))).to(self.dtype)

    for final in (nn.Softmax(1), nn.Sigmoid()):
        for dtype in (torch.float16, torch.float64):
            tail = Tail(final, dtype).eval()
            with torch.no_grad():
                want = tail(images.float() / 255).float()
            path = tmp_path / f"tail-{type(final).__name__}-{dtype}.pt2"
            for kind, model in {"module": ModuleModel(tail, "tail", Options(input_size=8)),
                                "pt2": open_model(_pt2_of(tail, path))}.items():
                assert model.scoring.ends_in == type(final).__name__, (kind, final, dtype)
                got = model.scoring.probabilities(model.logits(images))
                assert torch.allclose(got, want, atol=2e-3), (kind, final, dtype)  # float16's rounding
    class Functional(nn.Module):  # the probabilities made in forward's own code, as hand-written models end
        def __init__(self, end):
            super().__init__()
            self.net, self.end = Scorer(3), end

        def forward(self, x):
            return self.end(self.net(x))

    for name, end, reading in (("F.softmax", lambda y: F.softmax(y, dim=1), "Softmax"),
                               ("Tensor.softmax", lambda y: y.softmax(1).flatten(1), "Softmax"),
                               ("torch.sigmoid", torch.sigmoid, "Sigmoid"),
                               ("Tensor.sigmoid_, in place", lambda y: y.sigmoid_(), "Sigmoid"),
                               ("log_softmax, logits already", lambda y: F.log_softmax(y, 1), None)):
        net = Functional(end).eval()
        with torch.no_grad():
            want = net(images.float() / 255)
        model = ModuleModel(net, name, Options(input_size=8))
        assert model.scoring.ends_in == reading, name
        probs = want.exp() if reading is None else want
        assert torch.allclose(model.scoring.probabilities(model.logits(images)), probs, atol=1e-5), name
    graph = onnx.load(str(_onnx_of(Scorer(3, softmax=True), tmp_path / "soft.onnx")))
    last = graph.graph.node[-1]  # the Softmax's value goes through a Dropout to the output
    last.output[0], dropped = "before_dropout", graph.graph.output[0].name
    graph.graph.node.append(helper.make_node("Dropout", ["before_dropout"], [dropped]))
    onnx.save(graph, str(tmp_path / "dropout.onnx"))
    model = open_model(tmp_path / "dropout.onnx")
    assert model.scoring.ends_in == "Softmax"
    with torch.no_grad():
        want = Scorer(3, softmax=True)(images.float() / 255)
    assert torch.allclose(model.scoring.probabilities(model.logits(images)), want, atol=1e-5)
    class NoModes(nn.Module):  # as an extension's op that fails under a TorchFunctionMode
        def __init__(self):
            super().__init__()
            self.net = Scorer(3, softmax=True)

        def forward(self, x):
            if torch._C._is_torch_function_mode_enabled():
                raise RuntimeError("this op does not run under a function mode")
            return self.net(x)

    model = ModuleModel(NoModes(), "no-modes", Options(input_size=8))  # opens: the probe gives way, and its
    # outputs, distributions, say what its last operation could not
    assert model.scoring.ends_in == "Softmax" and model.scoring.from_values
    assert model.classes == ("class 0", "class 1", "class 2")
    result = analyze_image(model, images[0])  # and its stages are taken as they come, without following layouts
    assert result["explanation"]["method"] == "grad-cam" and [r["name"] for r in result["rows"]][:1] == ["net.conv"]
    one = nn.Sequential(Scorer(1), nn.Softmax(1))
    for model in (lambda: ModuleModel(one, "one", Options(input_size=8)),
                  lambda: open_model(_onnx_of(one, tmp_path / "one.onnx"))):
        with pytest.raises(CnnlabError, match=r"ends in Softmax over one output, which is 1 for every image; "
                                              r"expected a Softmax over two or more classes, or a Sigmoid"):
            model()


def test_a_module_returning_an_output_object_is_read_through_its_logits():
    # Hugging Face's image classifiers return ImageClassifierOutput(logits=...): "is not a classifier: it returns
    # ImageClassifierOutput". transformers is not needed to check it: any object with a logits tensor.
    from dataclasses import dataclass

    from cnnlab.explore.module_model import ModuleModel

    @dataclass
    class ImageClassifierOutput:
        logits: torch.Tensor
        loss: torch.Tensor | None = None

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Scorer(3)

        def forward(self, pixel_values):
            return ImageClassifierOutput(logits=self.net(pixel_values))

    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    wrapped, plain = ModuleModel(Wrapped(), "hf", Options(input_size=8)), ModuleModel(Scorer(3), "plain",
                                                                                       Options(input_size=8))
    assert "Its forward returns ImageClassifierOutput: its logits are read as the class scores." in wrapped.notes
    assert torch.equal(wrapped.logits(images), plain.logits(images))
    got, want = analyze_image(wrapped, images[0]), analyze_image(plain, images[0])
    assert got["top"] == want["top"] and [r["maps"] for r in got["rows"]] == [r["maps"] for r in want["rows"]]
    assert {k: v for k, v in got["explanation"].items() if k != "row"} == \
        {k: v for k, v in want["explanation"].items() if k != "row"}  # the row is named net.conv there, conv here


class _LogitsInADict(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Scorer(3)

    def forward(self, pixel_values):
        return {"logits": self.net(pixel_values), "features": pixel_values.mean((2, 3))}


@pytest.mark.parametrize("kind", ["module", "pt2"])
def test_a_model_returning_a_dict_of_logits_is_read_through_them(kind, tmp_path):
    """A forward that returns {"logits": ...} (a Hugging Face classifier through torch.export returns its output so,
    and forwards are written so) was refused as "a dict of 'logits' (...)"; its logits are the class scores."""
    from cnnlab.explore.module_model import ModuleModel

    torch.manual_seed(0)
    net = _LogitsInADict().eval()
    model = ModuleModel(net, "net", Options(input_size=8)) if kind == "module" else \
        open_model(_pt2_of(net, tmp_path / "dict.pt2"))
    noun = "forward" if kind == "module" else "program"
    assert f"Its {noun} returns a dict: its logits are read as the class scores." in model.notes
    _reads_the_inner_networks_logits(model, net)


def _reads_the_inner_networks_logits(model, net: _LogitsInADict) -> None:
    """The class scores ``model`` gives are those of ``net``'s inner network, and Grad-CAM explains them."""
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = net.net(images.float() / 255)
    torch.testing.assert_close(model.logits(images), want, atol=1e-5, rtol=1e-5)
    assert analyze_image(model, images[0])["explanation"]["method"] == "grad-cam"


class _LibraryOutput(dict):
    """An output object of a library's own, as Hugging Face's ``ImageClassifierOutput``: registered with torch's
    pytree under its library's name, which torch.export.save writes into the program's output spec."""


class _LogitsInALibraryOutput(_LogitsInADict):
    def forward(self, pixel_values):
        return _LibraryOutput(super().forward(pixel_values))


@pytest.mark.parametrize("layer, said", [
    (nn.Dropout(0.5), r"its dropout \('4'\) zeroes random values at each call, so its answer for a picture changes "
                      r"from one run to the next"),
    (nn.BatchNorm1d(4), r"its batch norm \('4'\) normalises by the statistics of the images run together, not its "
                        r"running ones, so its answer for a picture depends on the pictures run beside it"),
])
def test_a_program_exported_in_training_mode_is_refused(layer, said, tmp_path):
    # torch.export keeps the mode the module was in (a torchvision model is built in training mode; torch.onnx.export
    # exports in evaluation mode whatever it is): the page showed other probabilities each time a picture was chosen
    # (dropout), and predict answered a picture otherwise beside other pictures (batch norm)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), layer,
                        nn.Linear(4, 3))
    torch.export.save(torch.export.export(net.train(), (torch.rand(2, 3, 8, 8),)), tmp_path / "train.pt2")
    with pytest.raises(CnnlabError, match=rf"train\.pt2 was exported in training mode: {said}; expected a program "
                                          r"exported in evaluation mode \(torch\.export\.export\(model\.eval\(\), "):
        open_model(tmp_path / "train.pt2")
    torch.export.save(torch.export.export(net.eval(), (torch.rand(2, 3, 8, 8),)), tmp_path / "eval.pt2")
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    opened = open_model(tmp_path / "eval.pt2")
    assert torch.allclose(opened.logits(images), net(images.float() / 255), atol=1e-6)


def test_a_program_returning_a_librarys_output_object_opens_as_a_dict(tmp_path):
    """A Hugging Face classifier exported with torch.export returns its ImageClassifierOutput; torch.export.load
    rebuilds that only where transformers is imported, so `cnnlab explore vit.pt2` failed with "We ran into an error
    when deserializing the saved file. Please check the warnings above" (warnings it had silenced). The output's
    fields are a dict's (names, then tensors): the program opens, read through its logits, and says so."""
    pytree = torch.utils._pytree
    pytree.register_pytree_node(_LibraryOutput, lambda out: (list(out.values()), list(out.keys())),
                                lambda values, keys: _LibraryOutput(zip(keys, values, strict=True)),
                                serialized_type_name="somelib.outputs.ClassifierOutput")
    torch.manual_seed(0)
    net = _LogitsInALibraryOutput().eval()
    try:
        path = _pt2_of(net, tmp_path / "library.pt2")
    finally:  # as in a process that never imported the library
        pytree._deregister_pytree_node(_LibraryOutput)
    model = open_model(path)
    assert "Its output, somelib.outputs.ClassifierOutput (a type of the library that exported it, not imported " \
           "here), is read as the dict of its fields, 'logits' and 'features'." in model.notes
    assert "Its program returns a dict: its logits are read as the class scores." in model.notes
    _reads_the_inner_networks_logits(model, net)


def test_a_program_returning_a_librarys_object_of_no_fields_is_refused_naming_its_type(tmp_path):
    """An output type whose spec does not name its fields (a context of the library's own) cannot be read as a dict:
    the refusal names the type, not torch's "check the warnings above" of warnings it does not show."""
    pytree = torch.utils._pytree
    pytree.register_pytree_node(_LibraryOutput, lambda out: (list(out.values()), {"fields": list(out.keys())}),
                                lambda values, context: _LibraryOutput(zip(context["fields"], values, strict=True)),
                                serialized_type_name="somelib.outputs.PackedOutput")
    try:
        path = _pt2_of(_LogitsInALibraryOutput().eval(), tmp_path / "packed.pt2")
    finally:
        pytree._deregister_pytree_node(_LibraryOutput)
    with pytest.raises(CnnlabError, match=r"packed.pt2 returns somelib.outputs.PackedOutput, a type of the library "
                                          r"that exported it, .*; expected a program returning tensors, or a tuple, "
                                          r"list or dict of them$"):
        open_model(path)


class ChannelsLast(nn.Module):
    """A ConvNeXt-like block on a 12 x 20 input: conv, then LayerNorm and an MLP on N x H x W x C, a concatenation
    along the channels there (as Swin's patch merging), and back."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.conv, self.norm = nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm(8)
        self.fc, self.act, self.fc2, self.head = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.Linear(8, 4)
        self.norm2 = nn.LayerNorm(8)  # after the MLP narrowed the channels again (16 to 8): still channels-last

    def forward(self, x):
        y = self.conv(x)
        z = self.norm2(self.fc2(self.act(self.fc(self.norm(y.permute(0, 2, 3, 1))))))
        z = torch.cat([z[..., :4], z[..., 4:]], -1)
        return self.head((y + z.permute(0, 3, 1, 2)).mean((2, 3)))


def _as_three_kinds(net: nn.Module, hw: tuple[int, int], stem, seed: int) -> tuple[dict, torch.Tensor]:
    """``net`` explored as a module (forward hooks), as its ``.pt2`` and as its ONNX export (at ``stem``); and a
    random RGB picture of its input size (uint8, seeded)."""
    from cnnlab.explore.module_model import ModuleModel

    x = torch.zeros(1, 3, *hw)
    torch.export.save(torch.export.export(net, (x,)), stem.with_suffix(".pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(stem.with_suffix(".onnx")), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17)
    models = {"module": ModuleModel(net, stem.name, Options(input_size=hw)),
              "pt2": open_model(stem.with_suffix(".pt2")), "onnx": open_model(stem.with_suffix(".onnx"))}
    return models, torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_channels_last_stages_are_shown_and_explained_as_channels_by_height_by_width(tmp_path):
    # ConvNeXt's and Swin's LayerNorm and GELU outputs (N x H x W x C) were read as N x C x H x W: their "maps" were
    # W x C pictures of H channels, and Grad-CAM (imagenet-convnext_tiny's, on a GELU) a map of the wrong axes.
    net = ChannelsLast().eval()
    models, image = _as_three_kinds(net, (12, 20), tmp_path / "last", seed=9)
    with torch.no_grad():
        norm = net.norm(net.conv(image[None] / 255).permute(0, 2, 3, 1))
        want = {"norm": norm.permute(0, 3, 1, 2), "act": net.act(net.fc(norm)).permute(0, 3, 1, 2)}
    for kind, model in models.items():
        rows = model.stages(image)
        four = [r for r in rows if r.output.dim() == 4]
        assert four and all(tuple(r.output.shape[-2:]) == (12, 20) for r in four), \
            (kind, [(r.name, tuple(r.output.shape)) for r in four])
        if kind != "onnx":  # torch's own modules and operators: the rows are torch's values, turned round
            by_name = {r.name: r.output for r in four}
            assert torch.allclose(by_name["norm"], want["norm"], atol=1e-5)
            assert torch.allclose(by_name["act"], want["act"], atol=1e-5)
            e = explain_with(model._scored_pass, model.spec.to_input(image[None]), 0)
            assert tuple(e.cam.shape) == (12, 20) and float(e.cam.max()) > 0, kind  # a map over the image


class PatchMerged(nn.Module):
    """Channels-last through a rearrangement of higher rank: timm's Swin patch merging (N x H x W x C reshaped to
    N x H/2 x 2 x W/2 x 2 x C, permuted, flattened to 4C), then ViT-style tokens N x L x C by transpose and back."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.embed, self.norm0, self.norm1 = nn.Conv2d(3, 8, 2, 2), nn.LayerNorm(8), nn.LayerNorm(32)
        self.tokens, self.head = nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x):
        x = self.norm0(self.embed(x).permute(0, 2, 3, 1))  # N x 8 x 12 x 8
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)  # N x 4 x 6 x 32
        x = self.norm1(x).permute(0, 3, 1, 2)  # N x 32 x 4 x 6
        t = self.tokens(x.flatten(2).transpose(1, 2))  # N x 24 x 32
        x = t.transpose(1, 2).reshape(n, 4 * c, h // 2, w // 2)
        return self.head(x.mean((2, 3)))


def test_channels_last_through_a_patch_merge_and_tokens_is_turned_round(tmp_path):
    # A Swin patch merge's 6-d permute left its LayerNorm's N x h x w x 4C read as N x C x H x W (a 4 x 6 map
    # of 32 channels shown as 4 channels of 6 x 32), in all three kinds; a permute of any rank now moves the
    # channel axis where it goes, and a reshape keeps it last where the last axis holds whole channels.
    net = PatchMerged().eval()
    models, image = _as_three_kinds(net, (16, 24), tmp_path / "merge", seed=11)
    with torch.no_grad():
        y = net.norm0(net.embed(image[None] / 255).permute(0, 2, 3, 1))
        merged = net.norm1(y.reshape(1, 4, 2, 6, 2, 8).permute(0, 1, 3, 4, 2, 5).flatten(3))
    for kind, model in models.items():
        shapes = [tuple(r.output.shape[1:]) for r in model.stages(image) if r.output.dim() == 4]
        assert shapes == [(8, 8, 12), (8, 8, 12), (32, 4, 6)], (kind, shapes)
        norm1 = [r.output for r in model.stages(image) if r.output.dim() == 4][-1]
        assert torch.allclose(norm1, merged.permute(0, 3, 1, 2), atol=1e-5), kind
        if kind != "onnx":
            e = explain_with(model._scored_pass, model.spec.to_input(image[None]), 0)
            # h x w, not 6 x 32; at the last map the head pools: the tokens' LayerNorm turned back into one
            assert tuple(e.cam.shape) == (4, 6) and e.row.startswith(("reshape", "view")), (kind, e.row)


def test_a_model_of_non_square_input(tmp_path, rgb_folder):
    # Refused: "takes 16 x 32 images, expected a square input"; and --input-size took one side only.
    import onnxruntime as ort

    from cnnlab.explore.module_model import ModuleModel
    from cnnlab.explore.page import export_page

    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 32),), str(tmp_path / "wide.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 32),), str(tmp_path / "free.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N", 3: "W"}, "y": {0: "N"}})
        torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 16, 32),)), tmp_path / "wide.pt2")
    session = ort.InferenceSession(str(tmp_path / "wide.onnx"), providers=["CPUExecutionProvider"])
    models = {"onnx": open_with_images(tmp_path / "wide.onnx", rgb_folder),
              "pt2": open_with_images(tmp_path / "wide.pt2", rgb_folder),
              "module --input-size 16x32": (ModuleModel(net, "net", Options(input_size=(16, 32))), None)}
    for kind, (model, images) in models.items():
        assert model.spec.hw == (16, 32) and "3 channels at 16 x 32" in model.spec.describe(), kind
        if images is not None:
            assert images.images.shape[1:] == (3, 16, 32), kind  # every picture read at the model's shape
        batch = torch.randint(0, 256, (2, 3, 16, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
        own = session.run(None, {"x": (batch.float() / 255).numpy()})[0]
        assert np.allclose(model.logits(batch).numpy(), own, atol=1e-5), kind  # its own answers, nothing resized
        result = analyze_image(model, batch[0])
        maps = {r["name"]: r for r in result["rows"]}
        assert any(r["shape"][-2:] == [8, 16] for r in maps.values()), kind  # the pooled maps keep the aspect
        explanation = result["explanation"]
        pictures = [explanation[k] for k in ("occlusion", "map", "gradcam", "saliency") if k in explanation]
        for url in pictures:  # every picture over the image is the image's shape, width 32 and height 16
            assert Image.open(io.BytesIO(base64_png(url))).size == (32, 16), kind
        assert explanation["method"] == ("occlusion" if kind == "onnx" else "grad-cam"), kind
        if kind == "onnx":
            assert explanation["grid"] == [6, 7]  # patches of 3 x 5 pixels
    saved = export_page(*models["onnx"], tmp_path / "wide.html")
    assert saved["bytes"] > 0 and len(saved["inputs"]) > 0
    with pytest.raises(CnnlabError, match=r"^--input-size 16 differs from the 16 x 32 input .*wide.onnx is fixed to; "
                                          r"expected --input-size 16x32 or none$"):
        open_model(tmp_path / "wide.onnx", Options(input_size=16))
    with pytest.raises(CnnlabError, match=r"free.onnx has a dynamic input size \(height x width 16 x W\); pass "
                                          r"--input-size SIDE or HEIGHTxWIDTH"):
        open_model(tmp_path / "free.onnx")
    with pytest.raises(CnnlabError, match=r"^--input-size 24 gives a height of 24, but .*free.onnx fixes its height "
                                          r"to 16; expected a height of 16$"):
        open_model(tmp_path / "free.onnx", Options(input_size=24))
    assert open_model(tmp_path / "free.onnx", Options(input_size=(16, 40))).spec.hw == (16, 40)


def base64_png(url: str) -> bytes:
    import base64

    return base64.b64decode(url.split(",", 1)[1])


def test_two_requests_at_once_each_get_their_own_images_stages():
    # The server analyses in a thread pool, and a module's forward hooks see every pass through it: another
    # request's pass while one's hooks were on mixed its outputs into that one's stages.
    import threading
    import time

    from cnnlab.explore.module_model import ModuleModel

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x):
            y = self.conv(x)
            time.sleep(0.05)  # long enough for the other request's pass to overlap
            return self.fc(self.pool(y).flatten(1))

    torch.manual_seed(0)
    model = ModuleModel(Slow(), "slow", Options(input_size=12))
    images = [torch.full((1, 12, 12), v, dtype=torch.uint8) for v in (30, 220)]
    alone = [analyze_image(model, image) for image in images]
    together: list = [None, None]

    def run(i):
        together[i] = analyze_image(model, images[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together, strict=True):
        assert [r["name"] for r in b["rows"]] == [r["name"] for r in a["rows"]] == ["conv", "pool", "output"]
        assert b == a


@pytest.mark.slow
@pytest.mark.parametrize("name, convs", [("mobilenet_v3_small", (16, 3, 3, 3)), ("resnet18", (64, 3, 7, 7))])
def test_models_nobody_here_wrote(name, convs, tmp_path, rgb_folder, monkeypatch):
    size = 64
    reference = _torchvision(name, size, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    options = Options(input_size=size)
    models = {"onnx": open_with_images(tmp_path / f"{name}.onnx", rgb_folder)[0],
              "pt2": open_with_images(tmp_path / f"{name}.pt2", rgb_folder)[0],
              "module": open_with_images(f"tv_{name}:build", rgb_folder, options)[0]}
    _, images = open_with_images(tmp_path / f"{name}.onnx", rgb_folder)
    assert images.images.shape == (3, 3, size, size) and images.found == 3
    expected = reference(images.images.float() / 255)
    for kind, model in models.items():
        assert model.spec.hw == (size, size) and model.spec.layout == "NCHW" and model.spec.channels == 3, kind
        assert torch.allclose(model.logits(images.images), expected, atol=1e-4), kind
        assert tuple(model.kernels().shape) == convs, kind
        card = model_card(model)
        assert len(card["layers"]) > 20 and card["params"] > 0, kind
        if kind != "onnx":  # the ONNX exporter folds batch norm into the convolutions: fewer parameters
            assert card["params"] == sum(p.numel() for p in reference.parameters()), kind
        result = analyze_image(model, images.images[1])
        assert sum(1 for r in result["rows"] if r["maps"]) > 15, kind
        assert result["explanation"]["method"] == ("occlusion" if kind == "onnx" else "grad-cam"), kind
    assert "called build() because you named it" in models["module"].notes[0]
    # Every feature map of the ONNX graph and of the exported program is one that forward hooks see on the module
    # (the ONNX exporter folds batch norm into the convolution before it: its Conv output is the module's BN one).
    rows = {k: m.stages(images.images[0]) for k, m in models.items()}
    for kind in ("onnx", "pt2"):
        for row in rows[kind][:-1]:
            assert any(r.output.shape == row.output.shape and torch.allclose(r.output, row.output, atol=1e-4)
                       for r in rows["module"]), (kind, row.name)
    assert len(rows["pt2"]) == len(rows["module"])
    if name == "resnet18":  # each block's `out += identity` overwrote the bn2 output recorded before it
        bn2 = {}

        def keep(module, args, out) -> None:  # returns None: the block goes on with its own output
            bn2.setdefault("out", out.clone())

        hook = reference.layer1[0].bn2.register_forward_hook(keep)
        with torch.no_grad():
            reference(images.images[:1].float() / 255)
        hook.remove()
        for kind in ("module", "pt2"):
            [row] = [r for r in rows[kind] if r.name == "layer1.0.bn2"]
            assert torch.allclose(row.output[:1], bn2["out"], atol=1e-5), kind
    # Grad-CAM through the program's interpreter and through hooks on the module agree.
    x = models["module"].spec.to_input(images.images[:1])
    pt2, hooks = (explain_with(models[k]._stage_pass, x, target=2) for k in ("pt2", "module"))
    assert pt2.cam.shape == hooks.cam.shape and pt2.cam.dim() == 2
    assert torch.allclose(pt2.cam, hooks.cam, atol=1e-5 + 1e-4 * float(hooks.cam.abs().max()))
    assert torch.allclose(pt2.saliency, hooks.saliency, atol=1e-5 + 1e-4 * float(hooks.saliency.abs().max()))
    assert float(hooks.saliency.abs().max()) > 0


def _nhwc_graph(path, side=16, dynamic=False, output_4d=False, input_rank=4, input_type=TensorProto.FLOAT,
                batch="N", tail=None):
    """An NHWC classifier as Keras/TensorFlow graphs arrive: Transpose -> Conv -> Relu -> MaxPool -> GAP -> Gemm;
    ``tail`` ("ArgMax", "Greater", "Transpose") is an op its logits go through last. An input of float16 or double
    is cast to float first, one of uint8 also divided by 255 (pixel values scaled inside, as deployed graphs do)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fc = rng.standard_normal((3, 4)).astype(np.float32)
    shape = [batch, "H", "W", 3] if dynamic else [batch, side, side, 3]
    if input_rank != 4:
        shape = ["N", side * side * 3]
    first = []
    if input_type in (TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.UINT8):
        first.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    if input_type == TensorProto.UINT8:
        first.append(helper.make_node("Div", ["xf", "byte"], ["xs"]))
    nodes = [*first, helper.make_node("Transpose", [first[-1].output[0] if first else "x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z" if tail else "y"], transB=1)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.array(255, np.float32), "byte")]
    out_type = {"ArgMax": TensorProto.INT64, "Greater": TensorProto.BOOL}.get(tail, TensorProto.FLOAT)
    if tail:
        inputs, attributes = {"ArgMax": (["z"], {"axis": 1}), "Greater": (["z", "zero"], {}),
                              "Transpose": (["z"], {"perm": [1, 0]})}[tail]
        nodes.append(helper.make_node(tail, inputs, ["y"], **attributes))
        inits.append(numpy_helper.from_array(np.zeros(1, np.float32), "zero"))
    out = helper.make_tensor_value_info("p" if output_4d else "y", out_type, None)
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", input_type, shape)], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(fc)


def _graph_of_others(path, tail: str):
    """A grey 8 x 8 classifier of 3 classes, Conv -> Relu -> ... -> logits, as graphs from other tools end; returns
    its first-layer kernels in float32 (None for "qlinear"):
    ``"reshape-1"`` flattens with a Reshape to [1, -1] (batch axis declared free, fixed inside); ``"softmax"``
    ends in Softmax -> Reshape -> Identity; ``"float16"`` computes in float16 between Casts; ``"qlinear"`` runs a
    quantized QLinearConv (uint8 maps); ``"qdq"`` reads its weight through DequantizeLinear (per channel), as
    onnxruntime's QDQ quantization (cnnlab's onnx-int8 export) writes it."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((3, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(fc, "fc")]
    if tail == "float16":
        conv = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                helper.make_node("Conv", ["h", "w"], ["c"], name="conv"),
                helper.make_node("Relu", ["c"], ["r"], name="relu"),
                helper.make_node("Cast", ["r"], ["r32"], to=TensorProto.FLOAT)]
        inits.append(numpy_helper.from_array(w.astype(np.float16), "w"))
    elif tail == "qlinear":
        conv = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("QLinearConv", ["q", "s", "z", "wq", "ws", "z", "s", "z"], ["qc"], name="conv"),
                helper.make_node("DequantizeLinear", ["qc", "s", "z"], ["c"]),
                helper.make_node("Relu", ["c"], ["r32"], name="relu")]
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "z"),
                  numpy_helper.from_array(np.clip(w * 40 + 128, 0, 255).astype(np.uint8), "wq"),
                  numpy_helper.from_array(np.array(0.025, np.float32), "ws")]
    elif tail == "qdq":
        scale = np.abs(w).reshape(4, -1).max(1) / 127
        conv = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
                helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                helper.make_node("Relu", ["c"], ["r32"], name="relu")]
        inits += [numpy_helper.from_array(np.round(w / scale[:, None, None, None]).astype(np.int8), "wq"),
                  numpy_helper.from_array(scale.astype(np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    else:
        conv = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                helper.make_node("Relu", ["c"], ["r32"], name="relu")]
        inits.append(numpy_helper.from_array(w, "w"))
    nodes = [*conv, helper.make_node("GlobalAveragePool", ["r32"], ["g"])]
    if tail == "reshape-1":
        nodes.append(helper.make_node("Reshape", ["g", "flat"], ["f"]))
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat"))
    else:
        nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", "fc"], ["logits" if tail == "softmax" else "y"], transB=1))
    if tail == "softmax":
        nodes += [helper.make_node("Softmax", ["logits"], ["p"], axis=1),
                  helper.make_node("Reshape", ["p", "shape"], ["pr"]), helper.make_node("Identity", ["pr"], ["y"])]
        inits.append(numpy_helper.from_array(np.array([-1, 3], np.int64), "shape"))
    graph = helper.make_graph(nodes, tail, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    if tail == "qdq":
        return np.round(w / scale[:, None, None, None]) * scale[:, None, None, None]  # the kernels it shows
    return None if tail == "qlinear" else w.astype(np.float16).astype(np.float32) if tail == "float16" else w


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


CAFFE_MEAN = (103.939, 116.779, 123.68)  # Caffe's ImageNet mean, in its B, G, R order and 0-255 pixels


def test_a_caffe_style_model_takes_bgr_pixels_from_0_to_255(tmp_path, rgb_folder):
    """A model converted from Caffe (or preprocessed the Keras "caffe" way) takes B, G, R channels of 0-255 pixels
    minus a mean: ``--bgr --pixel-range 0-255 --mean ...`` feeds it so; without --bgr its answers differ."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "caffe.onnx"), dynamo=False,
                          input_names=["data"])
    caffe = Options(pixel_range="0-255", bgr=True, mean=CAFFE_MEAN)
    model, images = open_with_images(tmp_path / "caffe.onnx", rgb_folder, caffe)
    with torch.no_grad():
        expected = net(images.images.float().flip(1) - torch.tensor(CAFFE_MEAN).view(1, 3, 1, 1))
    assert torch.allclose(model.logits(images.images), expected, rtol=1e-4, atol=1e-3)
    assert "pixels 0-255 in B, G, R order, minus mean [103.9, 116.8, 123.7]" in model.spec.describe()
    assert "normalisation from the flags" in model.spec.describe()
    rgb, _ = open_with_images(tmp_path / "caffe.onnx", rgb_folder, replace(caffe, bgr=False))
    assert not torch.allclose(rgb.logits(images.images), expected, rtol=1e-4, atol=1e-3)
    unit = Options(bgr=True, mean=tuple(m / 255 for m in CAFFE_MEAN), std=(1 / 255,))  # the same input, 0-1 scale
    assert torch.allclose(open_model(tmp_path / "caffe.onnx", unit).logits(images.images), expected, rtol=1e-4,
                          atol=1e-3)


def test_bgr_and_pixel_range_are_refused_where_they_cannot_apply(tmp_path, lenet, grey_folder, capsys):
    from cnnlab.cli import main

    grey = _onnx_of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)), tmp_path / "grey.onnx")
    with pytest.raises(CnnlabError, match=r"^--bgr turns an RGB picture's three channels round, but .*grey.onnx "
                                          r"takes 1 channel; expected no --bgr for it$"):
        open_model(grey, Options(bgr=True))
    with pytest.raises(CnnlabError, match=r"^--pixel-range must be 0-1 or 0-255"):
        Options(pixel_range="0-65535")
    with pytest.raises(CnnlabError, match=r"--pixel-range, --bgr, --layout, --multi-label and --weights are for "
                                          r"models from elsewhere; a cnnlab checkpoint records its own"):
        open_model(lenet["run"], Options(bgr=True))
    code = main(["explore", str(tmp_path), "--bgr", "--pixel-range", "0-255"])  # a folder is served as runs
    assert code == 2 and "--pixel-range and --bgr apply to one model" in capsys.readouterr().err


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


def test_dynamic_sizes_need_input_size(tmp_path, rgb_folder):
    _nhwc_graph(tmp_path / "dyn.onnx", dynamic=True)
    with pytest.raises(CnnlabError, match="dynamic input size.*pass --input-size"):
        open_model(tmp_path / "dyn.onnx")
    model, images = open_with_images(tmp_path / "dyn.onnx", rgb_folder, Options(input_size=24))
    assert model.spec.hw == (24, 24) and images.images.shape[-2:] == (24, 24)
    assert "size from the flags" in model.spec.describe()
    with pytest.raises(CnnlabError, match="no fixed input size; pass --input-size"):
        open_model("torchvision.models:resnet18")  # a module has no graph to read the side from
    with pytest.raises(CnnlabError, match="cannot import 'no_such_module_here'"):
        open_model("no_such_module_here:build")


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
                            f"{returns}, expected 1 x classes of float logits")


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


def test_bad_sources_and_folders(tmp_path, lenet):
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04 not a program")
    with pytest.raises(CnnlabError, match="is not a torch.export program"):
        open_model(tmp_path / "junk.pt2")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(CnnlabError, match="not a model this explorer opens"):
        open_model(tmp_path / "model.h5")
    with pytest.raises(CnnlabError, match="does not exist"):
        open_model(tmp_path / "missing.onnx")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(CnnlabError, match="holds no images"):
        open_with_images(lenet["onnx"], tmp_path / "empty")
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    Image.new("1", (20000, 10000)).save(bomb / "huge.png")  # 200 megapixels in a few kilobytes
    with pytest.raises(CnnlabError, match="huge.png claims too many pixels.*expected at most 179 megapixels"):
        open_with_images(lenet["onnx"], bomb)
    with pytest.raises(CnnlabError, match=r"--mean must give 1 number \(the model takes 1 channel\), got 3"):
        open_model(lenet["onnx"], Options(mean=(0.1, 0.2, 0.3)))


def test_a_folder_of_loose_images_and_class_subfolders_is_refused(tmp_path, grey_folder, rgb_folder):
    mixed = tmp_path / "mixed"
    shutil.copytree(grey_folder, mixed)
    for name in ("a.png", "b.png"):
        shutil.copy(grey_folder / "one" / "0.png", mixed / name)
    with pytest.raises(CnnlabError) as e:
        list_images(mixed)
    assert str(e.value) == (f"--images {mixed} mixes 2 images at the top with 4 class subfolders of images; expected "
                            "either a flat folder of images or class subfolders only (move the loose images into a "
                            "subfolder, or point --images at one of the two)")
    (mixed / "b.png").unlink()
    with pytest.raises(CnnlabError, match="mixes 1 image at the top with 4 class subfolders"):
        list_images(mixed)
    flat = tmp_path / "flat"
    shutil.copytree(rgb_folder, flat)
    (flat / "thumbnails").mkdir()  # a subfolder without images holds no class: the folder is still a flat one
    files, classes = list_images(flat)
    assert len(files) == 3 and classes == ()


def test_the_images_shown_of_many_classes_are_picked_in_one_pass_over_the_files():
    # each class's images were found by a pass over every file: 1,000 classes of a 20,000-file folder took 20 million
    # comparisons of class names (a second before the page served; 100,000 files of 5,000 classes, half a minute)
    compared = []

    class Name(str):
        def __eq__(self, other):
            compared.append(other)
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    classes = tuple(f"c{i:03d}" for i in range(100))
    files = sorted((Path(c, f"{j}.png"), Name(c)) for j in range(5) for c in classes)
    chosen = imagefolder._balanced(files, classes, 200)
    assert len(compared) <= 2 * len(files)
    assert chosen == [f for f in files if f[0].name in ("0.png", "1.png")]  # two of each class, in the folder's order


@pytest.mark.parametrize("text, expected", [
    ("\ufeffzero\none\ntwo\n", ("zero", "one", "two")),  # a byte-order mark (Windows editors) is not in the name
    ('\ufeff["zero", "one", "two"]', ("zero", "one", "two")),  # nor does it make a JSON list lines
    ('\n  ["zero", "one"]\n', ("zero", "one")),
    ("zero\r\none\r\n\r\n  \n", ("zero", "one")),  # blank lines after the last name shift no name
])
def test_class_files(tmp_path, text, expected):
    path = tmp_path / "classes.txt"
    path.write_text(text, encoding="utf-8")
    assert read_classes(path) == expected


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_class_file_with_its_byte_order_mark_is_read_as_utf16(tmp_path, encoding):
    # Notepad's "Unicode" saves UTF-16 after a byte-order mark: read as UTF-8, every name held NULs ("\x00h")
    path = tmp_path / "classes.txt"
    mark = "" if encoding == "utf-16" else "\ufeff"  # Python's utf-16 writes the mark itself
    path.write_bytes(f"{mark}café\r\nzero\r\none\r\n".encode(encoding))
    assert read_classes(path) == ("café", "zero", "one")


@pytest.mark.parametrize("text, message", [
    ('{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}',
     'is a JSON object of 2 entries; expected a JSON list of strings in output order (["tench", "goldfish", ...]), '
     "or one class name per line"),
    ("zero\none\ntwo\none\nzero\n", "names 'one' twice (class 1 and class 3); expected each class name once"),
    ('["a", "b", "a"]', "names 'a' twice (class 0 and class 2)"),
    ("zero\n", "holds 1 class name, expected at least 2"),
    ('["a", 1]', "must be a JSON list of strings"),
    ('["a", "b"', "is not valid JSON"),
    # a blank line before a name moved every later name onto the class before its own, without a word
    ("cat\n\ndog\nbird\n", "line 2 is blank; expected one class name per line (blank lines only after the last name)"),
    ("cat\r\ndog\r\n \t\r\nbird\r\n\r\n", "line 3 is blank; expected one class name per line"),
    ("\ncat\ndog\n", "line 1 is blank; expected one class name per line"),
])
def test_bad_class_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "classes.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CnnlabError) as e:
        read_classes(path)
    assert str(e.value).startswith(f"--classes {path} ") and message in str(e.value) and "\n" not in str(e.value)


def test_class_names_typed_in_place_of_a_file_are_told_to_go_in_one(tmp_path, capsys):
    """The help read "a file with one per line, or a JSON list", as if a list typed in place were taken."""
    with pytest.raises(CnnlabError, match=r'^--classes \["cat", "dog"\] is not a file; expected the path of a file '
                                          r"of class names \(one per line, or a JSON list of strings\)$"):
        read_classes('["cat", "dog"]')
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "--classes FILE a file of a model's class names: one per line, or a JSON list of strings (the file's " \
           "path, not the names themselves)" in said


@pytest.mark.parametrize("stored, message", [
    ("null", "must be a JSON list of strings, got null"),
    ("5", "must be a JSON list of strings, got 5"),
    ('"abc"', 'must be a JSON list of strings, got "abc"'),  # read as the classes a, b and c
    ('{"a": 1, "b": 2, "c": 3}', "is a JSON object of 3 entries; expected a JSON list of strings in output order"),
    ('["a", "a", "b"]', "names 'a' twice (class 0 and class 1); expected each class name once"),
    ('["a", 1, null]', 'must be a JSON list of strings, got ["a", 1, null]'),
    ('["a", "b"', "is not valid JSON"),
])
@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_class_names_stored_in_a_model_are_checked_as_a_classes_files_are(kind, stored, message, tmp_path):
    # null and 5 were internal errors (TypeError); a string's letters, a dict's keys, repeated names and names that
    # are no strings were the page's classes.
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))
    path = tmp_path / f"m.{kind}"
    if kind == "onnx":
        model = onnx.load(str(_onnx_of(net, path)))
        model.metadata_props.append(onnx.StringStringEntryProto(key="cnnlab.classes", value=stored))
        onnx.save(model, str(path))
        source = f"{path}'s metadata cnnlab.classes"
    else:
        program = torch.export.export(net.eval(), (torch.zeros(1, 1, 8, 8),))
        torch.export.save(program, path, extra_files={"cnnlab.json": json.dumps({"cnnlab.classes": stored})})
        source = f"{path}'s cnnlab.json cnnlab.classes"
    with pytest.raises(CnnlabError) as e:
        open_model(path)
    assert str(e.value).startswith(f"{source} {message}") and "\n" not in str(e.value)
    assert str(e.value).endswith("; or pass --classes FILE to name the classes instead")
    assert open_model(path, Options(classes=("x", "y", "z"))).classes == ("x", "y", "z")  # --classes comes first


def test_cli_one_line_exit_2(tmp_path, capsys, grey_folder):
    from cnnlab.cli import main

    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    code = main(["explore", str(tmp_path / "junk.onnx"), "--images", str(grey_folder), "--export",
                 str(tmp_path / "page.html")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not an ONNX model" in err
    code = main(["explore", str(tmp_path), "--images", str(grey_folder)])  # a folder is served as runs
    err = capsys.readouterr().err
    assert code == 2 and "--images applies to one model" in err and "best.pt" not in err
    (tmp_path / "last.pt").write_bytes(b"")  # a run folder: its model is the checkpoint inside
    assert main(["explore", str(tmp_path), "--images", str(grey_folder)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path} is a folder, served as runs (for the model of "
                                                    f"this run, pass {tmp_path / 'last.pt'})")
    (tmp_path / "best.pt").write_bytes(b"")
    assert main(["explore", str(tmp_path), "--images", str(grey_folder)]) == 2
    assert f"(for the model of this run, pass {tmp_path / 'best.pt'})" in capsys.readouterr().err
    assert not (tmp_path / "page.html").exists()


def test_explore_without_a_runs_folder_says_what_it_serves_by_default(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["explore", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"there is no runs folder in {tmp_path}, which cnnlab explore serves" in err


def test_ctrl_c_during_export_is_an_interruption_not_success(lenet, grey_folder, tmp_path, capsys, monkeypatch):
    # `cnnlab explore --export p.html && publish p.html` must not go on to publish a page that was never written
    from cnnlab.cli import main
    from cnnlab.explore import launch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "export_page", interrupted)
    assert main(["explore", str(lenet["onnx"]), "--images", str(grey_folder), "--export",
                 str(tmp_path / "p.html")]) == 130
    assert capsys.readouterr().err == "cnnlab explore: interrupted\n"


def test_a_static_pages_data_holds_no_character_that_ends_its_script_element():
    from cnnlab.explore.page import render_page

    names = ["<!--<script>", "</script><b>", "a & b > c", "é \u2028"]  # class folders, node names, --classes
    page = render_page({"classes": names}, "t")
    payload = re.search(r"window.CNNLAB_DATA = (.*?);</script>", page).group(1)
    assert not set("<>&") & set(payload) and json.loads(payload) == {"classes": names}


def test_static_page(lenet, grey_folder, tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.explore.page import PAGE_BUDGET, build_page

    out = tmp_path / "page.html"
    assert main(["explore", str(lenet["onnx"]), "--images", str(grey_folder), "--export", str(out)]) == 0
    assert "6 inputs, 8 channels per stage" in capsys.readouterr().out
    page = out.read_text()
    assert len(page.encode()) <= PAGE_BUDGET
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing fetched from anywhere
    data = json.loads(re.search(r"window.CNNLAB_DATA = (.*?);</script>", page).group(1))
    assert data["model"]["kind"] == "ONNX" and {"0", "2", "4", "6"} <= set(data["analyses"])  # each class
    assert main(["explore", str(lenet["onnx"]), "--images", str(grey_folder), "--export", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["explore", str(lenet["onnx"]), "--images", str(grey_folder), "--export", "/proc/page.html"]) == 2
    assert "cannot write /proc/page.html: folder /proc is not writable" in capsys.readouterr().err
    copy = tmp_path / "copy.onnx"  # --export naming the model it reads, --force too: refused, the model kept
    copy.write_bytes(lenet["onnx"].read_bytes())
    # the name first: "already exists; pass --force" sent the user to a flag that was refused next
    assert main(["explore", str(copy), "--images", str(grey_folder), "--export", str(copy)]) == 2
    assert "expected a file name ending in .html, got" in capsys.readouterr().err
    assert main(["explore", str(copy), "--images", str(grey_folder), "--export", str(copy), "--force"]) == 2
    assert "expected a file name ending in .html, got" in capsys.readouterr().err
    assert copy.read_bytes() == lenet["onnx"].read_bytes()
    # A small budget keeps every stage but shows fewer channels, then fewer inputs.
    model, images = open_with_images(lenet["onnx"], grey_folder)
    full, summary = build_page(model, images, budget=None)
    small, shrunk = build_page(model, images, budget=len(full.encode()) * 2 // 3)
    assert shrunk["maps_per_stage"] < summary["maps_per_stage"] and shrunk["bytes"] <= len(full.encode()) * 2 // 3
    with pytest.raises(CnnlabError, match="over the 0 MiB budget"):
        build_page(model, images, budget=1000)


def test_a_page_that_appears_while_the_static_page_is_made_is_kept_without_force(lenet, grey_folder, tmp_path,
                                                                                  monkeypatch):
    # --export looks at its file before the model work (seconds to minutes for a large model and six inputs); a page
    # another export wrote to the same name meanwhile was replaced without a word
    from cnnlab.explore import page as page_module

    target, build = tmp_path / "page.html", page_module.build_page

    def another_writes_the_same_name(*args, **kwargs):
        made = build(*args, **kwargs)
        target.write_text("precious")
        return made

    monkeypatch.setattr(page_module, "build_page", another_writes_the_same_name)
    model, images = open_with_images(lenet["onnx"], grey_folder)
    with pytest.raises(CnnlabError, match=r"page\.html appeared while it was being written .* nothing was written"):
        page_module.export_page(model, images, target)
    assert target.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]
    assert page_module.export_page(model, images, target, force=True)["path"] == str(target)  # --force replaces it
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_the_page_of_a_model_named_in_another_encoding_is_written(tmp_path, lenet, grey_folder):
    """A file name that is not UTF-8 (Latin-1 from an old archive) went into the page's title as it was, and writing
    the page failed with an internal UnicodeEncodeError; the title shows U+FFFD where its byte was."""
    from cnnlab.cli import main

    latin = tmp_path / os.fsdecode(b"mod\xe8le.onnx")
    shutil.copy(lenet["onnx"], latin)
    assert main(["explore", str(latin), "--images", str(grey_folder), "--export", str(tmp_path / "p.html")]) == 0
    assert "<title>cnnlab explore: mod\ufffdle.onnx</title>" in (tmp_path / "p.html").read_text(encoding="utf-8")


def _request(url: str, method: str, target: str, body: bytes | None = None):
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, target, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_model_server(lenet, grey_folder):
    from cnnlab.explore import BackgroundServer, create_model_app

    model, images = open_with_images(lenet["onnx"], grey_folder)
    with BackgroundServer(app=create_model_app(model, images)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, card = _request(server.url, "GET", "/api/model")
        assert status == 200 and card["kind"] == "ONNX" and card["classes"] == list(CLASSES)
        status, listed = _request(server.url, "GET", "/api/images")
        assert status == 200 and len(listed["images"]) == 8 and listed["classes"] == sorted(CLASSES)
        status, result = _request(server.url, "GET", "/api/analyze?image=3")
        assert status == 200 and result["label"] == listed["images"][3]["label"] == "three"
        assert result["explanation"]["method"] == "occlusion"
        assert _request(server.url, "GET", "/api/analyze?image=99")[0] == 400
        assert _request(server.url, "GET", "/api/analyze?image=x")[0] == 400
        status, result = _request(server.url, "POST", "/api/analyze", _png(np.full((40, 30), 200, np.uint8)))
        assert status == 200 and result["source"] == "your image" and len(result["top"]) == 4
        bomb = io.BytesIO()
        Image.new("1", (20000, 10000)).save(bomb, format="PNG")
        status, body = _request(server.url, "POST", "/api/analyze", bomb.getvalue())
        assert status == 400 and "expected at most 179 megapixels" in body["error"]
        status, body = _request(server.url, "POST", "/api/analyze", b"x" * (MAX_UPLOAD_BYTES + 1))
        assert status == 413
        status, body = _request(server.url, "POST", "/api/analyze", b"not an image")
        assert status == 400 and "\n" not in body["error"]


FUSSY_CODE = """
import torch
from torch import nn


class Fussy(nn.Module):  # a model with checks of its own, as user code has
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        if float(x.mean().detach()) > 0.9:
            raise ValueError("too bright for this model")
        return self.fc(self.conv(x).mean((2, 3)))


class GradShy(Fussy):  # answers every picture, but fails when its gradients are asked for
    def forward(self, x):
        if torch.is_grad_enabled():
            raise ValueError("no gradients in here")
        return super().forward(x)


def fussy():
    return Fussy()


def grad_shy():
    return GradShy()


def flat():  # nothing spatial to explain
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))


class Checked(Fussy):  # checks its input on a copy without gradients, as a model's own guards do
    def forward(self, x):
        if not torch.isfinite(x.detach()).all():
            raise ValueError("not a finite picture")
        return self.fc(self.conv(x).mean((2, 3)))


def checked():
    return Checked()
"""


def test_a_model_s_own_failure_on_a_picture_is_one_line_naming_it(tmp_path, monkeypatch):
    """A module:function model whose own code raised on an upload (a bright one) was answered 500 "internal error"
    with a traceback on the server's console; and its own ValueError while explaining was taken for "no spatial
    stage", the attribution silently dropped. Both are now one line naming the model and its error, answered 422."""
    from cnnlab.explore import BackgroundServer, create_model_app

    (tmp_path / "fussy_models.py").write_text(FUSSY_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    dark, bright = _png(np.full((20, 20), 10, np.uint8)), _png(np.full((20, 20), 250, np.uint8))
    for source, picture, message in (("fussy_models:fussy", bright, "ValueError: too bright for this model"),
                                     ("fussy_models:grad_shy", dark, "ValueError: no gradients in here")):
        with BackgroundServer(app=create_model_app(open_model(source, Options(input_size=16)))) as server:
            status, body = _request(server.url, "POST", "/api/analyze", picture)
            assert status == 422, (source, status, body)
            assert body["error"].startswith(f"{source} failed on the upload ({message}); expected "), body
            assert "\n" not in body["error"]
            if source == "fussy_models:fussy":  # a picture it answers is explained as before
                status, body = _request(server.url, "POST", "/api/analyze", dark)
                assert status == 200 and body["explanation"]["method"] == "grad-cam"
    with BackgroundServer(app=create_model_app(open_model("fussy_models:flat", Options(input_size=16)))) as server:
        status, body = _request(server.url, "POST", "/api/analyze", dark)  # no spatial stage: no explanation
        assert status == 200 and body["explanation"] is None and len(body["top"]) == 3


def test_a_model_that_checks_its_input_on_a_detached_copy_is_explained(tmp_path, monkeypatch):
    # The model's x.detach() is a spatial value made last before its convolution: Grad-CAM asked autograd for the
    # gradient by it, and every analysis was an error ("One of the differentiated Tensors does not require grad").
    (tmp_path / "fussy_models.py").write_text(FUSSY_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = open_model("fussy_models:checked", Options(input_size=16))
    result = analyze_image(model, torch.full((1, 16, 16), 10, dtype=torch.uint8))
    assert result["explanation"]["method"] == "grad-cam" and result["explanation"]["row"] == "conv"


USER_CODE = '''
import torch
from torch import nn


class Nhwc(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x.permute(0, 3, 1, 2)).mean((2, 3)))


def nhwc():
    return Nhwc()


def needs_an_argument(width):
    return Nhwc()


class Squeezed(nn.Module):  # ends as many do, in squeeze(): one image gives 5 scores, not 1 x 5
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3), keepdim=True)).squeeze()


def squeezed():
    return Squeezed()


class Rounded(nn.Module):
    def forward(self, x):
        return (x * 100).long()


def integer():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5), Rounded())


class FixedSize(nn.Module):  # as torchvision's ViT checks its input
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, x):
        assert x.shape[2] == 48, f"Wrong image height! Expected 48 but got {x.shape[2]}!"
        return self.fc(self.conv(x).mean((2, 3)))


def fixed_size():
    return FixedSize()


def raises():
    raise RuntimeError("boom in the user's code")


def exits():
    raise SystemExit(4)


def scripted():
    import warnings

    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript
        warnings.simplefilter("ignore")
        return torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                                              nn.Flatten(), nn.Linear(4, 5)))
'''


@pytest.mark.parametrize("source, message", [
    ("user_models:nhwc", r"user_models:nhwc failed on a 2 x 3 x 32 x 32 NCHW input \(RuntimeError: .*\); if it "
                         r"takes N x H x W x C images, pass --layout NHWC"),
    ("user_models:needs_an_argument", r"user_models:needs_an_argument\(\) failed \(TypeError: .*missing 1 required "
                                      r"positional argument: 'width'\); expected a function that takes no arguments"),
    ("user_models:raises", r"user_models:raises\(\) failed \(RuntimeError: boom in the user's code\)"),
    # a model of another size (a ViT: "Wrong image height! Expected 224") was told to try --layout NHWC
    ("user_models:fixed_size", r"^user_models:fixed_size failed on a 2 x 3 x 32 x 32 NCHW input \(AssertionError: "
                               r"Wrong image height! Expected 48 but got 32!\); if it takes another size, pass that "
                               r"--input-size; expected a classifier of one image batch$"),
    ("user_models:scripted", r"user_models:scripted\(\) returned a TorchScript module, whose layers the explorer "
                             r"cannot watch; expected a plain nn.Module"),
    ("user_broken:build", r"importing 'user_broken' for user_broken:build failed \(SyntaxError: "),
    ("user_raising:build", r"importing 'user_raising' for user_raising:build failed \(ValueError: at import\)"),
    ("user_exiting:build", r"importing 'user_exiting' for user_exiting:build called sys.exit\(3\); expected a module "
                           r"that defines the function"),
    ("user_models:exits", r"user_models:exits\(\) called sys.exit\(4\); expected a function that returns an "
                          r"nn.Module"),
    # every analysis of one image failed on these with an internal error (the server: a 500 per request)
    ("user_models:squeezed", r"^user_models:squeezed is not a classifier: for 1 image it returns 5, expected 1 x "
                             r"classes of float logits$"),
    ("user_models:integer", r"^user_models:integer is not a classifier: for 2 images it returns 2 x 5 of int64, "
                            r"expected 2 x classes of float logits$"),
])
def test_errors_of_the_users_own_code_are_one_line(source, message, tmp_path, monkeypatch):
    """module:function runs the user's code; what that code raises (or a model that fails on the input the flags
    describe) is one line naming the source, the input tried and the error, never an internal error."""
    (tmp_path / "user_models.py").write_text(USER_CODE)
    (tmp_path / "user_broken.py").write_text("def build(:\n")
    (tmp_path / "user_raising.py").write_text("raise ValueError('at import')\n")
    (tmp_path / "user_exiting.py").write_text("import sys\n\nsys.exit(3)\n")  # a script run on import
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CnnlabError, match=message) as e:
        open_model(source, Options(input_size=32))
    assert "\n" not in str(e.value)
    assert open_model("user_models:nhwc", Options(input_size=32, layout="NHWC")).spec.layout == "NHWC"


LAZY_CODE = """
import torch
from torch import nn


def lenet():
    torch.manual_seed(0)
    return nn.Sequential(nn.LazyConv2d(6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.LazyLinear(10))
"""


def test_a_network_of_lazy_layers_is_one_line_without_weights_and_opens_with_them(tmp_path, monkeypatch):
    # The book's nets (nn.LazyConv2d, nn.LazyLinear) have no weights until a first forward pass: module:function
    # returning one was an internal error (ValueError: "Attempted to use an uninitialized parameter").
    (tmp_path / "book_nets.py").write_text(LAZY_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CnnlabError, match=r"^book_nets:lenet\(\) returned a network whose lazy layers have no weights "
                                          r"yet \(0 \(LazyConv2d\), 4 \(LazyLinear\): .*; expected its weights: pass "
                                          r"--weights FILE") as e:
        open_model("book_nets:lenet", Options(input_size=28))
    assert "\n" not in str(e.value)
    import book_nets

    net = book_nets.lenet()
    net(torch.zeros(1, 1, 28, 28))  # as trained on Fashion-MNIST: grey pictures
    torch.save(net.state_dict(), tmp_path / "lenet.pth")
    model = open_model("book_nets:lenet", Options(input_size=28, weights=str(tmp_path / "lenet.pth")))
    assert model.spec.channels == 1
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.logits(images), net.eval()(images.float() / 255), atol=1e-5)


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_mean_and_std_are_refused_for_a_cnnlab_export(kind, lenet):
    """A cnnlab export normalises inside its graph: the flags would apply it twice and shift every answer."""
    with pytest.raises(CnnlabError, match=r"--mean and --std would change the input of .*: it is a cnnlab export, "
                                          r"with its normalisation inside the graph \(it takes float32") as e:
        open_model(lenet[kind], Options(mean=(0.5,), std=(0.25,)))
    assert "\n" not in str(e.value)
    with pytest.raises(CnnlabError, match=r"^--pixel-range would change the input of .* expected no --pixel-range "
                                          r"for it$"):
        open_model(lenet[kind], Options(pixel_range="0-255"))
    assert open_model(lenet[kind]).spec.mean is None  # and without them it opens, taking pixels / 255
    with pytest.raises(CnnlabError, match=r"^--multi-label would read .* as a probability per class: it is a cnnlab "
                                          r"export, of a softmax classifier"):
        open_model(lenet[kind], Options(multi_label=True))


def test_a_cnnlab_checkpoint_refuses_the_flags_of_models_from_elsewhere(lenet):
    with pytest.raises(CnnlabError, match=r"^--input-size, --mean, --std, --pixel-range, --bgr, --layout, "
                                          r"--multi-label and --weights are for models from elsewhere; a cnnlab "
                                          r"checkpoint records its own$"):
        open_model(lenet["run"], Options(multi_label=True))


def test_a_program_of_a_bounded_batch_is_given_as_many_images_at_once_as_it_takes(tmp_path):
    # torch.export.Dim("batch", min=3, max=5): fewer than 3 images failed the program's guard at opening (refused
    # with the hint to pass another --input-size), and more than 5 (predict of a folder, occlusion's 50) were an
    # internal error. Images now go in chunks of at most 5, padded to 3 with copies.
    net = Scorer(4).eval()
    program = torch.export.export(net, (torch.zeros(4, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=3, max=5)},))
    torch.export.save(program, tmp_path / "bounded.pt2")
    model = open_model(tmp_path / "bounded.pt2")
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(images.float() / 255)
    assert torch.allclose(model.logits(images), expected, atol=1e-5)
    rows = model.stages(images[0])
    assert torch.allclose(rows[-1].output[:1], expected[:1], atol=1e-5)
    assert model.attribution(images[0], 0)["method"] == "grad-cam"


@pytest.mark.parametrize("batch", [1, None])  # a program exported at one fixed batch, or at any
def test_a_program_that_returns_two_tensors_is_read_by_its_first(tmp_path, batch):
    # It was refused as "not a classifier: ... returns a tuple of 2".
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(6)
            self.conv = nn.Conv2d(1, 3, 3)

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return y, y * 2

    x = torch.zeros(1 if batch else 2, 1, 8, 8)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1)},)
    torch.export.save(torch.export.export(Two().eval(), (x,), dynamic_shapes=dynamic), tmp_path / "two.pt2")
    model = open_model(tmp_path / "two.pt2")
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # a program fixed to one image runs three as three batches of one
        assert torch.allclose(model.logits(images), Two()(images.float() / 255)[0], atol=1e-6)
    assert "The program has 2 outputs: its first, N x 3, is read as the class scores (not N x 3)." in model.notes


@pytest.mark.parametrize("end", ["squeeze(0)", "[0]"])
def test_a_program_of_one_image_that_drops_the_batch_axis_is_refused_for_what_it_returns(end, tmp_path):
    """A program exported at a batch of one whose forward ends in squeeze(0) (or [0]) gives 5 scores for its one
    image. It was refused as "for 2 images it returns 2": each image's 5 scores were cut to their first as if they
    were rows, and the two firsts put together. It is refused for what it returns, in the words the module's
    refusal uses."""
    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

        def forward(self, x):
            y = self.fc(self.conv(x).mean((2, 3)))
            return y.squeeze(0) if end == "squeeze(0)" else y[0]

    torch.export.save(torch.export.export(Dropped().eval(), (torch.zeros(1, 3, 16, 16),)), tmp_path / "one.pt2")
    with pytest.raises(CnnlabError, match=r"^\S*one.pt2 is not a classifier: for 1 image it returns 5, expected 1 x "
                                          r"classes of float logits$"):
        open_model(tmp_path / "one.pt2")


def test_an_nhwc_program_and_an_unknown_backbone_get_the_flag_or_name_that_fits(tmp_path):
    class Nhwc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.conv(x.permute(0, 3, 1, 2)).mean((2, 3)))

    torch.export.save(torch.export.export(Nhwc().eval(), (torch.randn(2, 16, 16, 3),)), tmp_path / "nhwc.pt2")
    with pytest.raises(CnnlabError, match=r"nhwc.pt2: its input 2 x 16 x 16 x 3 looks like N x H x W x C \(C = 3\), "
                                          r"not N x C x H x W; pass --layout NHWC$"):
        open_model(tmp_path / "nhwc.pt2")
    assert open_model(tmp_path / "nhwc.pt2", Options(layout="NHWC")).spec.hw == (16, 16)
    # a free batch was shown as "None x 16 x 16 x 3"
    torch.export.save(torch.export.export(Nhwc().eval(), (torch.randn(2, 16, 16, 3),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "free.pt2")
    with pytest.raises(CnnlabError, match=r"free.pt2: its input N x 16 x 16 x 3 looks like N x H x W x C \(C = 3\)"):
        open_model(tmp_path / "free.pt2")
    with pytest.raises(CnnlabError, match=r"imagenet-resnet19 does not exist \(.*or an ImageNet backbone: "
                                          r"imagenet-resnet18, "):
        open_model("imagenet-resnet19")


def test_a_stage_of_1_x_1_maps_shows_no_pictures():
    """A global pooling's 1 x 1 maps are numbers, each drawn on its own range as the same black square: no maps."""
    rows = map_rows([Row("pool", "AdaptiveAvgPool2d", torch.rand(1, 16, 1, 1)),
                     Row("conv", "Conv2d", torch.rand(1, 4, 3, 3))])
    assert [(r["name"], r["shape"], len(r["maps"])) for r in rows] == [("pool", [16, 1, 1], 0), ("conv", [4, 3, 3], 4)]


def test_skip_bad_images_leaves_an_unreadable_file_out_and_says_so(lenet, grey_folder, tmp_path, capsys):
    """One corrupt file stopped the whole page; --skip-bad-images (train's flag) shows the rest and names it."""
    from cnnlab.cli import main

    folder = shutil.copytree(grey_folder, tmp_path / "photos")
    first_class = sorted(p.name for p in folder.iterdir())[0]
    (folder / first_class / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(CnnlabError, match="broken.png"):
        open_with_images(lenet["onnx"], folder)
    model, images = open_with_images(lenet["onnx"], folder, skip_bad=True)
    assert len(images.names) == 2 * len(CLASSES) and not any("broken" in n for n in images.names)
    assert len(images.skipped) == 1 and f"{first_class}/broken.png" in images.skipped[0]
    page = tmp_path / "page.html"
    assert main(["explore", str(lenet["onnx"]), "--images", str(folder), "--skip-bad-images", "--export",
                 str(page)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cnnlab explore: skipped image {first_class}/broken.png")
    assert "broken.png" in page.read_text(encoding="utf-8")  # the page's note names it too
    assert main(["explore", str(tmp_path), "--skip-bad-images"]) == 2  # a flag for a model's images, not for runs
    assert "--skip-bad-images applies to one model" in capsys.readouterr().err


def test_bgr_tries_the_rgb_convolution_of_a_module_whose_first_conv_is_grey(tmp_path, monkeypatch):
    """The input's channels are the first that the module runs on, each conv's tried in turn: --bgr, which refuses
    a grey input, moves on to the RGB stem instead of stopping at a grey head registered first."""
    (tmp_path / "late_stem.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.head = nn.Conv2d(1, 2, 1)\n"
        "        self.stem = nn.Conv2d(3, 1, 3, padding=1)\n"
        "        self.fc = nn.Linear(2, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.head(self.stem(x)).mean((2, 3)))\n"
        "def build():\n"
        "    return Net()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = open_model("late_stem:build", Options(input_size=8, bgr=True))
    assert model.spec.channels == 3 and model.spec.bgr


def test_a_program_saved_as_pt_opens_and_a_state_dict_is_told_how_to_be_explored(tmp_path, rgb_folder):
    """A torch.export program saved under a checkpoint's name (``model.pt``) was refused as not a cnnlab
    checkpoint; it opens as the program it is. A state dict (weights without their network) says how a network from
    elsewhere is explored."""
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 14 * 14, 2)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 3, 16, 16),)), tmp_path / "model.pt2")
    (tmp_path / "model.pt2").rename(tmp_path / "model.pt")
    model, images = open_with_images(tmp_path / "model.pt", rgb_folder)
    assert model.kind == open_model(tmp_path / "model.pt").kind != "cnnlab run"
    with torch.no_grad():
        assert torch.allclose(model.logits(images.images), net(images.images.float() / 255), atol=1e-5)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CnnlabError, match=r"weights.pth is not a cnnlab checkpoint: it holds a state dict of 4 "
                                          r"tensors .*; a network from elsewhere is explored as .onnx, as .pt2 "
                                          r"\(torch.export.save\), or built by name \(imagenet-resnet18\) or by "
                                          r"module:function with a state dict as --weights FILE$"):
        open_model(tmp_path / "weights.pth")
    save_file(net.state_dict(), tmp_path / "weights.safetensors")  # it read "no model this explorer opens"
    with pytest.raises(CnnlabError, match=r"weights.safetensors is not a cnnlab checkpoint: it holds a state dict of "
                                          r"4 tensors .* \(safetensors\); .*; a network from elsewhere is explored "
                                          r"as .onnx, .* with a state dict as --weights FILE$"):
        open_model(tmp_path / "weights.safetensors")


def test_weights_go_into_the_network_module_function_builds_and_nowhere_else(tmp_path, monkeypatch, rgb_folder,
                                                                              capsys):
    """`cnnlab explore mynet:build --weights net.pth`: a class and its state dict, the way PyTorch code is shared;
    a file that holds its own weights, or a runs folder, refuses --weights in one line."""
    from cnnlab.cli import main

    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
        "nn.Linear(4, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(1)
    trained = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    torch.save(trained.state_dict(), tmp_path / "net.pth")
    model, images = open_with_images("mynet:build", rgb_folder, Options(input_size=16, weights=tmp_path / "net.pth"))
    with torch.no_grad():
        expected = trained.eval()(images.images.float() / 255)
    assert torch.allclose(model.logits(images.images), expected, atol=1e-5)
    assert f"Its weights: {tmp_path / 'net.pth'} (read weights-only)." in model.notes[0]
    torch.save({"0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "part.pth")
    with pytest.raises(CnnlabError, match=r"part.pth does not fit the network mynet:build\(\) builds: Missing "
                                          r"key\(s\) in state_dict: \"0.bias\""):
        open_model("mynet:build", Options(input_size=16, weights=tmp_path / "part.pth"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        torch.jit.script(trained).save(str(tmp_path / "scripted.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.load's "dispatching to torch.jit.load" warning came first
        with pytest.raises(CnnlabError, match=r"scripted.pt is a TorchScript archive \(torch.jit.save\), not a state "
                                              r"dict; expected a state dict of the network mynet:build\(\) builds"):
            open_model("mynet:build", Options(input_size=16, weights=tmp_path / "scripted.pt"))
    onnx_file = _onnx_of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)), tmp_path / "m.onnx")
    with pytest.raises(CnnlabError, match=r"^--weights puts a state dict into a network built by name "
                                          r"\(imagenet-resnet18, ...\) or by module:function; .*m.onnx is no such "
                                          r"name, and a file holds its own weights; expected no --weights for it$"):
        open_model(onnx_file, Options(weights=tmp_path / "net.pth"))
    assert main(["explore", str(tmp_path), "--weights", str(tmp_path / "net.pth")]) == 2
    assert "--weights applies to one model" in capsys.readouterr().err


GATED = """
import torch
from torch import nn
import torch.nn.functional as F


class Gated(nn.Module):
    '''A learnt scalar gate through a sigmoid (SkipInit-style), and a TensorFlow-style "SAME" convolution whose
    padding is worked out from the input's size (timm's Conv2dSame): values of the network's own, not per image.'''

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2)
        self.fc = nn.Linear(8, 5)
        self.g = nn.Parameter(torch.tensor(0.3))
        self.act = nn.Sigmoid()

    def forward(self, x):
        h = x.shape[-2]
        if isinstance(h, torch.Tensor):
            pad = torch.clamp(((h / 2).ceil() - 1) * 2 + 3 - h, min=0)
        else:
            pad = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
        x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))) * self.act(self.g)


def build():
    torch.manual_seed(0)
    return Gated().eval()
"""


@pytest.mark.parametrize("kind", ["module", "pt2", "onnx"])
def test_values_of_the_networks_own_without_a_batch_axis_are_no_stages(tmp_path, monkeypatch, rgb_folder, kind):
    """A scalar gate through nn.Sigmoid, and the padding a "SAME" convolution computes (a Clip of a 0-d number in
    ONNX), are computed once for a batch, not per image: each kind failed with an internal error (IndexError) on
    them, the ONNX one as the file was opened; they are left out of the stages. (One of leading axis 1, a learnt
    1 x C x 1 x 1 gate: test_a_learnt_gate_of_leading_axis_1_is_no_stage.)"""
    (tmp_path / "gated.py").write_text(GATED)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gated

    net = gated.build()
    source = "gated:build"
    if kind == "pt2":
        program = torch.export.export(net, (torch.zeros(2, 3, 32, 32),),
                                      dynamic_shapes=({0: torch.export.Dim("N", min=1, max=64)},))
        torch.export.save(program, tmp_path / "gated.pt2")
        source = tmp_path / "gated.pt2"
    elif kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "gated.onnx"), dynamo=False,
                              do_constant_folding=False, input_names=["x"],
                              dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
        source = tmp_path / "gated.onnx"
    model, images = open_with_images(source, rgb_folder, Options(input_size=32))
    with torch.no_grad():
        expected = net(images.images.float() / 255)
    assert torch.allclose(model.logits(images.images), expected, atol=1e-5)
    rows = model.stages(images.images[0])
    assert all(r.output.ndim >= 1 and r.output.shape[0] == 1 for r in rows)
    assert not any(r.kind.lower() in ("sigmoid", "clip", "clamp") for r in rows)
    assert any(r.kind.lower() in ("relu", "conv2d", "conv") for r in rows)
    result = analyze_image(model, images.images[0])
    assert result["top"] and result["rows"]
    if kind == "module":  # the layer table shows the gate whole
        assert {"name": "act", "op": "Sigmoid", "shape": [], "params": 0} in model.layers()


def test_ops_of_a_programs_own_forward_are_named(tmp_path):
    """A .pt2 whose forward calls F.relu and F.max_pool2d itself named those rows '', '#2', '#3' (Grad-CAM's row
    '#3') and the layer table's ''; they take the node's name, as ONNX's rows take /Relu."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
            return self.fc(x.mean((2, 3)))

    torch.export.save(torch.export.export(Net().eval(), (torch.zeros(1, 3, 16, 16),)), tmp_path / "net.pt2")
    model = open_model(tmp_path / "net.pt2")
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    assert [r.name for r in model.stages(image)] == ["c1", "relu", "c2", "relu_1", "max_pool2d", "output"]
    assert [row["name"] for row in model.layers()] == ["c1", "relu", "c2", "relu_1", "max_pool2d", "fc"]
    assert analyze_image(model, image)["explanation"]["row"] == "max_pool2d"


@pytest.mark.parametrize("activation, op", [(nn.SiLU(), "silu"), (nn.GELU(approximate="tanh"), "gelu")])
def test_an_activation_written_as_several_nodes_shows_its_own_output(activation, op, tmp_path):
    """torch's dynamo ONNX exporter and run_decompositions() write SiLU as x * sigmoid(x) (Sigmoid, then Mul), as
    EfficientNet and MobileNetV3 use it, and a tanh GELU as arithmetic around a Tanh: the row named after the
    activation showed the sigmoid's (the tanh's) output, not the activation's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    x = torch.zeros(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # opset 18: from opset 20 on, ONNX has a Gelu of its own
        torch.onnx.export(net, (x,), None, dynamo=True, verbose=False, opset_version=18).save(
            str(tmp_path / "net.onnx"), external_data=False)
    torch.export.save(torch.export.export(net, (x,)).run_decompositions(), tmp_path / "net.pt2")
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net[1](net[0](image[None].float() / 255))  # torch's own activation at that point
    for kind in ("onnx", "pt2"):
        model = open_model(tmp_path / f"net.{kind}")
        rows = model.stages(image)
        assert [r.name for r in rows[:-1]] == ["0", "1"], kind  # one row for the activation, not one per node
        assert rows[1].kind == op, kind
        assert torch.allclose(rows[1].output[:1], expected, atol=1e-5), kind
        assert analyze_image(model, image)["explanation"] is not None, kind


def test_a_quantized_linear_layers_weights_are_counted(tmp_path):
    """onnxruntime's static quantization (QOperator format) makes a Linear a com.microsoft QGemm, whose int8
    weight and int32 bias were left out of the parameter count (1392 for the float graph's 1477)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    torch.manual_seed(12)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "f.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"])

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Calibration(),
                        quant_format=QuantFormat.QOperator)
    assert any(n.op_type == "QGemm" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    params = sum(p.numel() for p in net.parameters())
    assert model_card(open_model(tmp_path / "q.onnx"))["params"] == model_card(open_model(tmp_path / "f.onnx"))[
        "params"] == params


def test_a_graph_onnxruntime_optimized_shows_the_networks_own_maps_and_first_kernels(tmp_path):
    """A graph saved by onnxruntime's optimizer (``SessionOptions.optimized_model_filepath``). At its extended level a
    Conv and its activation are one com.microsoft FusedConv and SiLU a QuickGelu: neither was a stage, and the
    page's first-layer kernels were those of the first plain Conv left, a 1 x 1 one deep inside. At its highest
    level on an x86 CPU, com.microsoft.nchwc's convolutions work in a blocked layout: their outputs were shown as
    N x C x H x W maps (a scramble, of channels padded to the block) and their reordered weights as the kernels."""
    torch.manual_seed(13)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.Sigmoid(), nn.Conv2d(8, 8, 1), nn.SiLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
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


class _Inception(nn.Module):  # branches concatenated along the channels, as GoogLeNet's and Inception v3's blocks
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 2, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class _ConvNeXtBlock(nn.Module):  # a layer scale (a parameter, before the map it scales) and a residual sum
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.scale = nn.Parameter(torch.full((4, 1, 1), 0.5))

    def forward(self, x):
        out = self.scale * self.dw(x)
        out += x
        return out


class _Ends(nn.Module):
    """The end of a network nobody here wrote, in small: ``map(x)`` is the map its head pools."""

    def __init__(self, end: str):
        super().__init__()
        torch.manual_seed(21)
        self.end = end
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = {"inception": _Inception, "convnext": _ConvNeXtBlock,
                      "densenet": lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))}[end]()
        self.fc = nn.Linear(8 if end == "inception" else 4, 3)

    def map(self, x):
        y = self.block(self.stem(x))
        return F.relu(y, inplace=True) if self.end == "densenet" else y  # DenseNet's forward, as torchvision's

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.map(x), 1).flatten(1))


@pytest.mark.parametrize("end, row", [("inception", "block"), ("convnext", "block"), ("densenet", "relu")])
def test_grad_cam_weighs_the_map_the_head_pools(end, row, tmp_path):
    """Grad-CAM took the last stage that ran: the last branch of the last Inception block (192 of Inception v3's
    2,048 channels, and zero everywhere for most images), the depthwise convolution inside ConvNeXt's last block
    rather than the block's output, DenseNet's last batch norm before the F.relu of its own forward. It now weighs
    the last map the pass made that the class score reads, in the module and its .pt2 alike."""
    from cnnlab.explore.module_model import ModuleModel

    net = _Ends(end).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 3, 12, 12),)), tmp_path / "net.pt2")
    models = {"module": ModuleModel(net, "net", Options(input_size=12)), "pt2": open_model(tmp_path / "net.pt2")}
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    x = models["module"].spec.to_input(image[None])
    for target in range(3):
        a = net.map(x).detach().requires_grad_(True)
        [grad] = torch.autograd.grad(net.fc(F.adaptive_avg_pool2d(a, 1).flatten(1))[0, target], [a])
        want = F.relu((grad[0].mean((1, 2), keepdim=True) * a[0]).sum(0)).detach()
        for kind, model in models.items():
            e = explain_with(model._scored_pass, x, target)
            assert e.row.startswith(row), (kind, e.row)
            assert torch.allclose(e.cam, want, atol=1e-6), (kind, target)
    assert analyze_image(models["module"], image)["explanation"]["row"] == row


def test_each_map_is_a_grad_cam_candidate_once():
    """A module's stage pass listed each stage twice among the maps Grad-CAM may weigh: its value and the copy the
    rest of the network reads (so 8 places held 4 maps). Each is listed once; the map weighed and Grad-CAM are
    those of the class score's own last map, resnet18's layer4 output, as by hand."""
    import torchvision

    from cnnlab.explore.module_model import ModuleModel
    from cnnlab.explore.torch_models import TAIL

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    model = ModuleModel(net, "resnet18", Options(input_size=64))
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = model.spec.to_input(image[None])
    _, tail = model._stage_pass(x)
    assert len(tail) == TAIL and len({id(r) for r in tail}) == TAIL
    assert len({id(r.output) for r in tail}) == TAIL
    assert [r.name for r in tail][-3:] == ["layer4.1.bn2", "layer4.1", "layer4.1.relu#2"]
    a = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))).detach()
    a.requires_grad_(True)
    [grad] = torch.autograd.grad(net.fc(net.avgpool(a).flatten(1))[0, 3], [a])
    e = explain_with(model._stage_pass, x, 3)
    assert e.row == "layer4.1.relu#2"
    assert torch.allclose(e.cam, F.relu((grad[0].mean((1, 2), keepdim=True) * a[0]).sum(0)), atol=1e-6)


GATES = '''
import torch
from torch import nn


class Gates(nn.Module):
    """Learnt gates of leading axis 1 through nn.Sigmoid: one per channel (1 x C x 1 x 1), and one per position
    (1 x C x H x W): the network's own values, whatever their shape."""

    def __init__(self, spatial):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.g = nn.Parameter(torch.randn(1, 4, 12, 12) if spatial else torch.randn(1, 4, 1, 1))
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc((torch.relu(self.conv(x)) * self.gate(self.g)).mean((2, 3)))


def channels():
    return Gates(False).eval()


def positions():
    return Gates(True).eval()
'''


@pytest.mark.parametrize("gate, whole", [("channels", [1, 4, 1, 1]), ("positions", [1, 4, 12, 12])])
@pytest.mark.parametrize("kind", ["module", "pt2", "onnx"])
def test_a_learnt_gate_of_leading_axis_1_is_no_stage(gate, whole, kind, tmp_path, monkeypatch):
    """A gate computed from a parameter alone was shown as a stage whenever its leading axis was 1 (one image's
    pass cannot tell it from one image's value), and a gate of 1 x C x H x W, the last map, took Grad-CAM. A value
    is a stage only where it comes from the image: the module's pass follows each value from the parameters, the
    program's and the graph's nodes from their input."""
    (tmp_path / "gates.py").write_text(GATES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gates

    net = getattr(gates, gate)()
    source = f"gates:{gate}"
    if kind == "pt2":
        torch.export.save(torch.export.export(net, (torch.zeros(1, 3, 12, 12),)), tmp_path / "g.pt2")
        source = tmp_path / "g.pt2"
    elif kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 12, 12),), str(tmp_path / "g.onnx"), dynamo=False,
                              do_constant_folding=False, input_names=["x"])
        source = tmp_path / "g.onnx"
    model = open_model(source, Options(input_size=12 if kind == "module" else None))
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    rows = model.stages(image)
    # (torch.relu in forward's own code is no module: hooks see the convolution only)
    assert [r.kind.lower() for r in rows] == {"module": ["conv2d", "output"], "pt2": ["conv2d", "relu", "output"],
                                              "onnx": ["conv", "relu", "output"]}[kind]
    with torch.no_grad():
        want = net(image[None].float() / 255).softmax(1)
    assert torch.allclose(model.scoring.probabilities(rows[-1].output), want, atol=1e-5)
    result = analyze_image(model, image)
    if kind != "onnx":  # Grad-CAM on the gated map, not on the gate
        assert result["explanation"]["row"] == "mul"
    [table] = [r for r in model.layers() if r["op"].lower() == "sigmoid"]  # the layer table shows the gate whole
    assert table["shape"] == whole
    assert model_card(model)["params"] == sum(p.numel() for p in net.parameters())  # the gate's parameter too


class _Arithmetic(nn.Module):
    def __init__(self, end: str):
        super().__init__()
        self.a, self.end = Scorer(4), end
        self.b = Scorer(4, fc=torch.randn(4, 5, generator=torch.Generator().manual_seed(7)))

    def forward(self, x):
        if self.end == "scaled":
            return F.softmax(self.a(x) * 3, 1) * 1.0
        if self.end == "ensemble":  # an average of two softmaxes
            return (self.a(x).softmax(1) + self.b(x).softmax(1)) / 2
        return F.log_softmax(self.a(x), 1) * 1.0  # log-probabilities: logits as good as any


@pytest.mark.parametrize("end", ["scaled", "ensemble", "log"])
def test_probabilities_after_arithmetic_are_not_softmaxed_again(end, tmp_path):
    """A model ending in softmax(x) * 1.0, or averaging two softmaxes, was read as logits: its probabilities were
    softmaxed a second time, every figure flattened towards 1 / classes. Outputs that are at least 0 and sum to 1
    for every image tried are read as probabilities, in all three kinds, and the page says why."""
    from cnnlab.explore.module_model import ModuleModel

    net = _Arithmetic(end).eval()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = net(images.float() / 255)
    want = out.exp() if end == "log" else out
    for kind, model in {"module": ModuleModel(net, end, Options(input_size=8)),
                        "pt2": open_model(_pt2_of(net, tmp_path / "a.pt2")),
                        "onnx": open_model(_onnx_of(net, tmp_path / "a.onnx"))}.items():
        assert torch.allclose(model.scoring.probabilities(model.logits(images)), want, atol=1e-5), kind
        said = [n for n in model.notes if "sum to 1" in n]
        assert model.scoring.from_values == (end != "log") and len(said) == (end != "log"), kind
        top = analyze_image(model, images[0])["top"][0]["probability"]
        assert top == pytest.approx(float(want[0].max()), abs=1e-5), kind


class _TinyViT(nn.Module):
    """A vision transformer in small: a patch embedding, a class token and position embedding (parameters of the
    model itself), nn.MultiheadAttention (which reads its out_proj's weight without calling it), a layer scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.token, self.position = nn.Parameter(torch.randn(1, 1, 8)), nn.Parameter(torch.randn(1, 5, 8))
        self.attention, self.norm = nn.MultiheadAttention(8, 2, batch_first=True), nn.LayerNorm(8)
        self.scale = nn.Parameter(torch.ones(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.token.expand(x.shape[0], -1, -1), t], 1) + self.position
        t = t + self.scale * self.attention(t, t, t, need_weights=False)[0]
        return self.head(self.norm(t)[:, 0])


def test_a_transformers_parameters_are_all_counted_and_the_page_says_it_works_on_tokens(tmp_path):
    """The layer table of a module counted the parameters of the leaf modules that ran: a ViT's class token,
    position embedding and attention projections (parameters read by modules around others) were left out,
    vit_b_16's 86 million parameters shown as 57 million. And the page showed one row of maps and said nothing of
    the tokens the network works on after it."""
    from cnnlab.explore.module_model import ModuleModel

    net = _TinyViT().eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 8, 8),),  # a free batch: views by sym sizes
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)),
                      tmp_path / "vit.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(tmp_path / "vit.onnx"), dynamo=False,
                          input_names=["x"])
    total = sum(p.numel() for p in net.parameters())
    models = {"module": ModuleModel(net, "vit", Options(input_size=8)), "pt2": open_model(tmp_path / "vit.pt2"),
              "onnx": open_model(tmp_path / "vit.onnx")}
    for kind, model in models.items():
        if kind != "onnx":  # (the ONNX exporter folds and merges initializers)
            assert model_card(model)["params"] == total, kind
        [said] = [n for n in model.notes if "tokens" in n]
        assert said.startswith("Not a convolutional network throughout: after ") and "N x 5 x 8" in said, kind
        assert ("Grad-CAM" in said) == (kind != "onnx"), kind
        if kind != "onnx":  # at the patch embedding's map, not at the heads x tokens x width inside the attention
            assert analyze_image(model, torch.zeros(3, 8, 8, dtype=torch.uint8))["explanation"]["row"] == "embed"
    rows = {r["name"]: r for r in models["module"].layers()}
    assert rows["attention"]["params"] == sum(p.numel() for p in net.attention.parameters())
    assert rows["_TinyViT"]["params"] == 8 + 40 + 8  # the token, the position embedding, the layer scale
    assert not [n for n in ModuleModel(Scorer(3), "cnn", Options(input_size=8)).notes if "tokens" in n]


class _LeViTLike(nn.Module):
    """A LeViT in small: a convolutional stem, then tokens whose linear layer is followed by a BatchNorm1d over the
    tokens flattened to (N * L) x C (timm's LinearNorm), and an attention whose queries, keys and values are views
    N x L x heads x width of them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.embed = nn.Conv2d(3, 8, 2, 2)
        self.qkv, self.norm, self.act = nn.Linear(8, 24), nn.BatchNorm1d(24), nn.Hardswish()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        b, n, _ = t.shape
        qkv = self.norm(self.qkv(t).flatten(0, 1)).reshape(b, n, -1)
        q, k, v = (part.transpose(1, 2) for part in qkv.view(b, n, 2, 12).split(4, dim=3))
        t = t + self.act(((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, 8))
        return self.head(t.mean(1))


def test_grad_cam_of_a_network_whose_tokens_go_through_a_batch_norm_is_taken_at_its_last_map(tmp_path):
    """A batch norm over tokens flattened to (N * L) x C (LeViT's, after each of its linear layers) tagged them as
    channels-first maps, so that the attention's N x L x heads x width views were read as maps of L channels:
    timm's levit_128s at 224 px had its Grad-CAM taken on an 8 x 64 "map" inside its last attention, while the page
    said it was taken at the last map before the tokens. A 2-d value has no map; the tokens stay tokens."""
    from cnnlab.explore.module_model import ModuleModel

    net = _LeViTLike().eval()
    program = torch.export.export(net, (torch.zeros(1, 3, 8, 8),))
    torch.export.save(program, tmp_path / "levit.pt2")
    # and as the core ATen program a backend takes (its linear layers bmm, its batch norm three outputs)
    torch.export.save(program.run_decompositions(), tmp_path / "core.pt2")
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(12))
    for kind, model in {"module": ModuleModel(net, "levit", Options(input_size=8)),
                        "pt2": open_model(tmp_path / "levit.pt2"),
                        "pt2 after run_decompositions": open_model(tmp_path / "core.pt2")}.items():
        said = [n for n in model.notes if "tokens" in n]  # (decomposed, Hardswish is arithmetic: no token stage)
        assert all("Grad-CAM is taken at the last map" in n for n in said) and (said or "decompositions" in kind)
        assert analyze_image(model, image)["explanation"]["row"] == "embed", kind


class _PooledTokens(nn.Module):
    """Tokens pooled as Hugging Face's Swin pools them: turned to N x C x L and averaged by nn.AdaptiveAvgPool1d, an
    N x C x 1 value of three axes that is no tokens."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(13)
        self.embed, self.norm, self.act = nn.Conv2d(3, 8, 4, 4), nn.LayerNorm(8), nn.GELU()
        self.pool, self.head = nn.AdaptiveAvgPool1d(1), nn.Linear(8, 3)

    def forward(self, x):
        t = self.act(self.norm(self.embed(x).flatten(2).transpose(1, 2)))
        return self.head(self.pool(t.transpose(1, 2)).flatten(1))


@pytest.mark.parametrize("kind", ["module", "pt2", "onnx"])
def test_the_token_note_names_the_tokens_not_their_pooled_features(kind, tmp_path):
    """Hugging Face's Swin (and any network whose head pools its tokens with nn.AdaptiveAvgPool1d) had its page say
    its stages work on "tokens (N x 32 x 1 ...)": the pooled N x C x 1 features were counted and shown as the tokens."""
    from cnnlab.explore.module_model import ModuleModel

    net = _PooledTokens().eval()
    x = torch.zeros(1, 3, 8, 8)
    if kind == "pt2":
        torch.export.save(torch.export.export(net, (x,)), tmp_path / "pooled.pt2")
    elif kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(tmp_path / "pooled.onnx"), dynamo=False, opset_version=17)
    model = ModuleModel(net, "pooled", Options(input_size=8)) if kind == "module" else \
        open_model(tmp_path / f"pooled.{kind}")
    [said] = [n for n in model.notes if "tokens" in n]
    # (2 in torch: the LayerNorm and the GELU; the ONNX graph's GELU, before opset 20, is arithmetic)
    assert f"{1 if kind == 'onnx' else 2} of its stages work on tokens (N x 4 x 8, as a vision transformer's do)" \
        in said, said


class _Aux(nn.Module):  # an auxiliary head that runs in training only, as GoogLeNet's and Inception v3's
    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
        self.aux = nn.Sequential(nn.Conv2d(4, 2, 1), nn.Flatten(), nn.LazyLinear(3))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        logits = self.fc(y.mean((2, 3)))
        return (logits, self.aux(y)) if self.training else logits


def test_parameters_the_forward_pass_never_reads_are_named():
    """GoogLeNet's page said 5,610,154 parameters of a module holding 9,960,638, without a word: its auxiliary
    heads run in training only. The count stays the pass's (the .pt2 and ONNX exports hold no more), and the page
    names what it leaves out."""
    from cnnlab.explore.module_model import ModuleModel

    net = _Aux()
    net.train()(torch.zeros(1, 3, 8, 8))  # the lazy layer takes its shape
    model = ModuleModel(net.eval(), "aux", Options(input_size=8))
    idle = sum(p.numel() for p in net.aux.parameters())
    assert model_card(model)["params"] == sum(p.numel() for p in net.parameters()) - idle
    assert f"{idle:,} of its parameters are not read by its forward pass in evaluation (aux): they are left out of " \
        "the layer table and its total." in model.notes
    assert not [n for n in ModuleModel(Scorer(3), "all", Options(input_size=8)).notes if "not read" in n]

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


class _Returns(nn.Module):
    def __init__(self, what: str):
        super().__init__()
        self.conv, self.what = nn.Conv2d(3, 4, 3, padding=1), what

    def forward(self, x):
        y = self.conv(x)
        if self.what == "boxes":  # as torchvision's detectors return, one dict per image
            return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
                    for _ in range(x.shape[0])]
        if self.what == "segments":  # as torchvision's segmentation models return
            return {"out": y}
        if self.what == "pooled":  # a convolutional head's class scores, not flattened (SqueezeNet's without it)
            return y.mean((2, 3), keepdim=True)
        if self.what == "features":  # a backbone's maps at each scale, as timm's features_only=True returns them
            return [y, F.max_pool2d(y, 2)]
        return y, y.mean((2, 3))  # per-pixel scores first, then an image's


def test_a_half_precision_module_is_told_to_be_float32_not_another_input_size():
    # Fed float32, a float16 model fails on its first layer; the line ended "if it takes another size, pass that
    # --input-size", which no size would have mended
    from cnnlab.explore.module_model import ModuleModel

    net = Scorer(3).eval().half()
    with pytest.raises(CnnlabError, match=r"failed on a 2 x 1 x 8 x 8 NCHW input \(RuntimeError: .*\); it holds "
                                          r"float16 weights and is fed float32: convert it with .float\(\); expected "
                                          r"a classifier") as e:
        ModuleModel(net, "half", Options(input_size=8))
    assert "--input-size" not in str(e.value)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 5e-3), (torch.float64, 1e-6)])
def test_a_program_exported_in_another_precision_is_fed_its_own_type(tmp_path, dtype, tolerance):
    """A .pt2 exported in half precision was told to "convert it with .float()", which a program file cannot be:
    it is fed its own type, and scores as its float32 twin does, Grad-CAM included."""
    torch.manual_seed(0)
    net = Scorer(3).eval()
    _pt2_of(net, tmp_path / "float.pt2")
    torch.export.save(torch.export.export(copy.deepcopy(net).to(dtype), (torch.zeros(2, 1, 8, 8, dtype=dtype),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)),
                      tmp_path / "other.pt2")
    other, float_ = open_model(tmp_path / "other.pt2"), open_model(tmp_path / "float.pt2")
    assert other.spec.describe().startswith(f"{str(dtype).removeprefix('torch.')} N x C x H x W, 1 channel at 8 x 8")
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(other.logits(images), float_.logits(images), atol=tolerance, rtol=tolerance)
    got = analyze_image(other, images[0])
    assert got["explanation"]["method"] == "grad-cam" and got["top"][0]["index"] == \
        analyze_image(float_, images[0])["top"][0]["index"]



@pytest.mark.parametrize("what, said", [
    ("boxes", r"returns a list of 2 dicts of 'boxes', 'labels', 'scores', expected 2 x classes of float logits "
              r"\(these are a detector's boxes: the explorer explains image classifiers\)$"),
    ("segments", r"returns a dict of 'out' \(2 x 4 x 8 x 8\), expected 2 x classes of float logits \(a map of "
                 r"scores per pixel is a segmentation model's: the explorer explains image classifiers\)$"),
    ("segments first", r"returns a tuple of 2 \(2 x 4 x 8 x 8, 2 x 4\), expected 2 x classes of float logits \(a map "
                       r"of scores per pixel is a segmentation model's: the explorer explains image classifiers\)$"),
    ("features", r"returns a list of 2 \(2 x 4 x 8 x 8, 2 x 4 x 4 x 4\), expected 2 x classes of float logits "
                 r"\(maps at several scales are a backbone's features, as timm's features_only=True returns them: "
                 r"the explorer explains image classifiers\)$")])
def test_a_detector_and_a_segmentation_model_are_told_what_they_return(what, said):
    """Refused in one line as "it returns list" / "OrderedDict" / "tuple": now what they hold, and why. A backbone's
    feature maps at several scales (timm's features_only) were said to be "a segmentation model's" scores."""
    from cnnlab.explore.module_model import ModuleModel

    with pytest.raises(CnnlabError, match=r"^net is not a classifier: for 2 images it " + said):
        ModuleModel(_Returns(what).eval(), "net", Options(input_size=8))


@pytest.mark.parametrize("kind", ["pt2", "onnx"])
def test_a_backbones_feature_maps_are_told_as_such_in_every_kind(kind, tmp_path):
    """A backbone's maps at several scales (timm's features_only=True) were refused as "a segmentation model's"
    per-pixel scores; the ONNX graph named its first output only."""
    net = _Returns("features").eval()
    x = torch.zeros(1, 3, 8, 8)
    if kind == "pt2":
        torch.export.save(torch.export.export(net, (x,)), tmp_path / "features.pt2")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(tmp_path / "features.onnx"), dynamo=False, opset_version=17)
    with pytest.raises(CnnlabError, match=r"is not a classifier: .*\(maps at several scales are a backbone's "
                                          r"features, as timm's features_only=True returns them: the explorer "
                                          r"explains image classifiers\)$"):
        open_model(tmp_path / f"features.{kind}")


@pytest.mark.parametrize("kind", ["module", "pt2", "onnx", "onnx of dynamic sides"])
def test_class_scores_on_a_1_by_1_map_are_read_as_the_class_scores(kind, tmp_path):
    """A convolutional head's scores left unflattened (N x K x 1 x 1: SqueezeNet's without its flatten, the ONNX
    model zoo's Caffe-converted classifiers) were refused in every kind; they are the class scores, and the page
    says how they were read."""
    from cnnlab.explore.module_model import ModuleModel

    torch.manual_seed(0)
    # of dynamic sides: a head whose kernel spans the 8-px input (a fully convolutional classifier, VGG's in Caffe),
    # whose map's sides shape inference cannot know; the graph's output at 8 px tells
    net = (nn.Conv2d(3, 4, 8) if kind == "onnx of dynamic sides" else _Returns("pooled")).eval()
    x = torch.zeros(1, 3, 8, 8)
    if kind == "module":
        model = ModuleModel(net, "net", Options(input_size=8))
    elif kind == "pt2":
        batch = torch.export.Dim("batch", min=1, max=64)
        torch.export.save(torch.export.export(net, (x.expand(2, -1, -1, -1),), dynamic_shapes=({0: batch},)),
                          str(tmp_path / "head.pt2"))
        model = open_model(tmp_path / "head.pt2")
    else:
        sides = kind == "onnx of dynamic sides"
        axes = {"x": {0: "n", 2: "h", 3: "w"}, "scores": {0: "n", 2: "a", 3: "b"}} if sides else \
            {"x": {0: "n"}, "scores": {0: "n"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(tmp_path / "head.onnx"), dynamo=False, input_names=["x"],
                              output_names=["scores"], dynamic_axes=axes)
        model = open_model(tmp_path / "head.onnx", Options(input_size=8) if sides else None)
    assert model.classes == ("class 0", "class 1", "class 2", "class 3")
    assert any("class scores as N x 4 x 1 x 1" in note and "read as N x 4" in note for note in model.notes)
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(images.float() / 255).flatten(1)
    torch.testing.assert_close(model.logits(images), expected, atol=1e-5, rtol=1e-5)
    page = analyze_image(model, images[0])
    assert page["rows"][-1]["shape"] == [4]
    assert [t["index"] for t in page["top"]] == expected[0].softmax(0).argsort(descending=True)[:len(page["top"])] \
        .tolist()
    assert page["explanation"] is not None


def test_a_1_by_1_map_that_is_no_class_scores_is_refused_for_what_it_is():
    """Read as class scores, a 1 x 1 map still has to be float scores of one row per image."""
    from cnnlab.explore.module_model import ModuleModel

    class Votes(nn.Module):
        def forward(self, x):
            return x.mean((2, 3), keepdim=True).argmax(1, keepdim=True).expand(-1, 3, -1, -1)

    with pytest.raises(CnnlabError, match=r"^net is not a classifier: for 2 images it returns 2 x 3 x 1 x 1 of int64, "
                                          r"expected 2 x classes of float logits$"):
        ModuleModel(Votes(), "net", Options(input_size=8))


def test_an_imagenet_name_cnnlab_does_not_build_is_told_how_to_bring_it(tmp_path):
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(CnnlabError, match=r"^imagenet-densenet121 is not an ImageNet backbone cnnlab builds by name "
                                          r"\(imagenet-resnet18, .*\); for another network, name a module:function "
                                          r"that builds it \(torchvision.models.densenet121\(weights=None\), say\) "
                                          r"with --weights FILE$"):
        open_model("imagenet-densenet121", Options(weights=tmp_path / "w.pth"))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
