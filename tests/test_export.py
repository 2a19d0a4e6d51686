"""cnnlab.export: ONNX (checked with onnxruntime on real test images) and torch.export programs."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import data_support
import report_fixtures
from cli_support import fresh_python
from cnnlab import export as export_module
from cnnlab.cli import main
from cnnlab.data import CLASSES, MEAN, STD, Preprocess, load_dataset, load_fashion_mnist
from cnnlab.errors import CnnlabError
from cnnlab.export import export_checkpoint
from cnnlab.inference import load_trained
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from data_support import write_classes

home = data_support.home  # a fixture: every cache under tmp_path

# the export extra (pip install 'cnnlab[export]'); `make test` installs it, so CI never skips these
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy  # shared fixtures


def _real_batch(n: int, start: int = 0) -> torch.Tensor:
    """Test images as the exported graph takes them: float N x 1 x 28 x 28, uint8 / 255."""
    return load_fashion_mnist().test_images[start:start + n].unsqueeze(1).float() / 255


def _torch_logits(checkpoint, x: torch.Tensor) -> np.ndarray:
    _t = load_trained(checkpoint)
    model, pre, _ = _t.model, _t.preprocess, _t.checkpoint
    with torch.no_grad():
        return model(pre(x)).numpy()


def test_onnx_matches_pytorch_on_real_images_at_dynamic_batch_sizes(trained_run, tmp_path):
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.onnx")
    assert out == tmp_path / "lenet.onnx"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    assert inp.name == "images" and inp.shape[1:] == [1, 28, 28] and not isinstance(inp.shape[0], int)
    for n in (1, 5, 37):
        x = _real_batch(n, start=n)
        got = session.run(None, {"images": x.numpy()})[0]
        expected = _torch_logits(trained_run / "last.pt", x)
        assert np.abs(got - expected).max() <= 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["cnnlab.classes"]) == list(CLASSES) and meta["cnnlab.model"] == "lenet-relu"


@pytest.mark.slow
def test_onnx_carries_resize_and_normalisation_inside(tmp_path):
    """A 96-px model with normalisation: the consumer feeds 28-px [0, 1] images and nothing else."""
    torch.manual_seed(0)
    model = create_model("regnetx32").eval()
    ckpt = tmp_path / "regnet.pt"
    save_checkpoint({"model_name": "regnetx32", "num_classes": 10, "in_channels": 1, "input_size": 96,
                     "normalize": [MEAN, STD], "ops": "torch", "config": {}, "model": model.state_dict(),
                     "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0}, ckpt)
    out = export_checkpoint(ckpt, tmp_path / "regnet.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _real_batch(3)
    got = session.run(None, {"images": x.numpy()})[0]
    assert np.abs(got - _torch_logits(ckpt, x)).max() <= 1e-4
    with torch.no_grad():  # the normalisation matters: a resize alone gives other logits
        assert np.abs(got - model(torch.nn.functional.interpolate(x, size=96, mode="bilinear")).numpy()).max() > 1e-3


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_from_scratch_checkpoint_exports_with_a_dynamic_batch(fmt, tmp_path):
    # cnnlab's own layers loop over the batch in Python: traced as they are, the program took one batch size only
    # (an internal error); the export runs the same weights in torch's layers.
    torch.manual_seed(0)
    model = create_model("lenet-bn", ops="scratch").eval()
    ckpt = tmp_path / "scratch.pt"
    save_checkpoint({"model_name": "lenet-bn", "num_classes": 10, "in_channels": 1, "input_size": 28,
                     "normalize": None, "ops": "scratch", "config": {}, "model": model.state_dict(),
                     "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0}, ckpt)
    out = export_checkpoint(ckpt, tmp_path / f"scratch.{fmt}", format=fmt)
    for n in (1, 5):
        x = _real_batch(n)
        if fmt == "onnx":
            got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
        else:
            got = torch.export.load(out).module()(x).detach().numpy()
        assert np.abs(got - _torch_logits(ckpt, x)).max() <= 1e-4  # the from-scratch model's own logits


def test_pt2_program_matches_pytorch(trained_run, tmp_path):
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.pt2", format="pt2")
    program = torch.export.load(out).module()
    x = _real_batch(3)
    assert np.abs(program(x).detach().numpy() - _torch_logits(trained_run / "last.pt", x)).max() <= 1e-5


def test_the_pt2_commands_print_nothing_of_torchs_on_stderr(trained_run, tmp_path):
    # torch 2.9 and 2.10 warned from inside torch.export.load that a buffer of their own was not writable (two lines
    # on stderr of every command that reads a .pt2). Each command in a process of its own, as a user runs it: torch
    # gives that warning once a process. Later torch has no such warning, so only a run on 2.10 shows this failing.
    pt2, pictures = tmp_path / "m.pt2", tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(pictures / "a.png")
    for argv, out in ((["export", str(trained_run / "last.pt"), "--format", "pt2", "--output", str(pt2)], f"{pt2}\n"),
                      (["predict", str(pt2), str(pictures / "a.png")], None),
                      (["explore", str(pt2), "--images", str(pictures), "--export", str(tmp_path / "page.html")],
                       None)):
        run = fresh_python(f"import sys\nfrom cnnlab.cli import main\nsys.exit(main({argv!r}))")
        assert run.stderr == "", (argv[0], run.stderr)
        assert out is None or run.stdout == out
    assert (tmp_path / "page.html").is_file()


def test_never_overwrites_without_force(trained_run, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    with pytest.raises(CnnlabError, match="already exists; pass --force"):
        export_checkpoint(trained_run / "last.pt", target)
    assert target.read_bytes() == b"precious"
    export_checkpoint(trained_run / "last.pt", target, force=True)
    onnx.checker.check_model(onnx.load(str(target)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"], "temporary files left behind"



def test_a_file_that_appears_while_exporting_is_kept_without_force(trained_run, tmp_path, monkeypatch):
    # the output is looked at before the work, seconds to minutes before the file is moved into place: a file that
    # another program wrote there meanwhile (a second export to the same name) was replaced without a word
    target, write = tmp_path / "m.pt2", export_module._write_pt2

    def another_writes_the_same_name(*args):
        write(*args)
        target.write_bytes(b"precious")

    monkeypatch.setattr(export_module, "_write_pt2", another_writes_the_same_name)
    with pytest.raises(CnnlabError, match=r"m\.pt2 appeared while it was being written .* nothing was written: pass "
                                          r"--force"):
        export_checkpoint(trained_run / "last.pt", target, format="pt2")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"], "temporary files left behind"
    export_checkpoint(trained_run / "last.pt", target, format="pt2", force=True)  # what --force is for
    assert torch.export.load(target).module()(_real_batch(2)).shape == (2, 10)

def test_a_failed_check_leaves_no_file(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no export can pass: the check must refuse it
    with pytest.raises(CnnlabError, match="does not match PyTorch.*nothing was written"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, match", [("torchscript", "deprecated"), ("tflite", "one of onnx, pt2")])
def test_unsupported_formats_and_bad_outputs(trained_run, tmp_path, fmt, match):
    with pytest.raises(CnnlabError, match=match):
        export_checkpoint(trained_run / "last.pt", tmp_path / "m", format=fmt)
    with pytest.raises(CnnlabError, match="does not exist"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "no" / "m.onnx")
    with pytest.raises(CnnlabError, match="is a folder"):
        export_checkpoint(trained_run / "last.pt", tmp_path)


def test_sigterm_during_an_export_leaves_no_file_behind(trained_run, tmp_path, capsys, monkeypatch):
    # SIGTERM killed the process mid-write: an 85 MB hidden .tmp stayed in the output folder (int8: its work folder
    # in /tmp too). It now unwinds as Ctrl-C does.
    import os
    import signal

    write = export_module._write_onnx

    def write_then_terminated(wrapped, tmp, *args):
        write(wrapped, tmp, *args)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode, mid-export

    monkeypatch.setattr(export_module, "_write_onnx", write_then_terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["export", str(trained_run / "last.pt"), "--output", str(tmp_path / "m.onnx")]) == 143
    assert capsys.readouterr().err.strip() == "cnnlab export: terminated"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler lasts as long as the command


def test_cli_export(trained_run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(trained_run / "last.pt"), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    assert main(["export", str(trained_run / "last.pt"), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_a_flip_tta_run_says_the_graph_is_the_plain_model(run_copy, tmp_path, capsys):
    plain = tmp_path / "plain.onnx"
    assert main(["export", str(run_copy / "last.pt"), "--output", str(plain)]) == 0
    assert "note:" not in capsys.readouterr().err
    assert {p.key: p.value for p in onnx.load(str(plain)).metadata_props}["cnnlab.flip_tta"] == "none"
    state = load_checkpoint(run_copy / "last.pt")
    state["config"]["tta"] = True
    save_checkpoint(state, run_copy / "last.pt")
    mirrored = tmp_path / "tta.pt2"
    assert main(["export", str(run_copy / "last.pt"), "--output", str(mirrored), "--format", "pt2"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{mirrored}\n"  # only the file's path, for a script to read
    assert err.startswith("cnnlab export: note: the run's figures average the logits of each image and of its "
                          "left-right mirror; this graph is the plain model")
    extra = {"cnnlab.json": ""}
    torch.export.load(str(mirrored), extra_files=extra)
    assert json.loads(extra["cnnlab.json"])["cnnlab.flip_tta"].startswith("the run's figures average the logits")


# ------------------------------------------------------------------ int8, test-set verification, pt2 without cnnlab
INT8_BOUND = 0.95  # top-1 agreement of the int8 LeNet with PyTorch on 500 test images (measured about 0.98)


def test_int8_onnx_is_quantized_calibrated_and_agrees_with_pytorch(trained_run, tmp_path):
    from sklearn.metrics import accuracy_score

    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet-int8.onnx", format="onnx-int8",
                            calibration=128)
    graph = onnx.load(str(out))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: the convs and matmuls read int8 tensors
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)  # the weights are int8
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["cnnlab.int8_calibration"] == "128 training images of fashion-mnist"
    assert json.loads(meta["cnnlab.classes"]) == list(CLASSES)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = export_module.verification_images(trained_run / "last.pt", 500).float() / 255  # the images verify takes
    got, expected = session.run(None, {"images": x.numpy()})[0], _torch_logits(trained_run / "last.pt", x)
    agreement = accuracy_score(expected.argmax(1), got.argmax(1))
    assert agreement >= INT8_BOUND
    assert np.abs(got - expected).max() > 1e-4  # it is not the float model under another name
    assert export_module.verify_export(trained_run / "last.pt", out, images=500).agree == round(agreement * 500)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet-int8.onnx"], "temporary files left behind"


def test_int8_below_the_agreement_bound_writes_nothing(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(CnnlabError, match=r"int8 export's top-1 agrees .* below the 101% required; nothing was"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "q.onnx", format="onnx-int8", calibration=16)
    assert list(tmp_path.iterdir()) == []



def test_an_int8_export_that_onnxruntime_cannot_run_is_one_line(trained_run, tmp_path, capsys, monkeypatch):
    # --opset 28 (onnx 1.23's newest): onnxruntime 1.32 calibrates on the float graph, then has no QuantizeLinear of
    # that operator set, and the int8 export ended in an internal error where the float one says this in one line.
    # The runtime's refusal is played here so that the test does not depend on the versions installed.
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as RuntimeLacksIt

    session = ort.InferenceSession

    def without_quantize_linear(model, *args, **kwargs):
        if "QuantizeLinear" in {node.op_type for node in onnx.load(str(model)).graph.node}:
            raise RuntimeLacksIt("Could not find an implementation for QuantizeLinear(28) node")
        return session(model, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", without_quantize_linear)
    out = tmp_path / "q.onnx"
    assert main(["export", str(trained_run / "last.pt"), "--format", "onnx-int8", "--calibration", "16",
                 "--verify", "10", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"cnnlab export: error: onnxruntime {re.escape(ort.__version__)} cannot run the int8 ONNX "
                        r"export \(.*QuantizeLinear\(28\).*\); nothing was written \(a lower --opset may do\)\n", err)
    assert list(tmp_path.iterdir()) == []

def _untrained_compact(folder, input_size: int = 28) -> Path:
    torch.manual_seed(0)
    ckpt = folder / "compact.pt"
    save_checkpoint({"model_name": "compact", "num_classes": 10, "in_channels": 1, "input_size": input_size,
                     "normalize": None, "ops": "torch", "config": {}, "model": create_model("compact").state_dict(),
                     "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0}, ckpt)
    return ckpt


def test_int8_export_of_the_compact_model(tmp_path, monkeypatch, data_dir):
    # cpu10's model: onnxruntime's symbolic shape inference failed on its adaptive max pool (a ReduceMax, then a
    # Reshape) with "'NoneType' object is not iterable", an internal error
    ckpt = _untrained_compact(tmp_path)
    monkeypatch.setattr(export_module, "INT8_MIN_AGREEMENT", 0.0)  # untrained weights: any agreement will do here
    out = export_checkpoint(ckpt, tmp_path / "compact-int8.onnx", format="onnx-int8", calibration=64)
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8"])
def test_the_resize_inside_an_onnx_export_takes_its_sizes_from_a_whole_shape(fmt, tmp_path, monkeypatch, data_dir):
    # The exporter wrote the resize's sizes as Concat(Shape(images, start=0, end=2), [32, 32]); OpenCV's DNN module
    # (4.x, cv2.dnn.readNetFromONNX) ignores Shape's start and end, took all four sides and refused the file ("HCHW
    # layout is expected"): every export with a resize inside (any ImageNet backbone's) failed to load there. A Shape
    # of the whole tensor, then a Slice, is the same value in every runtime.
    monkeypatch.setattr(export_module, "INT8_MIN_AGREEMENT", 0.0)  # untrained weights: any agreement will do here
    ckpt = _untrained_compact(tmp_path, input_size=32)
    calibration = {"calibration": 32} if fmt == "onnx-int8" else {}
    out = export_checkpoint(ckpt, tmp_path / "m.onnx", format=fmt, **calibration)
    model = onnx.load(str(out))
    assert "Resize" in {node.op_type for node in model.graph.node}
    assert [node.attribute for node in model.graph.node if node.op_type == "Shape"] == [[]]
    onnx.checker.check_model(model, full_check=True)
    x = _real_batch(3)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    tolerance = 1e-4 if fmt == "onnx" else 0.1
    assert got.shape == (3, 10) and np.abs(got - _torch_logits(ckpt, x)).max() <= tolerance


def test_the_onnx_exporter_is_handed_no_adaptive_max_pool(tmp_path, monkeypatch):
    """torch 2.11's ONNX exporter has no function for aten.adaptive_max_pool2d, so compact (cpu10's network) did not
    export there (seen on an H100 machine); its global max pool goes to the exporter as a maximum over height and
    width, the same values."""
    handed, export = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda module, *a, **k: handed.append(module) or export(module, *a, **k))
    out = export_checkpoint(_untrained_compact(tmp_path), tmp_path / "compact.onnx")  # checked against PyTorch
    x = torch.rand(2, 1, 28, 28)
    ops = {str(node.target) for node in torch.export.export(handed[0], (x,)).graph.nodes}
    assert "aten.adaptive_max_pool2d.default" not in ops and "aten.amax.default" in ops
    with torch.no_grad():
        expected = load_trained(tmp_path / "compact.pt", "cpu").logits((x * 255).round().to(torch.uint8))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": ((x * 255).round() / 255).numpy()})[0]
    assert np.allclose(got, expected.numpy(), atol=1e-4)


def test_a_global_average_pool_of_a_channels_last_feature_map_is_one_reduce_mean(tmp_path):
    # ConvNeXt's blocks leave its last feature map channels-last, and torch writes its AdaptiveAvgPool2d(1) as a mean
    # and an as_strided, which the ONNX exporter made index arithmetic on the batch size (Shape, Squeeze, Range,
    # Gather): OpenCV's DNN module (4.x) refused the file at the Squeeze. The pool goes to the exporter as the mean
    # over height and width, the same values, one ReduceMean.
    torch.manual_seed(0)
    model = create_model("imagenet-convnext_tiny", num_classes=10, in_channels=1).eval()
    ckpt = tmp_path / "convnext.pt"
    save_checkpoint({"model_name": "imagenet-convnext_tiny", "num_classes": 10, "in_channels": 1, "input_size": 64,
                     "normalize": None, "ops": "torch", "config": {}, "model": model.state_dict(),
                     "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0}, ckpt)
    out = export_checkpoint(ckpt, tmp_path / "convnext.onnx")  # checked against PyTorch
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert ops.count("ReduceMean") == 1 and not {"Gather", "Range", "Squeeze"} & set(ops)


def test_an_operator_the_onnx_exporter_cannot_convert_is_one_line(tmp_path):
    """torch's exporter raised its ConversionError (three screens of advice) through export, an internal error at the
    CLI. FractionalMaxPool2d has no ONNX function in torch 2.14; should one come, this test needs another operator."""
    trained = load_trained(_untrained_compact(tmp_path), "cpu")
    odd = nn.Sequential(nn.FractionalMaxPool2d(2, output_size=4), nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(CnnlabError) as e:
        export_checkpoint(replace(trained, model=odd), tmp_path / "odd.onnx")
    assert re.fullmatch(r"torch \S+'s ONNX exporter cannot convert this network \(No ONNX function found for "
                        r".*aten\.fractional_max_pool2d.*\); nothing was written \(--format pt2 takes any torch "
                        r"operator\)", str(e.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compact.pt"]


def test_the_check_scales_with_the_logits_and_names_a_diverged_model(tmp_path):
    # A briefly trained ResNet-34 or RegNet has logits in the hundreds or thousands, and float32 rounds them
    # otherwise in each runtime: a fixed 1e-4 refused correct exports (1.8e-3 at a largest logit of 1,404)
    reference = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        reference[1].weight.fill_(300.0)
    shape = (1, 2)
    expected = lambda x: reference(x).detach().numpy()  # noqa: E731
    export_module._check(lambda x: expected(x) + 1e-3, reference, shape, "the export")  # within 1e-4 + 1e-5 x ~1000
    with pytest.raises(CnnlabError, match=r"max abs difference 1.00e-01 > .* \(0.0001 \+ 1e-05 x the largest logit"):
        export_module._check(lambda x: expected(x) + 0.1, reference, shape, "the export")
    with torch.no_grad():
        reference[1].bias.fill_(float("nan"))
    with pytest.raises(CnnlabError, match="the model's own logits are not finite .* its weights diverged in training"):
        export_module._check(expected, reference, shape, "the export")


@pytest.mark.parametrize("kwargs, match", [
    (dict(format="onnx-int8"), "an int8 export needs calibration images: pass --calibration N"),
    (dict(format="onnx-int8", calibration=0), "--calibration must be a positive number of images, got 0"),
    (dict(format="onnx-int8", calibration=60001), "--calibration must be at most the 60000 training images"),
    (dict(format="onnx", calibration=8), "--calibration is for --format onnx-int8"),
])
def test_int8_calibration_arguments(trained_run, tmp_path, kwargs, match):
    with pytest.raises(CnnlabError, match=match):
        export_checkpoint(trained_run / "last.pt", tmp_path / "q.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--format", "onnx-int8", "--output", "q.onnx"], "an int8 export needs calibration images"),
    (["--output", "m.onnx", "--calibration", "8", "--verify", "5"], "--calibration is for --format onnx-int8"),
    (["--format", "onnx-int8", "--calibration", "8", "--output", "q.pt2"], "--format onnx-int8 writes a .onnx file"),
    (["--format", "onnx-int8", "--calibration", "8", "--output", "taken.onnx"], "already exists; pass --force"),
    (["--format", "pt2", "--output", "m.pt2", "--verify", "5", "--calibration", "8"], "--calibration is for"),
    (["--output", "m.onnx", "--verify", "5", "--opset", "17"], "--opset must be an operator set from 18 (the lowest "
                                                              "torch's exporter writes) to"),
    (["--output", "m.onnx", "--verify", "5", "--opset", "999"], "the newest onnx"),
    (["--format", "pt2", "--output", "m.pt2", "--verify", "5", "--opset", "18"], "--opset is the operator set of an "
                                                                                "ONNX file"),
])
def test_cli_export_refuses_its_arguments_before_reading_the_dataset(tmp_path, capsys, monkeypatch, args, needle):
    # --verify (500 images by default for onnx-int8) read the test set before the arguments were checked: a missing
    # --calibration, a wrong suffix or an existing output waited for the dataset, and without one was refused for
    # the dataset, as if that were what was wrong
    checkpoint, empty = tmp_path / "lenet.pt", tmp_path / "empty"
    save_checkpoint({"model_name": "lenet-relu", "num_classes": 10, "in_channels": 1, "input_size": 28,
                     "normalize": None, "ops": "torch", "config": {}, "model": create_model("lenet-relu").state_dict(),
                     "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0}, checkpoint)
    empty.mkdir()
    (tmp_path / "taken.onnx").write_bytes(b"precious")
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(checkpoint), *args, "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "lacks" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "lenet.pt", "taken.onnx"]
    assert (tmp_path / "taken.onnx").read_bytes() == b"precious"


def test_verify_export_float_formats_agree_on_every_test_image(trained_run, tmp_path):
    for fmt, name in (("onnx", "m.onnx"), ("pt2", "m.pt2"), ("safetensors", "m.safetensors")):
        out = export_checkpoint(trained_run / "last.pt", tmp_path / name, format=fmt)
        agreement = export_module.verify_export(trained_run / "last.pt", out, images=300)
        assert (agreement.images, agreement.agree) == (300, 300) and agreement.max_abs_diff <= 1e-4
    with pytest.raises(CnnlabError, match="--verify must be a positive number of test images, got 0"):
        export_module.verify_export(trained_run / "last.pt", out, images=0)


def test_cli_export_verify_says_when_the_test_split_has_fewer_images(trained_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained_run / "last.pt"), "--output", str(out), "--verify", "20000"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "on 10000/10000 test images (100.00%; all the test split has, 20000 asked)" in line


def test_the_test_images_an_export_is_checked_on_stand_for_every_class(tmp_path, home, capsys):
    """A folder's test split is sorted by class: its first images, which --verify and the int8 check took, were its
    first class alone. They take a seeded sample of the whole split, the same on every call."""
    write_classes(tmp_path / "photos" / "train", {"a": 4, "b": 4, "c": 4}, size=(28, 28))
    write_classes(tmp_path / "photos" / "test", {"a": 10, "b": 10, "c": 10}, size=(28, 28), seed=50)
    run = tmp_path / "run"
    assert main(["train", "lenet-relu", "--dataset", f"folder:{tmp_path / 'photos'}", "--epochs", "1", "--out",
                 str(run), "--quiet", "--no-report"]) == 0, capsys.readouterr().err
    test = load_dataset(f"folder:{tmp_path / 'photos'}")
    checked = export_module.verification_images(run / "best.pt", 10)
    drawn = [next(i for i, image in enumerate(test.test_images) if torch.equal(image, one)) for one in checked]
    assert drawn == sorted(drawn) and {test.classes[test.test_labels[i]] for i in drawn} == {"a", "b", "c"}
    assert torch.equal(export_module.verification_images(run / "best.pt", 10), checked)
    assert len(export_module.verification_images(run / "best.pt", 50)) == 30  # all the split has


def test_cli_export_verify_without_its_dataset_writes_nothing(trained_run, tmp_path, capsys):
    out, empty = tmp_path / "m.onnx", tmp_path / "empty"
    empty.mkdir()
    argv = ["export", str(trained_run / "last.pt"), "--output", str(out), "--verify", "5", "--data-dir", str(empty)]
    assert main(argv) == 2
    assert "lacks train-images-idx3-ubyte.gz" in capsys.readouterr().err and not out.exists()


def test_cli_export_int8_prints_the_agreement(trained_run, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    argv = ["export", str(trained_run / "last.pt"), "--format", "onnx-int8", "--output", str(out)]
    assert main(argv) == 2
    assert "needs calibration images" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--calibration", "64", "--verify", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out)
    agree = int(lines[1].split(" on ")[1].split("/")[0])
    assert lines[1].startswith("top-1 agrees with PyTorch on ") and "/200 test images" in lines[1]
    assert agree >= INT8_BOUND * 200


def test_every_format_is_written_with_the_mode_of_any_new_file(trained_run, tmp_path):
    """An export is readable by whoever may read a new file here (a web server's user serving the model): the
    safetensors library writes its files 0600 itself, and the safetensors export alone was unreadable by others."""
    umask = os.umask(0o022)
    try:
        for fmt, name in (("onnx", "m.onnx"), ("pt2", "m.pt2"), ("safetensors", "m.safetensors")):
            out = export_checkpoint(trained_run / "last.pt", tmp_path / name, format=fmt)
            assert stat.S_IMODE(os.stat(out).st_mode) == 0o644, fmt
    finally:
        os.umask(umask)


def test_safetensors_holds_the_network_and_says_how_to_feed_it(trained_run, tmp_path):
    """The network's weights alone, as the Hub and timm publish them: they load into a network built afresh, which
    fed as the metadata says gives the checkpoint's logits; nothing else is in the file."""
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.safetensors", format="safetensors")
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and json.loads(meta["cnnlab.classes"]) == list(CLASSES)
    network = create_model(meta["cnnlab.model"], num_classes=len(CLASSES), in_channels=1)
    network.load_state_dict(load_file(out))  # strict: every key of the network, nothing more
    mean, std = (None, None) if meta["cnnlab.mean"] == "none" else (json.loads(meta["cnnlab.mean"]),
                                                                     json.loads(meta["cnnlab.std"]))
    assert (mean is None) == (load_trained(trained_run / "last.pt").meta.mean is None)
    x = _real_batch(6)
    with torch.no_grad():
        got = network.eval()(Preprocess(int(meta["cnnlab.input_size"]), mean, std)(x)).numpy()
    assert np.abs(got - _torch_logits(trained_run / "last.pt", x)).max() <= 1e-5
    with pytest.raises(CnnlabError, match=r"--format safetensors writes a .safetensors file; got --output"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.pt", format="safetensors")


def test_pt2_loads_without_cnnlab(trained_run, tmp_path):
    import subprocess
    import sys

    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.pt2", format="pt2")
    x = _real_batch(4)
    np.save(tmp_path / "x.npy", x.numpy())
    script = ("import sys; sys.modules['cnnlab'] = None\n"  # any import of cnnlab would now fail
              "import numpy as np, torch\n"
              f"program = torch.export.load({str(out)!r}).module()\n"
              f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, program(x).detach().numpy())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert np.abs(np.load(tmp_path / "y.npy") - _torch_logits(trained_run / "last.pt", x)).max() <= 1e-5


def test_export_speed_benchmark_runs_on_a_tiny_budget(trained_run, tmp_path, capsys):
    """benchmarks/export_speed.py on a smoke budget, so that it cannot rot; no figure is asserted."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "export_speed.py"
    spec = importlib.util.spec_from_file_location("cnnlab_export_speed", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "export.json"
    assert bench.main([str(trained_run / "last.pt"), "--batches", "1,4", "--repeats", "1", "--images", "40",
                       "--calibration", "16", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["format"], r["batch"]) for r in rows] == [(f, b) for b in (1, 4)
                                                         for f in ("pytorch", "onnx", "onnx-int8", "pt2")]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert {r["format"]: r["agreement"] for r in rows if r["batch"] == 1}["onnx"] == 1.0
    assert "| onnx-int8 | 4 |" in capsys.readouterr().out


def _domains(model) -> dict[str, int]:
    return {o.domain or "ai.onnx": o.version for o in model.opset_import}


@pytest.mark.parametrize("opset", [None, 18, 21])
def test_an_onnx_export_is_stamped_for_the_oldest_runtimes_that_run_it(trained_run, tmp_path, opset):
    # torch's exporter stamped IR version 10 (onnx 1.23's newest) on every file, which onnxruntime 1.17 refuses
    # ("Unsupported model IR version: 10, max supported IR version: 9") although it runs operator set 20; and --opset
    # lets a runtime that knows only older operator sets load the file.
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "m.onnx", **({} if opset is None else {"opset": opset}))
    model = onnx.load(str(out))
    domains = _domains(model)
    assert set(domains) == {"ai.onnx"} and (opset is None or domains["ai.onnx"] == opset)
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))  # onnx's own table
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _real_batch(8)
    assert np.abs(session.run(None, {"images": x.numpy()})[0] - _torch_logits(trained_run / "last.pt", x)).max() <= 1e-4


def test_an_int8_export_imports_only_the_domains_its_nodes_use(trained_run, tmp_path):
    # onnxruntime's quantizer imported eight domains the graph never uses, ai.onnx.ml at version 5 among them, which
    # onnxruntime 1.17 refuses to load ("Current official support for domain ai.onnx.ml is till opset 4")
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "q.onnx", format="onnx-int8", calibration=32,
                            opset=18)
    model = onnx.load(str(out))
    assert _domains(model) == {"ai.onnx": 18} == {(n.domain or "ai.onnx"): 18 for n in model.graph.node}
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)


def test_a_file_of_another_operator_set_than_asked_is_refused(trained_run, tmp_path):
    # the exporter, asked for an operator set below 18, tried onnx's converter and wrote 18 all the same: a file must
    # not be named what it is not
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "m.onnx", opset=18)
    with pytest.raises(CnnlabError, match="the exporter wrote operator set 18 where --opset 19 asked"):
        export_module._for_older_runtimes(onnx.load(str(out)), opset=19)


@pytest.mark.parametrize("opset", [26, 28])
def test_an_operator_set_above_onnxscripts_converter_exports_without_its_notice(trained_run, tmp_path, opset):
    # onnxscript's converter stops at operator set 25 and hands a newer one to onnx's own, saying so on stderr ("The
    # model version conversion is not supported by the onnxscript version converter and fallback is enabled. ..."):
    # nothing a user can act on, since the file's operator set and its logits are checked all the same. In a process
    # of its own, as a user runs it: pytest's log capture would take the line off stderr.
    out = tmp_path / "m.onnx"
    argv = ["export", str(trained_run / "last.pt"), "--output", str(out), "--opset", str(opset)]
    run = fresh_python(f"import sys\nfrom cnnlab.cli import main\nsys.exit(main({argv!r}))")
    assert run.stderr == "" and run.stdout == f"{out}\n"
    assert _domains(onnx.load(str(out))) == {"ai.onnx": opset}
    failed = logging.LogRecord(export_module.CONVERTER_LOGGER, logging.WARNING, __file__, 0, "Failed to convert the "
                               "model to the target version %d using the ONNX C API. The model was not modified",
                               (opset,), None)
    assert export_module._not_the_fallback_notice(failed)  # that one still comes through
