"""cnnlab explore of PyTorch modules by name (explore/module_model.py): `module:function` and `imagenet-NAME`.

The user's own code (written to a temporary folder by the test and imported from there): its labels and sizes, its
errors in one line, its lazy layers, --weights put into the network it builds, and what the forward hooks see (two
requests at once, each map once, parameters the pass never reads). The module itself is the oracle.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import explore_support
from cnnlab.errors import CnnlabError
from cnnlab.explore.gradcam import explain_with
from cnnlab.explore.model import Options, analyze_image, model_card
from cnnlab.explore.module_model import ModuleModel
from cnnlab.explore.sources import open_model, open_with_images, scores_of
from cnnlab.inference import BATCH_VALUES
from explore_support import Scorer, _onnx_of, _png, _request

# shared fixtures
one_thread, rgb_folder = explore_support.one_thread, explore_support.rgb_folder


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
    ("user_models:squeezed", r"^user_models:squeezed answers 2 images with 2 x 5 class scores, but for 1 image it "
                             r"returns 5, expected 1 x classes of float logits: its forward drops the batch axis of "
                             r"one image, which every analysis runs \(a final squeeze\(\); flatten\(1\) keeps the "
                             r"axis\)$"),
    ("user_models:integer", r"^user_models:integer is not a classifier: for 2 images it returns 2 x 5 of int64, "
                            r"expected 2 x classes of float logits; cnnlab explore and cnnlab summary open any "
                            r"network for its layers$"),
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


def test_an_imagenet_name_cnnlab_does_not_build_is_told_how_to_bring_it(tmp_path):
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(CnnlabError, match=r"^imagenet-squeezenet1_1 is not an ImageNet backbone cnnlab builds by name "
                                          r"\(imagenet-resnet18, .*\); for another network, name a module:function "
                                          r"that builds it \(torchvision.models.squeezenet1_1\(weights=None\), say\) "
                                          r"with --weights FILE$"):
        open_model("imagenet-squeezenet1_1", Options(weights=tmp_path / "w.pth"))


def test_large_pictures_go_through_a_model_from_elsewhere_fewer_a_pass():
    """predict and eval ran a model from elsewhere 64 pictures a pass whatever their size: 64 of a 512-px input are
    50 million values before its first layer's maps. A pass takes at most 2**23 input values, as a checkpoint's does
    (10 pictures at 512 px RGB), and every picture is still scored."""
    seen = []
    net = nn.Sequential(nn.Conv2d(3, 2, 3, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    model = ModuleModel(net, "wide", Options(input_size=512))
    images = torch.randint(0, 256, (25, 3, 512, 512), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seen.clear()
    scores = scores_of(model, images, "wide", "25 pictures")
    assert max(seen) == BATCH_VALUES // (3 * 512 * 512) == 10 and sum(seen) == 25
    with torch.no_grad():
        expected = model.logits(images, batch_size=25)
    assert torch.allclose(scores, expected, atol=1e-5)
