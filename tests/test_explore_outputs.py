"""How cnnlab explore reads a model's outputs (explore/outputs.py), in every kind that has them.

Logits or probabilities (a binary classifier's one logit, multi-label sigmoids, a softmax at the end or after
arithmetic), the first of several outputs, the logits of a dict or an output object, class scores on a 1 x 1 map,
what is no classifier told as what it is (a detector, a segmentation model, a backbone), and class names from a file
or stored in a model. Torch, and onnxruntime for the ONNX graphs, are the oracles.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import explore_support
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options, analyze_image, occlusion
from cnnlab.explore.outputs import read_classes
from cnnlab.explore.sources import open_model
from explore_support import (
    Scorer,
    _graph_of_others,
    _LogitsInADict,
    _onnx_of,
    _pt2_of,
    _reads_the_inner_networks_logits,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

# shared fixtures
one_thread = explore_support.one_thread


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
        if self.end == "percent":  # percentages, as a model made for people to read gives them
            return F.softmax(self.a(x), 1) * 100
        return F.log_softmax(self.a(x), 1) * 1.0  # log-probabilities: logits as good as any


@pytest.mark.parametrize("end", ["scaled", "ensemble", "percent", "log"])
def test_probabilities_after_arithmetic_are_not_softmaxed_again(end, tmp_path):
    """A model ending in softmax(x) * 1.0, or averaging two softmaxes, was read as logits: its probabilities were
    softmaxed a second time, every figure flattened towards 1 / classes. Outputs that are at least 0 and sum to 1
    for every image tried are read as probabilities, in all three kinds, and the page says why. Percentages
    (softmax(x) * 100) read as logits were softmaxed into near certainty: they are read as the probabilities they
    are, and the page says they sum to 100."""
    from cnnlab.explore.module_model import ModuleModel

    net = _Arithmetic(end).eval()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = net(images.float() / 255)
    want = out.exp() if end == "log" else out / 100 if end == "percent" else out
    for kind, model in {"module": ModuleModel(net, end, Options(input_size=8)),
                        "pt2": open_model(_pt2_of(net, tmp_path / "a.pt2")),
                        "onnx": open_model(_onnx_of(net, tmp_path / "a.onnx"))}.items():
        assert torch.allclose(model.scoring.probabilities(model.logits(images)), want, atol=1e-5), kind
        said = [n for n in model.notes if ("sum to 100" if end == "percent" else "sum to 1,") in n]
        assert model.scoring.from_values == (end != "log") and len(said) == (end != "log"), kind
        assert model.scoring.percentages == (end == "percent"), kind
        top = analyze_image(model, images[0])["top"][0]["probability"]
        assert top == pytest.approx(float(want[0].max()), abs=1e-5), kind


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


@pytest.mark.parametrize("what, said", [
    ("boxes", r"returns a list of 2 dicts of 'boxes', 'labels', 'scores', expected 2 x classes of float logits "
              r"\(these are a detector's boxes\)"),
    ("segments", r"returns a dict of 'out' \(2 x 4 x 8 x 8\), expected 2 x classes of float logits \(a map of "
                 r"scores per pixel is a segmentation model's\)"),
    ("segments first", r"returns a tuple of 2 \(2 x 4 x 8 x 8, 2 x 4\), expected 2 x classes of float logits \(a map "
                       r"of scores per pixel is a segmentation model's\)"),
    ("features", r"returns a list of 2 \(2 x 4 x 8 x 8, 2 x 4 x 4 x 4\), expected 2 x classes of float logits "
                 r"\(maps at several scales are a backbone's features, as timm's features_only=True returns them\)")])
def test_a_detector_and_a_segmentation_model_are_told_what_they_return(what, said):
    """Refused in one line as "it returns list" / "OrderedDict" / "tuple": now what they hold, and why. A backbone's
    feature maps at several scales (timm's features_only) were said to be "a segmentation model's" scores."""
    from cnnlab.explore.module_model import ModuleModel

    # refused where classes are needed (predict, eval), with where such a network can be seen
    with pytest.raises(CnnlabError, match=r"^net is not a classifier: for 2 images it " + said + r"; cnnlab explore "
                                          r"and cnnlab summary open any network for its layers$"):
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
                                          r"features, as timm's features_only=True returns them\); cnnlab "
                                          r"explore and cnnlab summary open any network for its layers$"):
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
                                          r"expected 2 x classes of float logits; cnnlab explore and cnnlab summary "
                                          r"open any network for its layers$"):
        ModuleModel(Votes(), "net", Options(input_size=8))
