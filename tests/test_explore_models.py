"""cnnlab explore for any CNN: one model abstraction over cnnlab runs, ONNX graphs and PyTorch models.

Here, what compares the kinds and what they share. A cnnlab LeNet trained a few steps and exported by cnnlab's own
export (ONNX and .pt2), torchvision's mobilenet_v3_small and resnet18 with seeded random weights exported by the test
(both made in explore_support.py), and small networks of the shapes others write (channels-last blocks, tokens,
learnt gates), each explored as a module, its .pt2 and its ONNX export alike; then analyze_image and occlusion, the
input flags, the image folders, open_model's refusals, the static page and the model server. Each kind's own tests
are in test_explore_onnx.py, test_explore_pt2.py and test_explore_module.py, how outputs are read in
test_explore_outputs.py. Torch is the oracle for every number.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import warnings
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import explore_support
from cnnlab.errors import CnnlabError
from cnnlab.explore import imagefolder
from cnnlab.explore.gradcam import explain_with
from cnnlab.explore.imagefolder import list_images
from cnnlab.explore.images import MAX_UPLOAD_BYTES
from cnnlab.explore.model import Options, analyze_image, model_card, occlusion, occlusion_pngs, patch_pixels
from cnnlab.explore.outputs import Scoring
from cnnlab.explore.probe import map_rows
from cnnlab.explore.sources import open_model, open_with_images
from cnnlab.models.summary import stages
from cnnlab.report.features import Row
from explore_support import CLASSES, Scorer, _nhwc_graph, _onnx_of, _png, _request, _torchvision

ort = pytest.importorskip("onnxruntime")

# shared fixtures
one_thread, grey_folder, rgb_folder, lenet = (explore_support.one_thread, explore_support.grey_folder,
                                              explore_support.rgb_folder, explore_support.lenet)


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


def test_a_runs_stage_outputs_are_let_go_once_their_pictures_are_taken(lenet, grey_folder):
    """A cnnlab run's rows (run_rows) each held their whole output until the pass ended: each row but the last (the
    logits) is now let go once what the page shows of it is taken, as the next row starts; the page is the same."""
    model, images = open_with_images(lenet["run"], grey_folder)
    layers = stages(model.trained.model)
    made, held = [], []

    def note(mod, args, out):  # weak references: how many outputs before the last two anyone still holds
        made.append(weakref.ref(out))
        if mod is layers[-1]:
            held.append(sum(output() is not None for output in made[:-2]))
            made.clear()

    handles = [m.register_forward_hook(note) for m in layers]
    try:
        whole = model.stages(images.images[0])  # the outputs themselves, asked for: held (the check sees them)
        answer = analyze_image(model, images.images[0])
    finally:
        for handle in handles:
            handle.remove()
    assert held[0] >= 5 and held[1] == 0, held  # (held[2]: Grad-CAM's pass, its backward reads them)
    assert answer["rows"] == map_rows(whole)


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
    with pytest.raises(CnnlabError, match=r"free.onnx has a dynamic input size \(height x width 16 x 'W'\); pass "
                                          r"--input-size SIDE or HEIGHTxWIDTH"):
        open_model(tmp_path / "free.onnx")
    with pytest.raises(CnnlabError, match=r"^--input-size 24 gives a height of 24, but .*free.onnx fixes its height "
                                          r"to 16; expected a height of 16$"):
        open_model(tmp_path / "free.onnx", Options(input_size=24))
    assert open_model(tmp_path / "free.onnx", Options(input_size=(16, 40))).spec.hw == (16, 40)


def base64_png(url: str) -> bytes:
    import base64

    return base64.b64decode(url.split(",", 1)[1])


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
    listing = list_images(flat)
    assert len(listing.files) == 3 and listing.classes == () and listing.root == flat


def test_images_labelled_by_a_csv_are_shown_with_its_labels(tmp_path, lenet, grey_folder, capsys):
    from cnnlab.cli import main

    # Hugging Face's layout: the pictures in images/, labelled by metadata.csv (images/ is no class)
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    rows = []
    for p in sorted(grey_folder.glob("*/*.png")):
        shutil.copy(p, root / "images" / f"{p.parent.name}_{p.name}")
        rows.append((f"images/{p.parent.name}_{p.name}", p.parent.name))
    shutil.copy(grey_folder / "one" / "0.png", root / "images" / "unlabelled.png")
    (root / "metadata.csv").write_text("file_name,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    by_folders = open_with_images(lenet["onnx"], grey_folder)[1]
    _, images = open_with_images(lenet["onnx"], root)
    expected = dict(zip(by_folders.names, by_folders.labels, strict=True))
    assert images.classes == tuple(sorted(CLASSES))
    assert dict(zip(images.names, images.labels, strict=True)) == \
        {f"images/{name.replace('/', '_')}": label for name, label in expected.items()}
    assert images.notices == (f"ignored 1 image file(s) not named in metadata.csv (first: "
                              f"{root.resolve() / 'images' / 'unlabelled.png'})",)
    # the pixels are the class folders' (same files, same reading)
    order = sorted(range(len(images.names)), key=lambda i: images.names[i].split("_", 1))
    assert torch.equal(images.images[order], by_folders.images)
    # Kaggle's: a CSV named, of ids without extension, a Windows path among them; said on stderr by the CLI
    (root / "metadata.csv").rename(root / "train.csv")
    (root / "train.csv").write_text("id,label\n" + "".join(f"{f.removesuffix('.png').replace('/', chr(92))},{c}\n"
                                                          for f, c in rows))
    code = main(["explore", str(lenet["onnx"]), "--images", str(root / "train.csv"), "--export",
                 str(tmp_path / "page.html")])
    err = capsys.readouterr().err
    assert code == 0 and "cnnlab explore: note: ignored 1 image file(s) not named in train.csv" in err
    named = open_with_images(lenet["onnx"], root / "train.csv")[1]
    assert named.names == images.names and named.labels == images.labels
    (root / "train.csv").write_text("id,label\nimages/gone,cat\n")  # refused as training refuses it
    with pytest.raises(CnnlabError, match="1 row\\(s\\) name no image file under"):
        list_images(root / "train.csv")


@pytest.mark.parametrize("train, test", [("train", "test"), ("Training", "Testing"), ("train", "valid")])
def test_a_split_layout_shows_its_held_out_split_by_class_as_training_reads_it(tmp_path, lenet, grey_folder, train,
                                                                               test):
    # train/<class>/ beside test/<class>/ was refused as holding no images (its pictures are two levels down)
    root = tmp_path / "split"
    shutil.copytree(grey_folder, root / train)
    shutil.copytree(grey_folder, root / test)
    (root / test / "one" / "1.png").unlink()
    by_folders = open_with_images(lenet["onnx"], grey_folder)[1]
    _, images = open_with_images(lenet["onnx"], root)
    assert images.classes == by_folders.classes == tuple(sorted(CLASSES))
    assert images.names == tuple(f"{test}/{n}" for n in by_folders.names if n != "one/1.png")
    assert images.labels == tuple(c for n, c in zip(by_folders.names, by_folders.labels, strict=True)
                                  if n != "one/1.png")
    assert images.notices == (f"showing the {test}/ split, the held-out images (--images {root / train} shows the "
                              "training ones)",)
    assert open_with_images(lenet["onnx"], root / train)[1].labels == by_folders.labels  # named: its training images
    shutil.rmtree(root / test / "two")  # a class without test images is still a class, as training has it
    assert open_with_images(lenet["onnx"], root)[1].classes == tuple(sorted(CLASSES))
    (root / test).rename(tmp_path / "elsewhere")  # train/ alone: its images, as folder:PATH trains on them
    _, alone = open_with_images(lenet["onnx"], root)
    assert alone.names == tuple(f"{train}/{n}" for n in by_folders.names) and not alone.notices
    # Kaggle's test/ of unlabelled pictures beside train/<class>/: shown unlabelled
    (root / test).mkdir()
    shutil.copy(grey_folder / "one" / "0.png", root / test / "a.png")
    _, unlabelled = open_with_images(lenet["onnx"], root)
    assert unlabelled.names == (f"{test}/a.png",) and unlabelled.labels == (None,) and unlabelled.classes == ()
    loose = tmp_path / "loose"  # loose pictures in train/ and test/ were shown as two classes, train and test
    for split in (train, test):
        (loose / split).mkdir(parents=True)
        shutil.copy(grey_folder / "one" / "0.png", loose / split / "a.png")
    shown = open_with_images(lenet["onnx"], loose)[1]
    assert shown.names == (f"{test}/a.png",) and shown.labels == (None,) and shown.classes == ()


def test_a_photo_tools_csv_beside_the_photos_is_passed_over_with_a_notice(tmp_path, lenet, rgb_folder, capsys,
                                                                          monkeypatch):
    # pics/ with a metadata.csv of its own (no file or label column) was refused as labels: its photos are shown,
    # unlabelled, as before CSVs were read; named, or for training, it is refused still
    from cnnlab.cli import main
    from cnnlab.data import load_dataset

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    pics = tmp_path / "pics"
    shutil.copytree(rgb_folder, pics)
    (pics / "metadata.csv").write_text("SourceFile,DateTimeOriginal\np0.png,2024:05:01 10:00:00\n")
    _, images = open_with_images(lenet["onnx"], pics)
    assert images.names == ("p0.png", "p1.png", "p2.png") and images.labels == (None,) * 3
    assert images.notices == (f"metadata.csv is not read as labels: {pics.resolve() / 'metadata.csv'} has no file "
                              "column (its columns: SourceFile, DateTimeOriginal); expected a header naming one of "
                              "file_name, filename, file, image, image_id, id, name, path, fname (any case); the "
                              "pictures are shown without labels",)
    assert main(["explore", str(lenet["onnx"]), "--images", str(pics), "--export", str(tmp_path / "page.html")]) == 0
    assert "cnnlab explore: note: metadata.csv is not read as labels" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match="has no file column"):
        list_images(pics / "metadata.csv")
    with pytest.raises(CnnlabError, match="has no file column"):
        load_dataset(f"folder:{pics}")
    (pics / "metadata.csv").write_text("file_name,label\ngone.png,cat\n")  # a table of labels: refused as training
    with pytest.raises(CnnlabError, match="name no image file under"):
        list_images(pics)


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
    with pytest.raises(CnnlabError, match=r"^--no-classes reads a model from elsewhere as a network whatever its "
                                          r"outputs; a cnnlab checkpoint is a classifier, read as one; expected no "
                                          r"--no-classes for it$"):
        open_model(lenet["run"], Options(no_classes=True, any_network=True))


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


def test_an_unreadable_image_is_refused_with_the_flag_that_leaves_it_out(lenet, grey_folder, tmp_path, capsys):
    """A photo folder with one truncated file: explore refused to start in a line that named the file and not
    --skip-bad-images, which train's refusal of the same folder names."""
    from cnnlab.cli import main

    folder = shutil.copytree(grey_folder, tmp_path / "photos")
    (folder / sorted(p.name for p in folder.iterdir())[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    assert main(["explore", str(lenet["onnx"]), "--images", str(folder), "--export", str(tmp_path / "p.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab explore: error: ") and "broken.png" in err
    assert err.endswith(" (pass --skip-bad-images (skip_bad=True in Python) to skip such files)\n")
    assert not (tmp_path / "p.html").exists()


def test_an_iphones_heic_photo_among_the_images_is_said_not_passed_over(lenet, grey_folder, tmp_path, capsys,
                                                                          heif_absent):
    """An iPhone's HEIC photo among --images was left out without a word (predict reports it); it is refused with how
    to get a JPEG, as an unreadable picture is, and --skip-bad-images leaves it out and names it on the page."""
    from cnnlab.cli import main

    folder = shutil.copytree(grey_folder, tmp_path / "photos")
    (folder / sorted(p.name for p in folder.iterdir())[0] / "IMG_0001.HEIC").write_bytes(
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert main(["explore", str(lenet["onnx"]), "--images", str(folder), "--export", str(tmp_path / "p.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IMG_0001.HEIC is a HEIC photo (an iPhone's format)" in err, err
    assert "Most Compatible" in err and err.endswith(" to skip such files)\n")
    _, images = open_with_images(lenet["onnx"], folder, skip_bad=True)
    assert len(images.skipped) == 1 and "IMG_0001.HEIC is a HEIC photo" in images.skipped[0]


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
        assert {"name": "act", "op": "Sigmoid", "shape": [], "params": 0, "macs": 0} in model.layers()


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
