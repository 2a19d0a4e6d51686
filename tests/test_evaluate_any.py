"""``cnnlab eval`` of models from elsewhere (ONNX, .pt2, module:function) on a labelled folder or a registered
dataset: the figures are scikit-learn's of the same network's answers, computed here with torch on the images as the
dataset loader decodes them."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import unicodedata
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from torch import nn

from cli_support import assert_one_line, run_with_output, strict_json
from cnnlab.data import FOLDER_PREFIX, load_dataset, store
from cnnlab.data import folder as folder_source
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate_checkpoint
from cnnlab.explore.evaluation import evaluate_any
from cnnlab.explore.model import Options
from cnnlab.export import export_checkpoint
from cnnlab.inference import class_columns, load_trained
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


def _folder(root, split: bool = False, per_class: int = 4, seed: int = 0):
    """Class subfolders of 20 x 24 pictures tinted by class (with train/ and test/ splits if ``split``)."""
    rng = np.random.default_rng(seed)
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


def test_an_onnx_model_is_scored_on_a_folder_labelled_by_a_csv_as_on_its_class_subfolders(tmp_path, cache):
    """The same pictures flat in images/, labelled by labels.csv: the figures of the class subfolders' (the oracle),
    and the words say the CSV has no test rows, where they said no test/ folder."""
    folder = _folder(tmp_path / "pets")
    result, labels, predicted = _scored_with_names(tmp_path, folder, ("dog", "fox", "cat"))
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    rows = []
    for p in sorted(folder.glob("*/*.png")):
        shutil.copy(p, flat / "images" / f"{p.parent.name}_{p.name}")
        rows.append(f"images\\{p.parent.name}_{p.name},{p.parent.name}\n")  # written on Windows
    (flat / "labels.csv").write_text("file_name,label\n" + "".join(rows))
    by_csv = evaluate_any(tmp_path / "tiny.onnx", data_dir=flat,
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    assert by_csv.classes == result.classes and by_csv.n == 12
    assert by_csv.accuracy == pytest.approx(accuracy_score(labels, predicted))
    np.testing.assert_array_equal(by_csv.confusion.numpy(), result.confusion.numpy())
    assert by_csv.scored == f"all 12 images of folder:{flat}: it has no test rows in labels.csv"


def test_an_onnx_model_is_scored_on_a_folder_as_scikit_learn_scores_its_answers(tmp_path, cache):
    """The model's classes in another order than the folder's: matched by name, not by position."""
    folder = _folder(tmp_path / "pets")
    result, labels, predicted = _scored_with_names(tmp_path, folder, ("dog", "fox", "cat"))
    assert result.classes == FOLDER_CLASSES and result.n == 12
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1, 2]))
    assert len(set(predicted.tolist())) > 1  # the answers differ: a wrong order would be seen
    # a model from elsewhere has no run: the words said the folder was "not the folder the run trained on"
    assert result.scored == f"all 12 images of folder:{folder}: it has no test/ folder"
    assert result.model == "tiny.onnx" and result.device == "cpu"


def test_a_folder_is_scored_from_its_mapped_images_not_a_load_of_all_of_them(tmp_path, cache, monkeypatch):
    # a model from elsewhere scored a folder's test split after reading the whole decoded set into memory
    opened, open_raw = [], folder_source.open_raw
    monkeypatch.setattr(folder_source, "open_raw", lambda *a, **k: opened.append(images := open_raw(*a, **k)) or
                        images)
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    result = evaluate_any(_onnx(Tiny(3), tmp_path / "tiny.onnx"), data_dir=_folder(tmp_path / "pets", split=True),
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    assert result.n == 12 and opened and all(store.is_memory_mapped(images) for images in opened)


def test_a_folder_with_a_test_split_is_scored_on_it_alone(tmp_path, cache):
    folder = _folder(tmp_path / "split", split=True)
    result = evaluate_any(_onnx(Tiny(3), tmp_path / "tiny.onnx"), data_dir=folder)
    assert result.n == 12 and result.scored.startswith("the 12 test images of folder:")


class Detail(nn.Module):
    """A linear map of a 16 x 16 picture less its mean: every pixel counts, not only the picture's colour."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 16 * 16, 3)

    def forward(self, x):
        return self.fc((x - x.mean((1, 2, 3), keepdim=True)).flatten(1))


def test_a_folder_named_by_dataset_is_decoded_at_the_models_input_as_by_data_dir(tmp_path, cache):
    """--dataset folder:PATH decoded the pictures at their median side (20 px here) and resized them to the model's
    16 px without antialiasing: other images, and another cnnlab export's figures than its checkpoint's."""
    folder = _folder(tmp_path / "pets", per_class=8)
    net = Detail()
    model = _onnx(net, tmp_path / "detail.onnx")
    by_dataset = evaluate_any(model, dataset=f"{FOLDER_PREFIX}{folder}")
    by_data_dir = evaluate_any(model, data_dir=folder)
    assert by_dataset.scored == by_data_dir.scored and torch.equal(by_dataset.confusion, by_data_dir.confusion)
    # the two decodings give other answers: the figures above would tell them apart
    as_median = load_dataset(FOLDER_PREFIX + str(folder), channels=3)
    images = torch.cat([as_median.train_images, as_median.test_images])
    assert images.shape[-1] == 20
    resized = torch.nn.functional.interpolate(images.float(), size=(16, 16), mode="bilinear", align_corners=False)
    at_16 = load_dataset(FOLDER_PREFIX + str(folder), image_size=16, channels=3)
    labels = torch.cat([at_16.train_labels, at_16.test_labels])
    ours = _expected(net, torch.cat([at_16.train_images, at_16.test_images]), [0, 1, 2])
    theirs = _expected(net, resized, [0, 1, 2])
    np.testing.assert_array_equal(by_data_dir.confusion.numpy(), confusion_matrix(labels, ours, labels=[0, 1, 2]))
    assert not torch.equal(ours, theirs)


def test_a_model_of_more_classes_is_scored_over_the_datasets(tmp_path, cache):
    """An ImageNet-style model on a folder of some of its classes: the likeliest of the folder's classes."""
    folder = _folder(tmp_path / "pets")
    result, labels, predicted = _scored_with_names(tmp_path, folder, ("ant", "fox", "cat", "eel", "dog"))
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    assert "scored over the dataset's 3 classes among the model's 5" in result.scored


def test_class_names_match_however_their_accents_are_encoded(tmp_path, cache):
    """A folder unzipped from macOS spells 'ü' as 'u' and a combining mark (NFD), a names file typed elsewhere as one
    character (NFC): eval refused the folder, its 'hund ü' not among the model's 'hund ü'."""
    folder = _folder(tmp_path / "pets")
    (folder / "dog").rename(folder / unicodedata.normalize("NFD", "hund ü"))
    (tmp_path / "classes.txt").write_text("cat\nhund ü\nfox\n", encoding="utf-8")  # NFC, as typed
    net = Tiny(3)
    result = evaluate_any(_onnx(net, tmp_path / "tiny.onnx"), data_dir=folder,
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    assert [unicodedata.normalize("NFC", c) for c in result.classes] == ["cat", "fox", "hund ü"]  # as sorted
    data = load_dataset(FOLDER_PREFIX + str(folder), image_size=16, channels=3)
    images, labels = torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])
    predicted = _expected(net, images, [0, 2, 1])
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1, 2]))


def test_a_model_that_names_no_classes_is_read_in_the_datasets_order_only_where_the_counts_agree(tmp_path, cache):
    folder = _folder(tmp_path / "pets")
    result = evaluate_any(_onnx(Tiny(3), tmp_path / "three.onnx"), data_dir=folder)
    assert "the model names no classes (3 outputs): they are read in the dataset's class order" in result.scored
    with pytest.raises(CnnlabError, match=r"four.onnx names no classes and has 4 outputs, folder:.*pets has 3 "
                                          r"classes; expected --classes FILE naming the model's classes$"):
        evaluate_any(_onnx(Tiny(4), tmp_path / "four.onnx"), data_dir=folder)


def test_a_dataset_of_one_class_is_refused(tmp_path, cache):
    """Scored over the dataset's one class among the model's three, every answer was that class: a folder of cats
    gave accuracy 1.0 whatever the model answered."""
    folder = _folder(tmp_path / "pets")
    for name in ("dog", "fox"):
        shutil.rmtree(folder / name)
    with pytest.raises(CnnlabError, match=r"^folder:.*pets has one class \('cat'\): scored over it alone, every "
                                          r"answer would be right whatever the model; expected a dataset of 2 classes "
                                          r"or more$"):
        _named_eval(tmp_path, folder)


def _named_eval(tmp_path, data_dir):
    """A 3-class ONNX model naming the folder's classes, scored on ``data_dir``."""
    (tmp_path / "classes.txt").write_text("\n".join(FOLDER_CLASSES))
    return evaluate_any(_onnx(Tiny(3), tmp_path / "tiny.onnx"), data_dir=data_dir,
                        options=Options.from_flags(classes=tmp_path / "classes.txt"))


def test_a_binary_classifier_of_one_output_is_scored_on_two_classes(tmp_path, cache):
    """One output, its sigmoid the second class's probability: the words said "its 2 outputs" of a model of one."""
    folder = _folder(tmp_path / "pets")
    shutil.rmtree(folder / "fox")
    net = Tiny(1)
    result = evaluate_any(_onnx(net, tmp_path / "binary.onnx"), data_dir=folder)
    data = load_dataset(FOLDER_PREFIX + str(folder), image_size=16, channels=3)
    images, labels = torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])
    with torch.no_grad():
        predicted = (net(images.float() / 255)[:, 0] > 0).long()
    assert len(set(predicted.tolist())) == 2
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1]))
    assert result.scored.endswith("the model names no classes (1 output, read as a binary classifier of 2 classes): "
                                  "they are read in the dataset's class order (pass --classes to match them by name)")


def test_a_folder_of_a_test_split_alone_is_told_to_name_that_split(tmp_path, cache):
    """A labelled test set kept as PATH/test/<class>/ (no train/): test/ is read as the folder's one class, and the
    line said the dataset lacked the model's classes, not where they are."""
    folder = _folder(tmp_path / "pets", split=True)
    shutil.rmtree(folder / "train")
    with pytest.raises(CnnlabError, match=r"^folder:.*pets has one class \('test'\): .* expected a dataset of 2 "
                                          r"classes or more \(its one subfolder test/ is read as a class: for the "
                                          r"classes in it, pass --data-dir .*pets/test\)$"):
        _named_eval(tmp_path, folder)
    assert _named_eval(tmp_path, folder / "test").n == 12


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


def test_a_class_named_as_the_models_but_for_its_case_is_refused_saying_so():
    """A folder `Golden Retriever/` for the model's 'golden retriever' is another class (names match exactly), but
    the refusal listed the model's first five names, and with 1,000 of them the user could not see why."""
    model = [f"class {i}" for i in range(10)] + ["golden retriever", "tabby"]
    with pytest.raises(CnnlabError, match=r"^folder:pets has classes the model does not name \('Golden Retriever'; "
                                          r"the model's: 'class 0', .*, \.\.\.; 'Golden Retriever' differs from the "
                                          r"model's 'golden retriever' only in case\); expected a dataset of the "
                                          r"model's classes$"):
        class_columns(model, ["Golden Retriever", "tabby"], "folder:pets")
    assert class_columns(model, ["golden retriever", "tabby"], "folder:pets")[0] == [10, 11]


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
    # eval scores one class per image: --multi-label is not among its flags (its help listed it, always refused)
    code, _, err = run_with_output(["eval", str(model), "--data-dir", str(folder), "--multi-label"], capsys)
    assert_one_line(code, err, "unrecognized arguments: --multi-label", command="eval")


@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_a_cnnlab_export_is_scored_on_the_split_its_run_held_out_as_its_checkpoint(tmp_path, cache, format):
    """Scored whole, the run's own folder (no test/) would have counted the images the model trained on: the export
    records which split its run drew, and is scored on it, as its checkpoint is; a folder changed since is refused."""
    folder = _folder(tmp_path / "pets", per_class=12)
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    exported = export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / f"lenet.{format}", format=format)
    by_checkpoint = evaluate_checkpoint(out / "best.pt")
    # named, or not: the export names its run's folder, as the checkpoint does
    for by_export in (evaluate_any(exported, data_dir=folder), evaluate_any(exported)):
        assert by_export.n == by_checkpoint.n == 6 and by_export.scored == by_checkpoint.scored
        assert torch.equal(by_export.confusion, by_checkpoint.confusion)
    moved = tmp_path / "moved"
    folder.rename(moved)  # the run's folder, moved: the same drawn split, by its files
    assert evaluate_any(exported, data_dir=moved).n == 6
    with pytest.raises(CnnlabError, match=r"^the image folder .*lenet\.\w+'s run trained on, .*pets, is not a folder "
                                          r"here; expected --data-dir with the folder its files are in now$"):
        evaluate_any(exported)
    next((moved / "cat").iterdir()).unlink()
    with pytest.raises(CnnlabError, match=r"is not the one the run drew from folder:.*pets \(") as e:
        evaluate_any(exported, data_dir=moved)
    assert str(e.value) == _refusal(lambda: evaluate_checkpoint(out / "best.pt", data_dir=moved))


@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_the_export_of_a_run_that_skipped_bad_images_is_scored_as_its_checkpoint(tmp_path, cache, format):
    """A photo folder with a truncated file, trained with --skip-bad-images: eval of the checkpoint skipped it as the
    run did, eval of the export refused the folder until --skip-bad-images was typed again."""
    folder = _folder(tmp_path / "pets", per_class=12)
    (folder / "cat" / "cut short.png").write_bytes((folder / "cat" / "0.png").read_bytes()[:60])
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False, skip_bad_images=True)
    exported = export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / f"lenet.{format}", format=format)
    by_checkpoint = evaluate_checkpoint(out / "best.pt")
    by_export = evaluate_any(exported)
    assert by_export.n == by_checkpoint.n and by_export.scored == by_checkpoint.scored
    assert "skipped 1 unreadable image(s)" in by_export.scored
    assert torch.equal(by_export.confusion, by_checkpoint.confusion)


def test_a_checkpoint_refuses_weights_named_for_it(tmp_path, cache, capsys):
    """--weights was passed over for a cnnlab checkpoint: eval printed the checkpoint's own figures, as if they were
    those of the weights named."""
    folder = _folder(tmp_path / "pets", per_class=12)
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    torch.save(Tiny(3).state_dict(), tmp_path / "other.pth")
    code, _, err = run_with_output(["eval", str(out / "best.pt"), "--data-dir", str(folder), "--weights",
                                    str(tmp_path / "other.pth")], capsys)
    assert_one_line(code, err, "--layout, --multi-label and --weights are for models from elsewhere; a cnnlab "
                               "checkpoint records its own", command="eval")


def test_a_state_dict_named_as_a_checkpoint_is_told_how_it_opens(tmp_path, cache):
    """A torchvision state dict saved as .pt went to the checkpoint reader, whose refusal ended at "expected format
    'cnnlab-checkpoint'": eval takes such weights with --weights, and now says so, as predict and explore do."""
    folder = _folder(tmp_path / "pets")
    torch.save(Tiny(3).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CnnlabError, match=r"^.*weights.pt is not a cnnlab checkpoint: it holds a state dict .*; a "
                                          r"network from elsewhere is explored as .onnx, .* by module:function with a "
                                          r"state dict as --weights FILE$") as e:
        evaluate_any(tmp_path / "weights.pt", data_dir=folder)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, said", [
    ("config.json", r"config.json is not a model this explorer opens: expected .onnx, .pt2 \(torch.export\) or a "
                    r"cnnlab checkpoint \(.pt\), or module:function; got a .json$"),
    ("missing.onnx", r"missing.onnx does not exist \(expected a .onnx, .pt2 or cnnlab .pt file, or module:function\)$"),
])
def test_what_is_no_model_is_said_to_be_none_before_a_dataset_is_asked_for(tmp_path, cache, capsys, name, said):
    """With no dataset named, a run's config.json (or a file that is not there) was called "a model from elsewhere,
    with no dataset of its own": the missing dataset was asked for, and the file was no model at all."""
    (tmp_path / "config.json").write_text(json.dumps({"model": "lenet", "epochs": 10}))
    with pytest.raises(CnnlabError, match=said):
        evaluate_any(tmp_path / name)
    code, _, err = run_with_output(["eval", str(tmp_path / name)], capsys)
    assert_one_line(code, err, name, command="eval")
    assert "model from elsewhere" not in err[0]


def test_a_cnnlab_export_of_a_registered_dataset_is_scored_on_it_unless_told_otherwise(tmp_path, data_dir):
    """Its metadata names its run's dataset: with none named, eval scores that one, and --data-dir is its folder,
    as for the checkpoint (it said the export had no dataset of its own, and took the folder for class subfolders)."""
    out = tmp_path / "run"
    train("lenet", epochs=1, batch_size=256, limit_train_batches=2, out=str(out), quiet=True, report=False,
          data_dir=str(data_dir))
    exported = export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / "lenet.onnx")
    by_checkpoint = evaluate_checkpoint(out / "best.pt")
    for by_export in (evaluate_any(exported), evaluate_any(exported, data_dir=data_dir)):
        assert by_export.n == by_checkpoint.n == 10_000 and by_export.scored == by_checkpoint.scored
        assert by_export.accuracy == pytest.approx(by_checkpoint.accuracy, abs=2e-4)  # float rounding: an image or two


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_a_labelled_folder_given_as_data_dir_to_a_fashion_mnist_model_is_told_how_to_score_it(tmp_path, cache,
                                                                                               data_dir, capsys, kind):
    """README's `cnnlab eval MODEL --data-dir ~/pets` scores a folder for a model from elsewhere; for a checkpoint or
    export of Fashion-MNIST --data-dir names where Fashion-MNIST's files are, and the line said only that they are
    missing there. It now names --dataset folder:PATH too, and that, followed as printed, scores the folder."""
    out = tmp_path / "run"
    train("lenet", epochs=1, batch_size=256, limit_train_batches=2, out=str(out), quiet=True, report=False,
          data_dir=str(data_dir))
    model = out / "best.pt" if kind == "checkpoint" else \
        export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / "lenet.onnx")
    pets = _folder(tmp_path / "pets")
    for name, fashion in zip(FOLDER_CLASSES, ("trouser", "bag", "sandal"), strict=True):
        (pets / name).rename(pets / fashion)  # classes the model knows
    code, _, err = run_with_output(["eval", str(model), "--data-dir", str(pets)], capsys)
    assert_one_line(code, err, "Fashion-MNIST", command="eval")
    advice = re.search(r"name it (--dataset \S+)$", err[0])
    assert advice, err[0]
    code, lines, err = run_with_output(["eval", str(model), *advice.group(1).split(), "--json"], capsys)
    assert code == 0, err
    assert sum(map(sum, json.loads("\n".join(lines))["confusion"])) == 3 * 4  # every picture of the folder


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_a_folder_run_is_scored_whole_on_another_folder_named_as_one(tmp_path, cache, kind):
    """--data-dir OTHER is the run's folder, moved (a drawn split that differs is refused); --dataset folder:OTHER
    names another folder, which was refused all the same (its draw is not the run's) and is now scored whole."""
    folder, other = _folder(tmp_path / "pets", per_class=12), _folder(tmp_path / "new")
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    model = out / "best.pt" if kind == "checkpoint" else \
        export_checkpoint(load_trained(out / "best.pt", "cpu"), tmp_path / "lenet.onnx")
    with pytest.raises(CnnlabError, match=r"if it is another folder, name it as one \(cnnlab eval --dataset "
                                          r"folder:PATH\) or give it"):
        evaluate_any(model, data_dir=other)
    result = evaluate_any(model, dataset=f"folder:{other}")
    assert result.n == 12 and result.scored.startswith(f"all 12 images of folder:{other.resolve()}: it has no test/ "
                                                       "folder and is not the folder the run trained on")


def test_a_checkpoint_scores_a_folder_of_some_of_its_classes_as_its_export_does(tmp_path, cache, capsys):
    """A folder of 2 of a run's 3 classes, named with --dataset folder:PATH, was refused for a checkpoint ("has 2
    classes, but the model was trained on 3"), while the run's ONNX export scored it, matching classes by name: both
    score it now, over the folder's classes, with the same figures and words."""
    folder, other = _folder(tmp_path / "pets", per_class=12), _folder(tmp_path / "some", per_class=6, seed=1)
    shutil.rmtree(other / "cat")  # dog and fox: the model's outputs 1 and 2
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    trained = load_trained(out / "best.pt", "cpu")
    exported = export_checkpoint(trained, tmp_path / "lenet.onnx")
    result = evaluate_checkpoint(out / "best.pt", dataset=f"folder:{other}")
    data = trained.dataset(other=f"folder:{other}")
    images, labels = torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])
    logits = trained.logits(images)
    predicted = logits[:, [1, 2]].argmax(1)  # the likelier of dog and fox
    assert not torch.equal(predicted, logits[:, :2].argmax(1))  # the model's first two outputs would answer otherwise
    assert result.classes == ("dog", "fox") and result.n == 12
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1]))
    assert result.f1 == pytest.approx(f1_score(labels, predicted, labels=[0, 1], average=None, zero_division=0))
    assert result.scored == f"all 12 images of folder:{other.resolve()}: it has no test/ folder and is not the " \
                            "folder the run trained on; scored over the dataset's 2 classes among the model's 3 " \
                            "(absent: 'cat'): each answer is the likeliest of those 2"
    by_export = evaluate_any(exported, dataset=f"folder:{other}")
    assert torch.equal(by_export.confusion, result.confusion) and by_export.scored == result.scored
    code, lines, err = run_with_output(["eval", str(out / "best.pt"), "--dataset", f"folder:{other}"], capsys)
    assert code == 0, err
    assert lines[1] == f"scored: {result.scored}"
    # a class the model does not know is refused, as before; the run's own folder is held to its classes, as before
    (other / "fox").rename(other / "emu")
    with pytest.raises(CnnlabError, match=r"^folder:.*some has classes the model does not name \('emu'; the model's: "
                                          r"'cat', 'dog', 'fox'\); expected a dataset of the model's classes$"):
        evaluate_checkpoint(out / "best.pt", dataset=f"folder:{other}")
    shutil.rmtree(folder / "cat")
    with pytest.raises(CnnlabError, match=r"^dataset folder:.*pets has 2 classes \(dog, fox\), but the model was "
                                          r"trained on 3"):
        evaluate_checkpoint(out / "best.pt")


def test_a_test_folder_lacking_one_of_the_checkpoints_classes_is_scored_by_data_dir(tmp_path, cache, capsys):
    """`eval CHECKPOINT --data-dir FOLDER` read FOLDER as the run's folder, here, and refused one lacking a class (a
    small test set without dog pictures: "has 2 classes, but the model was trained on 3"): it is scored over the
    classes it has, matched to the model's outputs by name, as --dataset folder:FOLDER and the run's export score
    it, and the line names the class absent; a class the model does not know is still refused in one line."""
    folder, other = _folder(tmp_path / "pets", split=True, per_class=6), _folder(tmp_path / "new", per_class=5, seed=2)
    shutil.rmtree(other / "dog")  # cat and fox: the model's outputs 0 and 2
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    trained = load_trained(out / "best.pt", "cpu")
    result = evaluate_checkpoint(out / "best.pt", data_dir=other)
    data = trained.dataset(other=f"folder:{other}")
    images, labels = torch.cat([data.train_images, data.test_images]), torch.cat([data.train_labels, data.test_labels])
    predicted = trained.logits(images)[:, [0, 2]].argmax(1)  # the likelier of cat and fox
    assert result.classes == ("cat", "fox") and result.n == 10 and data.classes == ("cat", "fox")
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1]))
    assert result.scored == f"all 10 images of folder:{other.resolve()}: it has no test/ folder and is not the " \
                            "folder the run trained on; scored over the dataset's 2 classes among the model's 3 " \
                            "(absent: 'dog'): each answer is the likeliest of those 2"
    named = evaluate_checkpoint(out / "best.pt", dataset=f"folder:{other}")
    by_export = evaluate_any(export_checkpoint(trained, tmp_path / "lenet.onnx"), data_dir=other)
    for same in (named, by_export):
        assert torch.equal(same.confusion, result.confusion) and same.scored == result.scored
    code, lines, err = run_with_output(["eval", str(out / "best.pt"), "--data-dir", str(other)], capsys)
    assert code == 0 and lines[1] == f"scored: {result.scored}", err
    (other / "fox").rename(other / "emu")
    code, _, err = run_with_output(["eval", str(out / "best.pt"), "--data-dir", str(other)], capsys)
    assert_one_line(code, err, f"folder:{other.resolve()} has classes the model does not name ('emu'; the model's: "
                    "'cat', 'dog', 'fox'); expected a dataset of the model's classes", command="eval")


def test_eval_json_writes_a_class_name_that_is_not_utf8_as_text_any_reader_takes(tmp_path, cache, capsys):
    """eval --json wrote a folder's class name that is not UTF-8 (Linux allows any bytes) as "f\\udcf6x", a lone
    surrogate that strict JSON readers refuse: it is written with U+FFFD for the byte, as predict --json writes it."""
    folder = _folder(tmp_path / "pets", split=True, per_class=4)
    for part in ("train", "test"):
        os.rename(os.fsencode(folder / part / "fox"), os.fsencode(folder / part) + b"/f\xf6x")
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    code, lines, err = run_with_output(["eval", str(out / "best.pt"), "--json"], capsys)
    assert code == 0, err
    result = strict_json("\n".join(lines))
    assert result["classes"] == ["cat", "dog", "f\ufffdx"] and list(result["per_class"]) == result["classes"]


def _refusal(call) -> str:
    with pytest.raises(CnnlabError) as e:
        call()
    return str(e.value)


def test_eval_skips_unreadable_images_when_asked_and_says_so(tmp_path, cache, capsys):
    """The loader's refusal of an unreadable file says "pass --skip-bad-images", which eval did not take."""
    folder = _folder(tmp_path / "pets", split=True)
    (folder / "test" / "dog" / "broken.png").write_bytes(b"not a png")
    model = _onnx(Tiny(3), tmp_path / "tiny.onnx")
    code, _, err = run_with_output(["eval", str(model), "--data-dir", str(folder)], capsys)
    assert_one_line(code, err, "broken.png", "pass --skip-bad-images", command="eval")
    code, out, err = run_with_output(["eval", str(model), "--data-dir", str(folder), "--skip-bad-images"], capsys)
    assert code == 0, err
    assert out[1].startswith(f"scored: the 12 test images of folder:{folder.resolve()}; the model names no classes "
                             "(3 outputs): they are read in the dataset's class order (pass --classes to match them "
                             "by name); skipped 1 unreadable image(s) of 25 (first: ") and "broken.png" in out[1]


def test_a_checkpoint_skips_unreadable_images_when_asked(tmp_path, cache):
    folder = _folder(tmp_path / "pets", split=True)
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{folder}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False)
    (folder / "test" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CnnlabError, match="pass --skip-bad-images"):
        evaluate_any(out / "best.pt")
    result = evaluate_any(out / "best.pt", skip_bad=True)
    assert result.n == 12 and "skipped 1 unreadable image(s) of 25" in result.scored


PICKY = '''
from test_evaluate_any import Tiny


class Picky(Tiny):
    def forward(self, x):
        if x.shape[0] > 2:
            raise ValueError("this network takes at most 2 images at once")
        return super().forward(x)


def build():
    return Picky(3).eval()
'''


def test_a_models_own_failure_on_the_images_is_one_line(tmp_path, cache, monkeypatch, capsys):
    """A module:function network that fails on a batch of the images (its own code's error, after it answered the
    one and two images it is opened with) ended eval and predict as cnnlab's "internal error", exit 1."""
    folder = _folder(tmp_path / "pets")
    (tmp_path / "picky_models.py").write_text(PICKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_with_output(["eval", "picky_models:build", "--input-size", "16", "--data-dir", str(folder)],
                                   capsys)
    assert_one_line(code, err, "picky_models:build failed on the 12 images of folder:", "(ValueError: this network "
                    "takes at most 2 images at once); expected a classifier that answers any batch of up to 64 of "
                    "them", command="eval")
    code, _, err = run_with_output(["predict", "picky_models:build", "--input-size", "16", str(folder / "cat")],
                                   capsys)
    assert_one_line(code, err, "picky_models:build failed on 4 picture(s) (ValueError: ", command="predict")


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


class Flanks(nn.Module):
    """Two classes of a 32 x 48 input: "flanks" where its 8 columns at each side are red, "plain" where green."""

    def forward(self, x):
        sides = torch.cat([x[:, :, :, :8], x[:, :, :, -8:]], 3).mean((2, 3))
        score = sides[:, 0] - sides[:, 1]
        return torch.stack([score, -score], 1)


def test_a_model_of_non_square_input_is_scored_on_pictures_cropped_to_its_shape(tmp_path, cache):
    """An ONNX file of fixed input 1 x 3 x 32 x 48: eval decoded each picture square (its centre, 48 x 48) and the
    model's input resize squashed that to 32 x 48, so a wide picture's sides, which the model's own crop of it
    holds, were never seen. Each picture is now decoded to 32 x 48 as Pillow's ImageOps.fit makes it (resized to
    cover that shape, the centre cropped), as eval decodes to a square model's input."""
    from PIL import ImageOps

    ort = pytest.importorskip("onnxruntime")
    folder = tmp_path / "wide"
    green, red = np.array([40, 200, 40], np.uint8), np.array([200, 40, 40], np.uint8)
    for name, k in (("flanks", 3), ("plain", 3)):
        (folder / name).mkdir(parents=True)
        for i in range(k):
            picture = np.broadcast_to(green, (32, 96 + 16 * i, 3)).copy()  # wider than 3:2
            if name == "flanks":  # red just inside the 3:2 centre, outside the square centre
                middle = picture.shape[1] // 2
                picture[:, middle - 24:middle - 16] = picture[:, middle + 16:middle + 24] = red
            (folder / name / f"{i}.png").write_bytes(_png(picture))
        tall = np.broadcast_to(green, (90, 40, 3)).copy()  # taller than 3:2: its whole width either way
        if name == "flanks":
            tall[:, :7] = tall[:, -7:] = red
        (folder / name / "tall.png").write_bytes(_png(tall))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flanks().eval(), (torch.zeros(1, 3, 32, 48),), str(tmp_path / "wide.onnx"), dynamo=False,
                          input_names=["x"])
    (tmp_path / "classes.txt").write_text("flanks\nplain\n")
    result = evaluate_any(tmp_path / "wide.onnx", data_dir=folder,
                          options=Options.from_flags(classes=tmp_path / "classes.txt"))
    session = ort.InferenceSession(str(tmp_path / "wide.onnx"), providers=["CPUExecutionProvider"])
    labels, predicted, squashed = [], [], []
    for label, name in enumerate(("flanks", "plain")):
        for path in sorted((folder / name).iterdir()):
            with Image.open(path) as im:
                picture = im.convert("RGB")
                fitted = np.asarray(ImageOps.fit(picture, (48, 32), method=Image.Resampling.BILINEAR))
                square = np.asarray(ImageOps.fit(picture, (48, 48), method=Image.Resampling.BILINEAR))
            x = fitted.transpose(2, 0, 1)[None].astype(np.float32) / 255
            predicted.append(int(session.run(None, {"x": x})[0].argmax()))
            wide = torch.nn.functional.interpolate(torch.tensor(square.transpose(2, 0, 1)[None]).float() / 255,
                                                   size=(32, 48), mode="bilinear", align_corners=False)
            squashed.append(int(session.run(None, {"x": wide.numpy()})[0].argmax()))
            labels.append(label)
    assert result.n == 8
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted)) == 1.0
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, predicted, labels=[0, 1]))
    assert accuracy_score(labels, squashed) == pytest.approx(5 / 8)  # the decoding before: the figure told apart


def test_an_ultralytics_classifier_is_scored_on_a_folder_framed_as_its_classify_predict_frames_each_picture(
        tmp_path, cache):
    """Ultralytics' classify predict (8.4.190, models/yolo/classify/predict.py: classify_transforms) turns each picture
    upright by its EXIF orientation (cv2.imread), resizes its shorter side to the input's (torchvision's Resize,
    Pillow's bilinear) and crops the centre (CenterCrop). eval of its ONNX export (metadata author Ultralytics, task
    classify) decoded a folder as cnnlab's own folders are (sideways, cropped before resizing), so its answers for a
    picture were not its users'; torchvision's transforms, as Ultralytics calls them, are the oracle. The same network
    without that metadata is scored on the folder's centre crops as before."""
    import onnx
    import torchvision.transforms as T

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)).eval()  # of every pixel where it is: turns count
    with torch.no_grad():
        net[1].bias.copy_(-0.5 * net[1].weight.sum(1))  # of the pixels' departures from grey: answers that vary
    plain = _onnx(net, tmp_path / "plain.onnx")
    model = onnx.load(str(plain))
    for key, value in (("author", "Ultralytics"), ("task", "classify"), ("imgsz", "[16, 16]"),
                       ("names", "{0: 'cat', 1: 'dog', 2: 'fox'}")):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp_path / "yolo-cls.onnx"))
    folder, rng = tmp_path / "pets", np.random.default_rng(5)
    framed, cropped, labels = [], [], []
    for label, name in enumerate(FOLDER_CLASSES):
        (folder / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(37, 20), (20, 45), (30, 23), (17, 29)]):
            picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            exif = Image.Exif()
            exif[0x0112] = (6, 8, 3, 1)[i]  # a phone's photo, stored turned
            picture.save(folder / name / f"{i}.png", exif=exif)
            upright = ImageOps.exif_transpose(Image.open(folder / name / f"{i}.png")).convert("RGB")
            framed.append(np.asarray(T.Compose([T.Resize(16), T.CenterCrop(16)])(upright)))
            cropped.append(np.asarray(ImageOps.fit(picture, (16, 16), method=Image.Resampling.BILINEAR)))
            labels.append(label)

    def answers(pictures):
        with torch.no_grad():
            return net(torch.tensor(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()

    result = evaluate_any(tmp_path / "yolo-cls.onnx", data_dir=folder)
    np.testing.assert_array_equal(result.confusion.numpy(), confusion_matrix(labels, answers(framed), labels=[0, 1, 2]))
    assert "resized by the shorter side and centre-cropped as Ultralytics' classify predict does" in result.scored
    assert (answers(framed) != answers(cropped)).sum() >= 3  # the decoding before: the answers told apart
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    before = evaluate_any(plain, data_dir=folder, options=Options.from_flags(classes=tmp_path / "classes.txt"))
    np.testing.assert_array_equal(before.confusion.numpy(),
                                  confusion_matrix(labels, answers(cropped), labels=[0, 1, 2]))
    assert "Ultralytics" not in before.scored
