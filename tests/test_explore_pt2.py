"""cnnlab explore of torch.export programs (explore/pt2_model.py).

Programs of a bounded or a fixed batch, of another precision, of two outputs, of one image without its batch axis,
exported in training mode, or returning a library's own output type; the ops of a program's own forward. The module
each program was exported from is the oracle.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import explore_support
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.model import analyze_image
from cnnlab.explore.sources import open_model
from explore_support import Scorer, _LogitsInADict, _pt2_of, _reads_the_inner_networks_logits

# shared fixtures
one_thread = explore_support.one_thread


class _LibraryOutput(dict):
    """An output object of a library's own, as Hugging Face's ``ImageClassifierOutput``: registered with torch's
    pytree under its library's name, which torch.export.save writes into the program's output spec."""


class _LogitsInALibraryOutput(_LogitsInADict):
    def forward(self, pixel_values):
        return _LibraryOutput(super().forward(pixel_values))


@pytest.mark.parametrize("scale, pixel_max", [(lambda x: (x - 127.5) / 127.5, 255), (lambda x: x / 255 * 2 - 1, 255),
                                               (lambda x: 255 - x, None), (lambda x: x * 2 - 1, 1),
                                               (lambda x: (1 - x) * 4, 1)])
def test_a_program_that_scales_its_input_itself_is_fed_the_pixels_it_scales(scale, pixel_max, tmp_path):
    """A network whose own forward scales the pixel values, as a Keras model's Rescaling does, was fed pixels / 255:
    a nearly black picture. The program's arithmetic before its first convolution says which range it is made for;
    torch's module on those pixels is the oracle."""
    net = explore_support.OwnScaling(scale).eval()
    model = open_model(_pt2_of(net, tmp_path / "scaled.pt2"))
    assert model.spec.pixel_max == (pixel_max or 1)
    assert ("pixel range from the program's own scaling" in model.spec.describe()) == (pixel_max is not None)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(images.float() / (255 / (pixel_max or 1)))
    torch.testing.assert_close(model.logits(images), want, atol=1e-4, rtol=1e-4)


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


@pytest.mark.parametrize("end", ["squeeze(0)", "[0]", "reshape(-1)"])
def test_a_program_of_one_image_that_drops_the_batch_axis_is_read_as_its_images_class_scores(end, tmp_path):
    """A program exported at a batch of one whose forward drops the batch axis (5 scores for its one image) was
    refused by every command ("for 1 image it returns 5"). Fixed to one image, its 5 values can only be that image's:
    each image is run alone, its scores given their batch axis back, equal to the module's own, and the page says
    so."""
    net = explore_support.DropsBatchAxis(end).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), tmp_path / "one.pt2")
    model = open_model(tmp_path / "one.pt2")
    assert model.classes == tuple(f"class {k}" for k in range(5))
    assert any("The program's output has no batch axis (5 values for one image" in n for n in model.notes)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.stack([net(model.spec.to_input(image[None])) for image in images])
    assert torch.allclose(model.logits(images), expected, atol=1e-6)
    result = analyze_image(model, images[1])
    assert [row["class"] for row in result["top"]] == [f"class {k}" for k in expected[1].argsort(descending=True)]


@pytest.mark.parametrize("end", ["reshape(-1)", "flatten()"])
def test_a_program_of_free_batch_whose_scores_run_together_is_read_one_image_at_a_time(end, tmp_path, capsys):
    """A program exported at any batch (torch.export.Dim) whose forward ends in reshape(-1) or flatten() returns
    the images' scores run together: 5 values for one image, 10 for two, as export worked it out. It was refused
    ("for 2 images it returns 10"), where the ONNX graph of it is read. Taking one image, it is run one image at a
    time, each image's 5 values its class scores, equal to the module that keeps the batch axis; predict answers as
    that module's program does. A free batch of at least 2 images cannot be run one at a time, and is still refused:
    its values for 2 images are in an order the program does not say."""
    net = explore_support.DropsBatchAxis("reshape(-1)").eval()
    if end == "flatten()":
        net.forward = lambda x: net.scorer(x).flatten()
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=batch),
                      tmp_path / "free.pt2")
    torch.export.save(torch.export.export(net.scorer, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=batch),
                      tmp_path / "kept.pt2")
    model = open_model(tmp_path / "free.pt2")
    assert model.classes == tuple(f"class {k}" for k in range(5))
    assert any("The program's output has no batch axis (5 values for one image" in n for n in model.notes)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = net.scorer(model.spec.to_input(images))
    assert expected.shape == (3, 5) and torch.allclose(model.logits(images), expected, atol=1e-6)
    result = analyze_image(model, images[1])
    assert [row["class"] for row in result["top"]] == [f"class {k}" for k in expected[1].argsort(descending=True)]
    for k in range(2):
        Image.fromarray(images[k, 0].numpy()).save(tmp_path / f"{k}.png")
    answers = []
    for file in ("free.pt2", "kept.pt2"):
        assert main(["predict", str(tmp_path / file), str(tmp_path / "0.png"), str(tmp_path / "1.png")]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1] and answers[0].count("class ") == 6  # 3 best classes an image
    two = ({0: torch.export.Dim("batch", min=2)},)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=two), tmp_path / "two.pt2")
    with pytest.raises(CnnlabError, match="for 2 images it returns 10"):
        open_model(tmp_path / "two.pt2")


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
