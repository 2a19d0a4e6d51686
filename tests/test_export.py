"""cnnlab.export: ONNX (checked with onnxruntime on real test images) and torch.export programs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import report_fixtures
from cnnlab import export as export_module
from cnnlab.cli import main
from cnnlab.data import CLASSES, MEAN, STD, load_fashion_mnist
from cnnlab.errors import CnnlabError
from cnnlab.export import export_checkpoint
from cnnlab.inference import load_trained
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import save_checkpoint

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


def test_pt2_program_matches_pytorch(trained_run, tmp_path):
    out = export_checkpoint(trained_run / "last.pt", tmp_path / "lenet.pt2", format="pt2")
    program = torch.export.load(out).module()
    x = _real_batch(3)
    assert np.abs(program(x).detach().numpy() - _torch_logits(trained_run / "last.pt", x)).max() <= 1e-5


def test_never_overwrites_without_force(trained_run, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    with pytest.raises(CnnlabError, match="already exists; pass --force"):
        export_checkpoint(trained_run / "last.pt", target)
    assert target.read_bytes() == b"precious"
    export_checkpoint(trained_run / "last.pt", target, force=True)
    onnx.checker.check_model(onnx.load(str(target)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"], "temporary files left behind"


def test_a_failed_check_leaves_no_file(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no export can pass: the check must refuse it
    with pytest.raises(CnnlabError, match="does not match PyTorch.*nothing was written"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, match", [("torchscript", "deprecated"), ("safetensors", "not a cnnlab dependency"),
                                        ("tflite", "one of onnx, pt2")])
def test_unsupported_formats_and_bad_outputs(trained_run, tmp_path, fmt, match):
    with pytest.raises(CnnlabError, match=match):
        export_checkpoint(trained_run / "last.pt", tmp_path / "m", format=fmt)
    with pytest.raises(CnnlabError, match="does not exist"):
        export_checkpoint(trained_run / "last.pt", tmp_path / "no" / "m.onnx")
    with pytest.raises(CnnlabError, match="is a folder"):
        export_checkpoint(trained_run / "last.pt", tmp_path)


def test_cli_export(trained_run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(trained_run / "last.pt"), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    assert main(["export", str(trained_run / "last.pt"), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
