"""``cnnlab eval`` of models from elsewhere (ONNX, .pt2, module:function) on a labelled folder or a registered
dataset: the figures are scikit-learn's of the same network's answers, computed here with torch on the images as the
dataset loader decodes them."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix
from torch import nn

from cli_support import assert_one_line, run_with_output
from cnnlab.data import FOLDER_PREFIX, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate_checkpoint
from cnnlab.explore.evaluation import evaluate_any
from cnnlab.explore.model import Options
from cnnlab.export import export_checkpoint
from cnnlab.inference import load_trained
from cnnlab.train import train

FOLDER_CLASSES = ("cat", "dog", "fox")  # as the folder sorts them
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


class Tiny(nn.Module):
    """Conv, global average pool, linear: answers that follow the pictures' colours, not all one class."""

    def __init__(self, classes: int, channels: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(channels, 8, 3, padding=1), nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def _folder(root, split: bool = False, per_class: int = 4):
    """Class subfolders of 20 x 24 pictures tinted by class (with train/ and test/ splits if ``split``)."""
    rng = np.random.default_rng(0)
    for part in ("train", "test") if split else ("",):
        for name in FOLDER_CLASSES:
            (root / part / name).mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(0, 120, (20, 24, 3))
                picture = np.clip(noise + np.array(COLOURS[name]) * rng.uniform(0.3, 1.0), 0, 255).astype(np.uint8)
                (root / part / name / f"{i}.png").write_bytes(_png(picture))
    return root


def _onnx(net: nn.Module, path, channels: int = 3, side: int = 16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, channels, side, side),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def _expected(net: nn.Module, images: torch.Tensor, columns: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return net(images.float() / 255)[:, columns].argmax(1)


def _scored_with_names(tmp_path, folder, order: tuple[str, ...]):
    """An ONNX model of ``order``'s classes (named by --classes) scored on ``folder``, which has no test/; the
    folder's labels, and the answers torch gives for its images as the loader decodes them."""
    (tmp_path / "classes.txt").write_text("\n".join(order) + "\n")
    net = Tiny(len(order))
    result = evaluate_any(_onnx(net, tmp_path / "tiny.onnx"), data_dir=folder,
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    data = load_dataset(FOLDER_PREFIX + str(folder), image_size=16, channels=3)
    images, labels = torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])
    return result, labels, _expected(net, images, [order.index(c) for c in FOLDER_CLASSES])


def test_an_onnx_model_is_scored_on_a_folder_as_scikit_learn_scores_its_answers(tmp_path, cache):
    """The model's classes in another order than the folder's: matched by name, not by position."""
    folder = _folder(tmp_path / "pets")
    result, labels, predicted = _scored_with_names(tmp_path, folder, ("dog", "fox", "cat"))
    assert result.classes == FOLDER_CLASSES and result.n == 12
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1, 2]))
    assert len(set(predicted.tolist())) > 1  # the answers differ: a wrong order would be seen
    assert result.scored.startswith("all 12 images of folder:") and "no test/ folder" in result.scored
    assert result.model == "tiny.onnx" and result.device == "cpu"


def test_a_folder_with_a_test_split_is_scored_on_it_alone(tmp_path, cache):
    folder = _folder(tmp_path / "split", split=True)
    result = evaluate_any(_onnx(Tiny(3), tmp_path / "tiny.onnx"), data_dir=folder)
    assert result.n == 12 and result.scored.startswith("the 12 test images of folder:")


def test_a_model_of_more_classes_is_scored_over_the_datasets(tmp_path, cache):
    """An ImageNet-style model on a folder of some of its classes: the likeliest of the folder's classes."""
    folder = _folder(tmp_path / "pets")
    result, labels, predicted = _scored_with_names(tmp_path, folder, ("ant", "fox", "cat", "eel", "dog"))
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    assert "scored over the dataset's 3 classes among the model's 5" in result.scored


def test_a_model_that_names_no_classes_is_read_in_the_datasets_order_only_where_the_counts_agree(tmp_path, cache):
    folder = _folder(tmp_path / "pets")
    result = evaluate_any(_onnx(Tiny(3), tmp_path / "three.onnx"), data_dir=folder)
    assert "the model names no classes: its 3 outputs are read in the dataset's class order" in result.scored
    with pytest.raises(CnnlabError, match=r"four.onnx names no classes and has 4 outputs, folder:.*pets has 3 "
                                          r"classes; expected --classes FILE naming the model's classes$"):
        evaluate_any(_onnx(Tiny(4), tmp_path / "four.onnx"), data_dir=folder)


def test_a_module_function_model_is_scored_as_the_onnx_one(tmp_path, cache, monkeypatch):
    """Every kind explore opens goes through the same path: module:function gives the ONNX file's figures."""
    folder = _folder(tmp_path / "pets")
    (tmp_path / "tiny_models.py").write_text(
        "from test_evaluate_any import Tiny\n\ndef build():\n    return Tiny(3).eval()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = evaluate_any("tiny_models:build", data_dir=folder, options=Options.from_flags(input_size=16))
    by_onnx = evaluate_any(_onnx(Tiny(3), tmp_path / "tiny.onnx"), data_dir=folder)
    assert torch.equal(by_module.confusion, by_onnx.confusion)


@pytest.mark.parametrize("call, said", [
    (lambda m, f: evaluate_any(m), r"tiny.onnx is a model from elsewhere, with no dataset of its own; expected "
                                   r"--data-dir FOLDER \(class subfolders of images\) or --dataset NAME to score it "
                                   r"on$"),
    (lambda m, f: evaluate_any(m, data_dir=f, options=Options.from_flags(multi_label=True)),
     r"^--multi-label reads each output as its own class's probability, and eval scores one class per image"),
    (lambda m, f: evaluate_any(m, data_dir=f, device="cuda"), r"^--device cuda applies to a cnnlab checkpoint; "),
    (lambda m, f: evaluate_any(m, data_dir=f, options=Options.from_flags(classes=f.parent / "other.txt")),
     r"^folder:.*pets has classes the model does not name \('cat', 'fox'; the model's: 'dog', 'emu', 'gnu'\); "
     r"expected a dataset of the model's classes, or --classes naming the model's$"),
])
def test_bad_input_is_one_line(tmp_path, cache, call, said):
    folder = _folder(tmp_path / "pets")
    (tmp_path / "other.txt").write_text("dog\nemu\ngnu\n")
    with pytest.raises(CnnlabError, match=said) as e:
        call(_onnx(Tiny(3), tmp_path / "tiny.onnx"), folder)
    assert "\n" not in str(e.value)


def test_cli_eval_of_an_onnx_file(tmp_path, cache, capsys):
    folder = _folder(tmp_path / "pets")
    model = _onnx(Tiny(3), tmp_path / "tiny.onnx")
    (tmp_path / "classes.txt").write_text("\n".join(FOLDER_CLASSES))
    flags = ["--data-dir", str(folder), "--classes", str(tmp_path / "classes.txt")]
    code, out, err = run_with_output(["eval", str(model), *flags, "--json"], capsys)
    assert code == 0, err
    got = json.loads("\n".join(out))
    assert got["n"] == 12 and got["classes"] == list(FOLDER_CLASSES) and got["checkpoint"] == str(model)
    code, out, err = run_with_output(["eval", str(model), *flags], capsys)
    assert code == 0 and out[0].startswith("tiny.onnx: test accuracy ") and out[1].startswith("scored: all 12 images")
    code, _, err = run_with_output(["eval", str(model)], capsys)
    assert_one_line(code, err, "with no dataset of its own", command="eval")


@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_a_cnnlab_export_is_scored_on_the_split_its_run_held_out_as_its_checkpoint(tmp_path, cache, format):
    """Scored whole, the run's own folder (no test/) would have counted the images the model trained on: the export
    records which split its run drew, and is scored on it, as its checkpoint is; a folder changed since is refused."""
    folder = _folder(tmp_path / "pets", per_class=12)
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    exported = export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / f"lenet.{format}", format=format)
    by_export, by_checkpoint = evaluate_any(exported, data_dir=folder), evaluate_checkpoint(out / "best.pt")
    assert by_export.n == by_checkpoint.n == 6 and by_export.scored == by_checkpoint.scored
    assert torch.equal(by_export.confusion, by_checkpoint.confusion)
    moved = tmp_path / "moved"
    folder.rename(moved)  # the run's folder, moved: the same drawn split, by its files
    assert evaluate_any(exported, data_dir=moved).n == 6
    next((moved / "cat").iterdir()).unlink()
    with pytest.raises(CnnlabError, match=r"is not the one the run drew from folder:.*pets \(") as e:
        evaluate_any(exported, data_dir=moved)
    assert str(e.value) == _refusal(lambda: evaluate_checkpoint(out / "best.pt", data_dir=moved))


def _refusal(call) -> str:
    with pytest.raises(CnnlabError) as e:
        call()
    return str(e.value)


def test_a_pt2_program_is_scored_on_fashion_mnist_as_torch_scores_it(tmp_path, data_dir):
    """A registered dataset by name: its test split, at its own size, every one of the 10,000 images."""
    names = load_dataset("fashion-mnist", data_dir).classes
    (tmp_path / "classes.txt").write_text("\n".join(names))
    net = Tiny(10, channels=1).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)),
                      tmp_path / "tiny.pt2")
    result = evaluate_any(tmp_path / "tiny.pt2", data_dir=data_dir, dataset="fashion-mnist",
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    data = load_dataset("fashion-mnist", data_dir)
    predicted = _expected(net, data.test_images, list(range(10)))
    assert result.n == 10_000 and result.scored == "the 10000 test images of fashion-mnist"
    assert result.accuracy == pytest.approx(accuracy_score(data.test_labels, predicted))
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(data.test_labels, predicted))


def test_a_folder_scored_whole_for_a_model_of_no_run_names_no_run(tmp_path, cache):
    """A model from elsewhere has no run: its folder scored whole read "it has no test/ folder and is not the folder
    the run trained on", of a run that never was (timm's and Hugging Face's models, ONNX files of anyone's)."""
    folder = _folder(tmp_path / "pets")
    result, _, _ = _scored_with_names(tmp_path, folder, FOLDER_CLASSES)
    assert result.scored == f"all 12 images of {FOLDER_PREFIX}{folder}: it has no test/ folder"
