"""Helpers for the explorer's tests (tests/test_explore_*.py): what more than one of those files uses.

The image folders, a cnnlab LeNet trained a few steps with its ONNX and .pt2 exports, torchvision models exported by
the test, small classifiers and their exports, ONNX graphs as other tools write them, and one thread for torch. A
test file names the fixtures it uses among its own (``lenet = explore_support.lenet``), ``one_thread`` always: pytest
takes fixtures from a test module's names, so a module-scoped one is built once for each file that uses it. Without
onnx or onnxruntime, every file that imports this is skipped.
"""

from __future__ import annotations

import http.client
import io
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab.explore.model import analyze_image
from test_explore_api import make_run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")  # the explorer runs ONNX graphs, the lenet fixture among them, in onnxruntime
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


@pytest.fixture()
def saved_page(lenet, grey_folder, tmp_path):
    """The LeNet's ONNX export as a saved page of the grey pictures (``cnnlab explore ... --export page.html``)."""
    from cnnlab.explore.page import export_page
    from cnnlab.explore.sources import open_with_images

    model, images = open_with_images(lenet["onnx"], grey_folder)
    page = tmp_path / "page.html"
    export_page(model, images, page)
    return page


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


class DropsBatchAxis(nn.Module):
    """``Scorer(5)`` whose class scores lose their batch axis at the end, as a network written for one image at a time
    does: ``squeeze(0)``, ``[0]`` or ``reshape(-1)`` (5 values for one image, 10 for two in the last)."""

    def __init__(self, end: str):
        super().__init__()
        self.scorer, self.end = Scorer(5), end

    def forward(self, x):
        y = self.scorer(x)
        return y.squeeze(0) if self.end == "squeeze(0)" else y[0] if self.end == "[0]" else y.reshape(-1)


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


class OwnScaling(nn.Module):
    """A grey classifier of 3 classes that scales its input itself before its first convolution: ``scale(x)``."""

    def __init__(self, scale):
        super().__init__()
        torch.manual_seed(0)
        self.scale, self.conv, self.fc = scale, nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(self.scale(x)).relu().mean((2, 3)))


class _LogitsInADict(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Scorer(3)

    def forward(self, pixel_values):
        return {"logits": self.net(pixel_values), "features": pixel_values.mean((2, 3))}


def _reads_the_inner_networks_logits(model, net: _LogitsInADict) -> None:
    """The class scores ``model`` gives are those of ``net``'s inner network, and Grad-CAM explains them."""
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = net.net(images.float() / 255)
    torch.testing.assert_close(model.logits(images), want, atol=1e-5, rtol=1e-5)
    assert analyze_image(model, images[0])["explanation"]["method"] == "grad-cam"


def _nhwc_graph(path, side=16, dynamic=False, output_4d=False, input_rank=4, input_type=TensorProto.FLOAT,
                batch="N", tail=None, scaling=()):
    """An NHWC classifier as Keras/TensorFlow graphs arrive: Transpose -> Conv -> Relu -> MaxPool -> GAP -> Gemm;
    ``tail`` ("ArgMax", "Greater", "Transpose") is an op its logits go through last. An input of float16 or double
    is cast to float first, one of uint8 also divided by 255 (pixel values scaled inside, as deployed graphs do).
    ``scaling``: (op, constant) pairs the input goes through before the Transpose, as a Keras model's own
    ``Rescaling`` and ``Normalization`` layers arrive (``("Mul", 1 / 127.5), ("Add", -1.0)``; ``("Pad", pads)``: its
    "same" padding)."""
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
    scaled = [numpy_helper.from_array(np.asarray(c, np.int64 if op == "Pad" else np.float32), f"s{i}")
              for i, (op, c) in enumerate(scaling)]
    for i, (op, _) in enumerate(scaling):
        first.append(helper.make_node(op, [first[-1].output[0] if first else "x", f"s{i}"], [f"x{i}"]))
    nodes = [*first, helper.make_node("Transpose", [first[-1].output[0] if first else "x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["z" if tail else "y"], transB=1)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.array(255, np.float32), "byte"), *scaled]
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


def _request(url: str, method: str, target: str, body: bytes | None = None):
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, target, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def processor_framed(picture: Image.Image, length: int, crop: int, resample: Image.Resampling) -> np.ndarray:
    """``picture`` as a Hugging Face ConvNeXt image processor frames it, worked out here step by step with Pillow:
    the shorter side resized to ``length`` (the longer ``int(length * longer / shorter)``) with ``resample``, then
    the centre ``crop x crop`` cut at offsets ``(side - crop) // 2`` (its center_crop's, rounded down)."""
    w, h = picture.size
    new = (length, int(length * h / w)) if w <= h else (int(length * w / h), length)
    left, top = (new[0] - crop) // 2, (new[1] - crop) // 2
    return np.asarray(picture.resize(new, resample).crop((left, top, left + crop, top + crop)))
