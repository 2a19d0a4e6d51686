"""Layer summaries against the book's printed layer_summary outputs, MACs against a hook count, input-size errors."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import explore_support
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import check_input_size, create_model, list_models, min_input_size, model_info
from cnnlab.models.summary import layer_summary, models_table, summarize

lenet = explore_support.lenet  # a shared fixture: a LeNet run, its ONNX and .pt2 exports

_HEAD = [("Flatten", (25088,)), ("Linear", (4096,)), ("ReLU", (4096,)), ("Dropout", (4096,)),
         ("Linear", (4096,)), ("ReLU", (4096,)), ("Dropout", (4096,)), ("Linear", (10,))]

# (type, output shape without the batch) per row at the model's default input. The book prints these for LeNet
# (7.6), AlexNet (8.1), VGG-11 (8.2), NiN (8.3), GoogLeNet (8.4) and ResNet-18 (8.6); BN-LeNet, DenseNet and
# RegNetX-32 follow from their definitions (d2l 8.5, 8.7, 8.8), which print no summary.
GOLDEN = {
    "compact": [("Sequential", (8, 28, 28)), ("Sequential", (24, 14, 14)), ("Sequential", (48, 7, 7)),
                ("Sequential", (96, 3, 3)), ("AdaptiveMaxPool2d", (96, 1, 1)), ("Flatten", (96,)), ("Linear", (10,))],
    "lenet": [("Conv2d", (6, 28, 28)), ("Sigmoid", (6, 28, 28)), ("AvgPool2d", (6, 14, 14)),
              ("Conv2d", (16, 10, 10)), ("Sigmoid", (16, 10, 10)), ("AvgPool2d", (16, 5, 5)), ("Flatten", (400,)),
              ("Linear", (120,)), ("Sigmoid", (120,)), ("Linear", (84,)), ("Sigmoid", (84,)), ("Linear", (10,))],
    "lenet-bn": [("Conv2d", (6, 24, 24)), ("BatchNorm2d", (6, 24, 24)), ("Sigmoid", (6, 24, 24)),
                 ("AvgPool2d", (6, 12, 12)), ("Conv2d", (16, 8, 8)), ("BatchNorm2d", (16, 8, 8)),
                 ("Sigmoid", (16, 8, 8)), ("AvgPool2d", (16, 4, 4)), ("Flatten", (256,)), ("Linear", (120,)),
                 ("BatchNorm1d", (120,)), ("Sigmoid", (120,)), ("Linear", (84,)), ("BatchNorm1d", (84,)),
                 ("Sigmoid", (84,)), ("Linear", (10,))],
    "alexnet": [("Conv2d", (96, 54, 54)), ("ReLU", (96, 54, 54)), ("MaxPool2d", (96, 26, 26)),
                ("Conv2d", (256, 26, 26)), ("ReLU", (256, 26, 26)), ("MaxPool2d", (256, 12, 12)),
                ("Conv2d", (384, 12, 12)), ("ReLU", (384, 12, 12)), ("Conv2d", (384, 12, 12)),
                ("ReLU", (384, 12, 12)), ("Conv2d", (256, 12, 12)), ("ReLU", (256, 12, 12)),
                ("MaxPool2d", (256, 5, 5)), ("Flatten", (6400,)), ("Linear", (4096,)), ("ReLU", (4096,)),
                ("Dropout", (4096,)), ("Linear", (4096,)), ("ReLU", (4096,)), ("Dropout", (4096,)),
                ("Linear", (10,))],
    "vgg11": [("Sequential", (64, 112, 112)), ("Sequential", (128, 56, 56)), ("Sequential", (256, 28, 28)),
              ("Sequential", (512, 14, 14)), ("Sequential", (512, 7, 7)), *_HEAD],
    "vgg-small": [("Sequential", (16, 112, 112)), ("Sequential", (32, 56, 56)), ("Sequential", (64, 28, 28)),
                  ("Sequential", (128, 14, 14)), ("Sequential", (128, 7, 7)), ("Flatten", (6272,)), *_HEAD[1:]],
    "nin": [("Sequential", (96, 54, 54)), ("MaxPool2d", (96, 26, 26)), ("Sequential", (256, 26, 26)),
            ("MaxPool2d", (256, 12, 12)), ("Sequential", (384, 12, 12)), ("MaxPool2d", (384, 5, 5)),
            ("Dropout", (384, 5, 5)), ("Sequential", (10, 5, 5)), ("AdaptiveAvgPool2d", (10, 1, 1)),
            ("Flatten", (10,))],
    "googlenet": [("Sequential", (64, 24, 24)), ("Sequential", (192, 12, 12)), ("Sequential", (480, 6, 6)),
                  ("Sequential", (832, 3, 3)), ("Sequential", (1024,)), ("Linear", (10,))],
    "resnet18": [("Sequential", (64, 24, 24)), ("Sequential", (64, 24, 24)), ("Sequential", (128, 12, 12)),
                 ("Sequential", (256, 6, 6)), ("Sequential", (512, 3, 3)), ("Sequential", (10,))],
    "densenet": [("Sequential", (64, 24, 24)), ("DenseBlock", (192, 24, 24)), ("Sequential", (96, 12, 12)),
                 ("DenseBlock", (224, 12, 12)), ("Sequential", (112, 6, 6)), ("DenseBlock", (240, 6, 6)),
                 ("Sequential", (120, 3, 3)), ("DenseBlock", (248, 3, 3)), ("Sequential", (10,))],
    "regnetx32": [("Sequential", (32, 48, 48)), ("Sequential", (32, 24, 24)), ("Sequential", (80, 12, 12)),
                  ("Sequential", (10,))],
}

# Smallest square input each model takes. Fixed dense heads pin LeNet (28), AlexNet (193: its stride-4 stem and
# floor-rounding pools still reach 5x5) and VGG (224); NiN and DenseNet collapse to empty maps below theirs.
# LeNet, AlexNet and VGG pool any feature map to their dense head's (cnnlab.models.head.Flatten), so their minimum
# is where the last pooling still has a map to pool.
MIN_INPUT = {"lenet": 12, "lenet-relu": 12, "lenet-bn": 16, "lenet-bn-relu": 16, "alexnet": 65, "vgg11": 32,
             "vgg-small": 32, "nin": 67, "googlenet": 1, "resnet18": 1, "resnet34": 1, "resnext18": 1, "densenet": 29,
             "regnetx32": 1}


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _default_shape(name: str) -> tuple[int, int, int, int]:
    size = model_info(name).input_size
    return (1, 1, size, size)


@pytest.mark.parametrize("name", GOLDEN)
def test_rows_match_the_book(name):
    rows = layer_summary(_meta_model(name), _default_shape(name))
    assert [(r.type, r.output_shape[1:]) for r in rows] == GOLDEN[name]
    assert all(r.output_shape[0] == 1 for r in rows)


def test_row_names_are_state_dict_prefixes():
    assert [r.name for r in layer_summary(_meta_model("resnet18"), (1, 1, 96, 96))] == [
        "b1", "b2", "b3", "b4", "b5", "last"]
    names = [r.name for r in layer_summary(_meta_model("vgg11"), (1, 1, 224, 224))]
    assert names[:6] == ["features.0", "features.1", "features.2", "features.3", "features.4", "classifier.0"]


def _hook_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """An independent count: output elements times the multiply-adds behind each, for every conv and linear."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.weight[0].numel()  # in_channels / groups * kh * kw
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(shape, device="meta"))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("name", list_models())
def test_rows_cover_the_model_and_macs_match_a_hook_count(name):
    model = _meta_model(name)
    shape = _default_shape(name)
    rows = layer_summary(model, shape)
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(r.macs for r in rows) == _hook_macs(model, shape)
    assert rows[-1].output_shape == (1, 10)


def test_lenet_macs_by_hand():
    macs = [r.macs for r in layer_summary(_meta_model("lenet"), (1, 1, 28, 28)) if r.macs]
    assert macs == [6 * 28 * 28 * 25, 16 * 10 * 10 * 6 * 25, 400 * 120, 120 * 84, 84 * 10]


def test_layer_summary_runs_a_real_model_and_keeps_its_mode():
    model = create_model("lenet-bn").train()  # train-mode BN would reject a batch of one
    rows = layer_summary(model, (1, 1, 28, 28))
    assert model.training and rows[-1].output_shape == (1, 10)


def test_a_layer_summary_leaves_the_passes_of_other_threads_alone():
    """The explorer summarises one run's layers (a run's page) while another request explains a picture with
    Grad-CAM: the summary's MAC count (torch's FlopCounterMode) put global module hooks on every thread's forward
    passes, and the other request's backward pass failed ("A leaf node was passed to _will_engine_execute_node")."""
    torch.manual_seed(0)
    other = create_model("lenet").eval()
    x = torch.rand(1, 1, 28, 28)

    def input_gradient() -> torch.Tensor:  # as Grad-CAM's saliency takes it: d score / d input, a leaf
        leaf = x.clone().requires_grad_(True)
        return torch.autograd.grad(other(leaf)[0, 3], [leaf])[0]

    alone = input_gradient()
    seen = {}

    class Midway(nn.Module):  # a stage of the summarised model; another thread's pass runs during it
        def forward(self, y):
            seen["global hooks"] = len(torch.nn.modules.module._global_forward_pre_hooks) + \
                len(torch.nn.modules.module._global_forward_hooks)

            def elsewhere():
                try:
                    seen["gradient"] = input_gradient()
                except RuntimeError as e:
                    seen["error"] = str(e)

            worker = threading.Thread(target=elsewhere)
            worker.start()
            worker.join()
            return y

    rows = layer_summary(nn.Sequential(nn.Conv2d(1, 2, 3), Midway()), (1, 1, 8, 8))
    assert "error" not in seen, seen.get("error")
    torch.testing.assert_close(seen["gradient"], alone, rtol=0, atol=0)
    assert rows[0].macs == 2 * 6 * 6 * 9 and seen["global hooks"] == 0


def test_summarize_prints_rows_and_totals():
    text = summarize("resnet18")
    lines = text.splitlines()
    assert "resnet18" in lines[0] and "1 x 1 x 96 x 96" in lines[0]
    assert any(line.startswith("b5") and "1 x 512 x 3 x 3" in line for line in lines)
    assert "11,178,378 parameters" in lines[-1]
    assert f"{sum(r.macs for r in layer_summary(_meta_model('resnet18'), (1, 1, 96, 96))):,} MACs" in lines[-1]
    assert "1 x 512 x 2 x 2" in summarize("resnet18", input_size=64)
    b1 = next(line for line in summarize("googlenet", in_channels=3).splitlines() if line.startswith("b1 "))
    assert b1.split()[-2] == f"{3 * 64 * 7 * 7 + 64:,}"  # the stem conv's weights grow with the input channels


def test_summarize_shows_the_batch_it_is_given(capsys):
    one, seven = summarize("lenet").splitlines(), summarize("lenet", batch=7).splitlines()
    assert "7 x 1 x 28 x 28" in seven[0]
    conv_one, conv_seven = (next(line.split() for line in t if line.startswith("features.0")) for t in (one, seven))
    assert conv_seven[2] == "7" and int(conv_seven[-1].replace(",", "")) == 7 * int(conv_one[-1].replace(",", ""))
    per_image = one[-1].split(" MACs")[0].split()[-1]
    assert seven[-1].startswith(one[-1]) and f"{7 * int(per_image.replace(',', '')):,} for the batch of 7" in seven[-1]
    assert main(["summary", "lenet", "--input", "7,1,28,28"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == seven[0]


def test_summarize_vgg11_at_224_is_cheap():
    text = summarize("vgg11")
    assert "128,806,154 parameters" in text and "1 x 25088" in text


@pytest.mark.parametrize(("name", "size", "expected"), [
    ("alexnet", 64, "input size 64 is too small for alexnet: expected at least 65"),
    ("nin", 66, "input size 66 is too small for nin: expected at least 67"),
    ("densenet", 28, "input size 28 is too small for densenet: expected at least 29"),
    ("vgg11", 31, "input size 31 is too small for vgg11: expected at least 32"),
    ("lenet", 11, "input size 11 is too small for lenet: expected at least 12"),
])
def test_summarize_rejects_inputs_the_model_cannot_take(name, size, expected):
    with pytest.raises(CnnlabError) as err:
        summarize(name, input_size=size)
    assert str(err.value) == expected


@pytest.mark.parametrize("size", [0, -3, 1.5, "96"])
def test_summarize_rejects_a_bad_input_size(size):
    with pytest.raises(CnnlabError, match="input_size must be a positive integer"):
        summarize("resnet18", input_size=size)


def test_summarize_rejects_an_unknown_model():
    with pytest.raises(CnnlabError, match="unknown model 'resnet5'"):
        summarize("resnet5")


def test_min_input_size_for_every_model():
    # min_input_size scans upward, so every smaller size failed; the rejection tests above check the message.
    assert {name: min_input_size(name) for name in MIN_INPUT} == MIN_INPUT
    for name, smallest in MIN_INPUT.items():
        check_input_size(name, smallest)


def test_models_table_lists_every_model():
    lines = models_table().splitlines()
    assert lines[0].split() == ["model", "params", "input", "book", "lr", "d2l", "section"]
    assert [line.split()[0] for line in lines[2:]] == list_models()
    row = next(line.split() for line in lines if line.startswith("regnetx32"))
    assert row == ["regnetx32", "179,290", "96x96", "0.05", "8.8"]


def test_summarize_with_scratch_layers_matches_torch():
    assert summarize("resnet18", ops="scratch").splitlines()[1:] == summarize("resnet18").splitlines()[1:]


def tiny_net():
    """``module:function`` for the test below: a small network of the user's own."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_summary_of_any_model_explore_opens(lenet, capsys):
    # `cnnlab summary` knew cnnlab's own models by name alone: an ONNX file, a .pt2 program, a run's checkpoint or a
    # network of the user's own was "unknown model", though the explorer shows the same layer table for each
    from cnnlab.inference import load_trained

    model = load_trained(lenet["run"]).model
    weights = sum(p.numel() for p in model.parameters())  # torch's own count
    counted = layer_summary(model, (1, 1, 28, 28))  # and torch's MACs, one image's
    macs = sum(r.macs for r in counted)
    for kind in ("run", "onnx", "pt2"):
        assert main(["summary", str(lenet[kind])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert ", fed float32 N x C x H x W, 1 channel at 28 x 28" in lines[0], (kind, lines[0])
        assert lines[1].split()[-2:] == ["params", "MACs"], (kind, lines[1])
        # the per-image total in the words `cnnlab summary lenet` says it
        assert lines[-1].startswith(f"total: {weights:,} parameters in "), (kind, lines[-1])
        assert lines[-1].endswith(f", {macs:,} MACs ({macs / 1e9:.3f} GMACs) per image"), (kind, lines[-1])
        rows = [line.split() for line in lines[3:-1]]
        # the first convolution's row
        assert ["6", "x", "28", "x", "28", "156", f"{counted[0].macs:,}"] == rows[0][-7:], (kind, rows[0])
    assert main(["summary", "test_summary:tiny_net", "--input-size", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test_summary:tiny_net: ") and "3 channels at 16 x 16" in lines[0], lines[0]
    tiny = layer_summary(tiny_net(), (1, 3, 16, 16))
    assert [line.split()[1:] for line in lines[3:-1]][:2] == [["Conv2d", "4", "x", "14", "x", "14", "112",
                                                              f"{tiny[0].macs:,}"],
                                                             ["ReLU", "4", "x", "14", "x", "14", "0", "0"]]
    total = sum(r.macs for r in tiny)
    assert lines[-1] == (f"total: {sum(p.numel() for p in tiny_net().parameters()):,} parameters in 5 layers, "
                         f"{total:,} MACs ({total / 1e9:.3f} GMACs) per image")


class _OneLayer(nn.Module):
    """A network of the user's own whose forward is functional ops on parameters of its own: one layer, itself."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 3, 16, 16))

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.weight)


def one_layer():
    return _OneLayer()


def test_summary_of_a_one_layer_network_says_one_layer(capsys):
    assert main(["summary", "test_summary:one_layer", "--input-size", "16"]) == 0
    macs = 2 * 3 * 16 * 16
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"total: 1,536 parameters in 1 layer, {macs:,} MACs ({macs / 1e9:.3f} GMACs) per image"


def test_summary_of_a_graph_whose_macs_are_unknown_says_so(lenet, capsys, monkeypatch):
    # a Gemm whose shapes were symbolic: its row and the total say "unknown", no guess of a part
    from cnnlab.explore import onnx_macs, onnx_model

    monkeypatch.setattr(onnx_model, "node_macs",
                        lambda node, dims_of: None if node.op_type == "Gemm" else onnx_macs.node_macs(node, dims_of))
    assert main(["summary", str(lenet["onnx"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[3:-1]]
    assert [row[-1] for row in rows if row[1] == "Gemm"] == ["-"] * 3 and rows[0][-1] != "-"
    assert lines[-1].endswith(" layers, unknown MACs (a layer's shapes are not known) per image"), lines[-1]


@pytest.mark.parametrize("argv, expected", [
    (["summary", "lenet", "--weights", "w.pt"], "--weights is for a model from elsewhere; lenet is one of cnnlab's "
                                                "models, whose input --input N,C,H,W sets"),
    (["summary", "lenet5", "--input-size", "32"], "unknown model 'lenet5'; expected one of: lenet, "),
    (["summary", "nope.onnx"], "nope.onnx does not exist (expected a .onnx, .pt2 or cnnlab .pt file, or "
                               "module:function)"),
    (["summary", "test_summary:tiny_net", "--input", "1,3,16,16"], "--input is for cnnlab's own models; "
                                                                   "test_summary:tiny_net is a model from elsewhere"),
    (["summary", "test_summary:tiny_net", "--input-size", "16", "--ops", "scratch"], "--ops is for cnnlab's own "
                                                                                     "models"),
])
def test_summary_flags_of_the_wrong_kind_of_model_are_one_line(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab summary: error: {expected}") and err.count("\n") == 1, err
