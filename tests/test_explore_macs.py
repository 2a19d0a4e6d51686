"""The MACs column of the layer table of every kind, against torch: a model's ONNX export, its ``.pt2`` program and
the module itself give the multiply-accumulates ``layer_summary`` counts (torch's own FLOP formulas), layer by layer
where the kinds' rows can be matched to its stages, and in total; grouped and depthwise convolutions, a Gemm and a
transposed convolution; and the ONNX ops counted from shapes, quantized twins and unknown dims included."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import explore_support
from cnnlab.explore.model import Options
from cnnlab.explore.module_model import ModuleModel
from cnnlab.explore.sources import open_model
from cnnlab.inference import load_trained
from cnnlab.models.summary import MacCounter, layer_summary
from explore_support import _torchvision, make_run

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

lenet, one_thread = explore_support.lenet, explore_support.one_thread


def _per_stage(rows: list[dict], stages: list[str]) -> dict[str, int]:
    """A layer table's MACs summed over each of ``stages`` (layer_summary's row names), a row going to the outermost
    stage its name holds as a whole part (``features.0`` in ``/features/features.0/Conv`` or ``1.features.0``;
    ``layer1`` in ``layer1.0.conv1``, not ``conv1``)."""
    sums = dict.fromkeys(stages, 0)
    for row in rows:
        found = [(m.start(), -len(s), s) for s in stages
                 if (m := re.search(rf"(^|[./]){re.escape(s)}($|[./])", row["name"]))]
        assert found, row
        sums[min(found)[2]] += row["macs"]
    return sums


def _expected(model: nn.Module, shape) -> dict[str, int]:
    return {r.name: r.macs for r in layer_summary(model, shape)}


def test_a_cnnlab_runs_exports_and_module_count_the_macs_layer_summary_counts(lenet):
    trained = load_trained(lenet["run"]).model
    expected = _expected(trained, (1, 1, 28, 28))
    module = ModuleModel(trained, "lenet", Options(input_size=28))
    for kind, model in [("run", open_model(lenet["run"])), ("onnx", open_model(lenet["onnx"])),
                        ("pt2", open_model(lenet["pt2"])), ("module", module)]:
        rows = model.layers()
        assert all(isinstance(r["macs"], int) for r in rows), (kind, rows)
        assert _per_stage(rows, list(expected)) == expected, kind
    assert sum(expected.values()) > 0


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A cnnlab ResNet-18 trained a step, its checkpoint and cnnlab's own ONNX and .pt2 exports of it."""
    from cnnlab.export import export_checkpoint

    root = tmp_path_factory.mktemp("resnet")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, len(explore_support.CLASSES), (8,), generator=g)
    run = make_run(root / "run", model="resnet18", classes=explore_support.CLASSES, channels=1, size=32,
                   dataset="fashion-mnist", train=(images, labels), test=(images, labels), epochs=1, steps=1)
    return {"run": run / "last.pt", **{fmt: export_checkpoint(run / "last.pt", root / f"resnet.{fmt}", format=fmt)
                                       for fmt in ("onnx", "pt2")}}


def test_a_resnets_exports_count_each_stages_macs_as_layer_summary_does(resnet):
    # ONNX folds each batch norm into the convolution before it, and the residual sums have no MACs: per stage, the
    # same products all the same
    expected = _expected(load_trained(resnet["run"]).model, (1, 1, 32, 32))
    for kind in ("run", "onnx", "pt2"):
        assert _per_stage(open_model(resnet[kind]).layers(), list(expected)) == expected, kind


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("mobilenet_v3_small", 64)])
def test_torchvisions_models_count_the_same_macs_in_every_kind(name, size, tmp_path, one_thread):
    # The ONNX graph of a free batch (symbolic N) and the .pt2 program fixed to a batch of 2: one image's MACs.
    # torchvision's forward flattens between its children, so layer_summary cannot chain them: MacCounter counts the
    # whole forward pass, each child's share the MACs counted while it ran.
    model = _torchvision(name, size, tmp_path)
    started, expected = {}, {}
    with torch.no_grad(), MacCounter() as whole:
        hooks = [h for name, child in model.named_children() for h in (
            child.register_forward_pre_hook(lambda mod, args, name=name: started.update({name: whole.macs})),
            child.register_forward_hook(lambda mod, args, out, name=name: expected.update(
                {name: whole.macs - started[name]})))]
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    assert sum(expected.values()) == whole.macs > 0
    module = ModuleModel(model, name, Options(input_size=size))
    for kind, explored in [("module", module), ("pt2", open_model(tmp_path / f"{name}.pt2")),
                           ("onnx", open_model(tmp_path / f"{name}.onnx"))]:
        rows = explored.layers()
        assert all(isinstance(r["macs"], int) for r in rows), kind
        got = _per_stage(rows, list(expected))
        if kind == "onnx":  # the exporter folds resnet18's stem batch norm into its convolution, named after the norm
            assert _norms_folded(got, model) == _norms_folded(expected, model)
        else:
            assert got == expected, kind


def _norms_folded(sums: dict[str, int], model: nn.Module) -> dict[str, int]:
    """Per-stage MACs with each batch norm child's counted with the stage before it."""
    folded: dict[str, int] = {}
    for name, macs in sums.items():
        if isinstance(getattr(model, name), nn.BatchNorm2d) and folded:
            folded[list(folded)[-1]] += macs
        else:
            folded[name] = macs
    return folded


class _Mixed(nn.Module):
    """A convolution, a grouped one, a depthwise one, a transposed one and a linear layer (a Gemm in ONNX)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, 3)

    def stages(self):
        return [self.conv, self.grouped, self.depthwise, self.up, self.pool, self.flat, self.fc]

    def forward(self, x):
        for stage in self.stages():
            x = stage(x)
        return x


def test_grouped_depthwise_and_transposed_convolutions_and_a_gemm(tmp_path):
    net = _Mixed().eval()
    expected = _expected(net, (1, 3, 10, 10))
    assert all(expected[k] for k in ("conv", "grouped", "depthwise", "up", "fc"))
    x = torch.zeros(1, 3, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp_path / "mixed.onnx"), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "mixed.pt2")
    onnx_model = open_model(tmp_path / "mixed.onnx", Options(input_size=10))
    assert {"Conv", "ConvTranspose", "Gemm"} <= {r["op"] for r in onnx_model.layers()}
    for kind, explored in [("onnx", onnx_model), ("pt2", open_model(tmp_path / "mixed.pt2")),
                           ("module", ModuleModel(net, "mixed", Options(input_size=10)))]:
        assert _per_stage(explored.layers(), list(expected)) == expected, kind


def _node(op: str, inputs: list[str], **attributes):
    return onnx.helper.make_node(op, inputs, ["y"], **attributes)


def test_onnx_ops_are_counted_from_their_shapes_quantized_as_their_float_twins():
    from cnnlab.explore.onnx_macs import node_macs

    conv = {"x": [2, 8, 10, 10], "w": [16, 4, 3, 3], "y": [2, 16, 8, 8]}
    with torch.device("meta"):  # torch's formula for the same shapes
        counted = layer_summary(nn.Sequential(nn.Conv2d(8, 16, 3, groups=2)), (2, 8, 10, 10))[0].macs
    assert node_macs(_node("Conv", ["x", "w"]), conv.get) == counted == 2 * 16 * 8 * 8 * 4 * 3 * 3
    assert node_macs(_node("ConvInteger", ["x", "w"]), conv.get) == counted
    assert node_macs(_node("QLinearConv", ["x", "s", "z", "w", "ws", "wz", "ys", "yz"]), conv.get) == counted
    gemm = {"a": [5, 7], "at": [7, 5], "b": [3, 7], "y": [5, 3]}
    assert node_macs(_node("Gemm", ["a", "b"], transB=1), gemm.get) == 5 * 3 * 7
    assert node_macs(_node("Gemm", ["at", "b"], transA=1, transB=1), gemm.get) == 5 * 3 * 7
    assert node_macs(_node("QGemm", ["a", "s", "z", "b"], transB=1), gemm.get) == 5 * 3 * 7
    batched = {"a": [2, 4, 5, 7], "b": [2, 4, 7, 3], "y": [2, 4, 5, 3]}
    assert node_macs(_node("MatMul", ["a", "b"]), batched.get) == 2 * 4 * 5 * 3 * 7
    assert node_macs(_node("MatMulInteger", ["a", "b"]), batched.get) == 2 * 4 * 5 * 3 * 7
    assert node_macs(_node("Relu", ["x"]), conv.get) == 0 and node_macs(_node("MaxPool", ["x"]), conv.get) == 0
    # unknown: a symbolic dim, an op whose products are not counted here
    assert node_macs(_node("Conv", ["x", "w"]), {**conv, "y": [2, 16, "h", 8]}.get) is None
    assert node_macs(_node("MatMul", ["a", "b"]), {**batched, "a": ["N", 4, 5, 7]}.get) is None
    assert node_macs(_node("Einsum", ["a", "b"], equation="ij,jk->ik"), gemm.get) is None


class _SequenceFirst(nn.Module):
    """Patches of the image as tokens, sequence first as torch's attention takes them (tokens x batch x features),
    through a linear layer, then an einsum with a weight of its own for the class scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patches = nn.Conv2d(3, 8, 4, stride=4)
        self.mix = nn.Linear(8, 8)
        self.classes = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        tokens = self.patches(x).flatten(2).permute(2, 0, 1)
        return torch.einsum("bf,cf->bc", self.mix(tokens).mean(0), self.classes)


class _WithoutEinsum(nn.Module):
    """:class:`_SequenceFirst` with its einsum as a linear layer (an ONNX Einsum's MACs are not counted)."""

    def __init__(self, net: _SequenceFirst):
        super().__init__()
        self.net = net

    def forward(self, x):
        tokens = self.net.patches(x).flatten(2).permute(2, 0, 1)
        return nn.functional.linear(self.net.mix(tokens).mean(0), self.net.classes)


def _macs_of(net: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), MacCounter() as counter:
        net(x)
    return counter.macs


def test_sequence_first_values_count_one_images_macs(tmp_path):
    # Shapes are worked out at one image: a value's first axis (here the 16 tokens) is not its batch to divide by.
    net, x = _WithoutEinsum(_SequenceFirst().eval()), torch.zeros(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp_path / "tokens.onnx"), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    rows = open_model(tmp_path / "tokens.onnx").layers()
    assert sum(r["macs"] for r in rows) == _macs_of(net, x) > 0
    assert next(r["macs"] for r in rows if r["op"] == "MatMul") == 16 * 8 * 8


def test_a_programs_einsum_counts_its_weight_and_macs(tmp_path):
    # The einsum's operands are one list argument: its weight was no parameter of any row, and with no row of its
    # own after the last one, its MACs were in no total.
    net, x = _SequenceFirst().eval(), torch.zeros(1, 3, 16, 16)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "tokens.pt2")
    rows = open_model(tmp_path / "tokens.pt2").layers()
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in net.parameters())
    assert sum(r["macs"] for r in rows) == _macs_of(net, x) > 0


class _BufferHead(nn.Module):
    """A convolution, then class scores from a matrix product with a buffer: products after the last layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.register_buffer("head", torch.randn(8, 10))

    def forward(self, x):
        return self.conv(x).mean((2, 3)) @ self.head


def test_products_after_the_last_layer_are_in_the_total(tmp_path):
    # The matrix product with a buffer is no layer: its MACs, made after the last row, were in no row and no total.
    net, x = _BufferHead().eval(), torch.zeros(1, 3, 16, 16)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "head.pt2")
    expected = _macs_of(net, x)
    assert expected > _macs_of(net.conv, x)
    for kind, explored in [("pt2", open_model(tmp_path / "head.pt2")),
                           ("module", ModuleModel(net, "head", Options(input_size=16)))]:
        assert sum(r["macs"] for r in explored.layers()) == expected, kind


def test_an_onnx_graphs_products_after_its_last_layer_are_in_the_total(tmp_path):
    # A MatMul with a Constant node's matrix has no parameters and is no row: its MACs were in no total.
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    net = _BufferHead().eval()
    weight, bias = (numpy_helper.from_array(t.detach().numpy(), name) for t, name in
                    ((net.conv.weight, "w"), (net.conv.bias, "b")))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Constant", [], ["h"], value=numpy_helper.from_array(net.head.numpy(), "h")),
             helper.make_node("MatMul", ["f", "h"], ["y"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "head.onnx"))
    rows = open_model(tmp_path / "head.onnx").layers()
    assert "MatMul" not in [r["op"] for r in rows]
    assert sum(r["macs"] for r in rows) == _macs_of(net, torch.zeros(1, 3, 16, 16))
