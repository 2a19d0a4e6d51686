"""A practitioner's own images end to end: train on a folder of RGB PNGs with its own class names, then eval,
predict, export (onnxruntime parity) and the report from the checkpoint alone; old checkpoints still load."""

import json
import os
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate_checkpoint
from cnnlab.inference import load_trained
from cnnlab.models.summary import model_macs
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train import build
from cnnlab.train.config import TrainConfig

CLASSES = ("apple", "grass", "sky")  # sorted, as folder class names are
COLOURS = {"apple": (200, 30, 30), "grass": (30, 180, 40), "sky": (40, 80, 220)}


def write_folder(root, per_class=(24, 8), side=20, seed=0, splits=("train", "test")):
    """root/train/<class>/*.png and root/test/<class>/*.png (each of ``splits``, ``per_class`` images of each class):
    noisy squares of each class's colour."""
    rng = np.random.default_rng(seed)
    for split, n in zip(splits, per_class, strict=True):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(COLOURS[name], 40, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("own-images")
    data = write_folder(base / "photos")
    run = base / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("CNNLAB_CACHE", str(base / "cache"))
    code = cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "3",
                     "--batch-size", "16", "--lr", "0.05", "--optimizer", "nesterov", "--momentum", "0.9",
                     "--normalize", "--out", str(run), "--quiet"])
    yield data, run
    mp.undo()
    assert code == 0


def test_training_on_a_folder_learns_its_classes(folder_run):
    data, run = folder_run
    result = json.loads((run / "result.json").read_text())
    assert result["dataset"] == f"folder:{data}" and result["status"] == "finished"
    assert result["test_acc"] > 0.9 and result["test_samples"] == 24
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["classes"] == list(CLASSES) and config["dataset"]["channels"] == 3
    assert config["dataset"]["image_size"] == 16 and len(config["dataset"]["mean"]) == 3
    assert not any(p.name.startswith(".cnnlab") for p in data.rglob("*"))  # nothing written into the data


def test_eval_uses_the_checkpoints_dataset_and_class_names(folder_run, capsys):
    data, run = folder_run
    assert cli.main(["eval", str(run / "last.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == list(CLASSES) and out["n"] == 24
    assert out["accuracy"] == pytest.approx(json.loads((run / "result.json").read_text())["test_acc"])


def test_predict_reads_an_rgb_file_at_the_checkpoints_size(folder_run, tmp_path, capsys):
    data, run = folder_run
    picture = tmp_path / "big-sky.jpg"  # another size and format than the training files
    Image.fromarray(np.full((50, 70, 3), COLOURS["sky"], np.uint8), "RGB").save(picture)
    assert cli.main(["predict", str(run / "last.pt"), str(picture), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert top["class"] == "sky"


def test_onnx_export_takes_the_checkpoints_input_shape_and_matches(folder_run, tmp_path):
    import onnxruntime as ort

    data, run = folder_run
    out = tmp_path / "own.onnx"
    assert cli.main(["export", str(run / "last.pt"), "--output", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 16, 16]
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    trained = load_trained(run / "last.pt")
    expected = trained.logits(x, tta=False).numpy()
    assert np.abs(session.run(None, {"images": x.numpy()})[0] - expected).max() < 1e-4
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert json.loads(meta["cnnlab.classes"]) == list(CLASSES)


def test_report_names_the_folders_classes(folder_run):
    data, run = folder_run
    page = (run / "report.html").read_text()
    assert all(name in page for name in CLASSES) and "t-shirt" not in page
    assert f"folder:{data}" in page
    # the MACs of the run's own 3-class head (the report counted a 10-class one, unlike compare)
    own, ten = model_macs("lenet-relu", 16, 3, num_classes=3), model_macs("lenet-relu", 16, 3)
    assert own != ten and f"{own:,}" in page and f"{ten:,}" not in page


def test_a_run_on_a_folder_with_test_copies_of_training_images_says_so_in_training_and_report(tmp_path, capsys,
                                                                                               monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(6, 2))
    shutil.copy(data / "train" / "sky" / "3.png", data / "test" / "sky" / "copy.png")
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--epochs", "1", "--batch-size", "6",
                     "--out", str(run)]) == 0
    line = "1 of 7 test images are pixel for pixel a training image as decoded (first: test/sky/copy.png = " \
           "train/sky/3.png)"
    assert f"note: {line}" in capsys.readouterr().out
    assert line in (run / "report.html").read_text()


def test_a_version_1_checkpoint_still_loads_as_fashion_mnist(tmp_path):
    """Checkpoints written before datasets were values carry no dataset entry: they are Fashion-MNIST's."""
    from cnnlab.data import CLASSES as FASHION
    from cnnlab.models import create_model

    state = {"format": "cnnlab-checkpoint", "version": 1, "model_name": "lenet", "num_classes": 10,
             "in_channels": 1, "input_size": 28, "normalize": [0.286, 0.353], "ops": "torch",
             "config": {"model": "lenet", "tta": False}, "model": create_model("lenet").state_dict()}
    torch.save(state, tmp_path / "old.pt")
    trained = load_trained(tmp_path / "old.pt")
    assert trained.meta.classes == FASHION and trained.meta.channels == 1 and trained.meta.image_size == 28
    assert trained.meta.mean == (0.286,) and trained.meta.std == (0.353,)
    assert trained.logits(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)
    assert load_checkpoint(tmp_path / "old.pt")["version"] == 2


def test_evaluating_on_a_dataset_with_other_classes_is_refused(folder_run, capsys):
    data, run = folder_run
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["dataset"]["classes"] = ["a", "b", "c"]
    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "version")}, run.parent / "renamed.pt")
    assert cli.main(["eval", str(run.parent / "renamed.pt")]) == 2
    err = capsys.readouterr().err
    assert "classes" in err and len(err.strip().splitlines()) == 1


def test_a_last_batch_of_one_image_is_left_out_so_batch_norm_can_train(tmp_path, monkeypatch):
    # 9 training images at batch 4: a last batch of 1, which every BatchNorm1d in training mode refuses (the variance
    # of one value). BN-LeNet's head has two; the epoch trains on 2 batches of 4 instead.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(3, 2))
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-bn", "--dataset", f"folder:{data}", "--batch-size", "4", "--epochs", "2",
                     "--out", str(run), "--quiet", "--no-report"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished" and result["steps"] == 4
    assert cli.main(["train", "lenet-bn", "--dataset", f"folder:{data}", "--batch-size", "3", "--epochs", "1",
                     "--out", str(tmp_path / "whole"), "--quiet", "--no-report"]) == 0  # no remainder: all 9 train
    assert json.loads((tmp_path / "whole" / "result.json").read_text())["steps"] == 3


def test_batches_of_one_image_are_refused_only_where_batch_norm_sees_one_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(2, 1))
    argv = ["--dataset", f"folder:{data}", "--batch-size", "1", "--epochs", "1", "--quiet", "--no-report"]
    assert cli.main(["train", "lenet-bn", *argv, "--out", str(tmp_path / "bn")]) == 2  # BatchNorm1d: one value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lenet-bn normalises over each training batch" in err
    assert "expected at least 2 images per batch, got --batch-size 1" in err
    # ResNet's BatchNorm2d sees a whole feature map per channel, and a model without batch norm sees none: both train
    for model in ("resnet18", "lenet-relu"):
        assert cli.main(["train", model, *argv, "--limit-train-batches", "2", "--out", str(tmp_path / model)]) == 0
        assert json.loads((tmp_path / model / "result.json").read_text())["status"] == "finished"
    # under torchrun, 3 images on 2 processes leave one per process: every batch is one image, whatever --batch-size
    one_each = SimpleNamespace(num_classes=2, channels=1)
    with pytest.raises(CnnlabError, match=r"got a training split of one image per process \(2 processes\)$"):
        build._check_batches_of_one(TrainConfig(model="lenet-bn"), one_each, 28, world_size=2)


def test_a_resume_refuses_a_folder_whose_training_images_changed_and_keeps_the_runs_normalisation(tmp_path,
                                                                                                   monkeypatch, capsys):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(6, 2))
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "1",
                     "--normalize", "--out", str(run), "--quiet", "--no-report"]) == 0
    normalize = load_checkpoint(run / "last.pt")["normalize"]
    added = data / "train" / "sky" / "new.png"
    Image.new("RGB", (20, 20), (255, 255, 255)).save(added)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training images" in err and "18 files then, 19 now" in err
    added.unlink()
    # The same names with other pictures: refused too (the run records a hash of its training files' bytes) ...
    sky = data / "train" / "sky" / "0.png"
    original = sky.read_bytes()
    Image.new("RGB", (20, 20), (255, 255, 255)).save(sky)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same 18 files, but the contents of some are not what they were" in err
    # ... and the same bytes put back under a new modification time (decoded again into a new cache entry) resume.
    sky.write_bytes(original)
    os.utime(sky, (1_000_000_000, 1_000_000_000))
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-report"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs_trained"] == 2
    # A run from before the contents were recorded is held to the names alone, and keeps the input it started with,
    # not the statistics of the images as they are now.
    Image.new("RGB", (20, 20), (255, 255, 255)).save(sky)
    state = load_checkpoint(run / "last.pt")
    del state["dataset"]["training_bytes"]
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, run / "last.pt")
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert load_checkpoint(run / "last.pt")["normalize"] == normalize
    assert json.loads((run / "result.json").read_text())["epochs_trained"] == 3


def test_a_run_folder_inside_the_image_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    # Its next load would have taken the run folder for a class of its own, the run's curves.png for its image.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(4, 2))
    before = sorted(data.rglob("*"))
    capsys.readouterr()
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--out", str(data / "train" / "run"),
                     "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lies inside the data folder" in err and "--out" in err
    # A class folder linked from elsewhere holds images too: a run written there became an image of that class
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    write_folder(linked, per_class=(3, 0))
    (data / "train" / "linked").symlink_to(linked / "train" / "sky")
    (data / "test" / "linked").symlink_to(linked / "train" / "sky")
    before = sorted(data.rglob("*"))
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--out",
                     str(linked / "train" / "sky" / "run"), "--epochs", "1"]) == 2
    assert "lies inside the data folder" in capsys.readouterr().err
    # lr-find's plot and a sweep's folder too (both wrote there; the sweep then failed every trial with exit 0)
    monkeypatch.chdir(data)
    assert cli.main(["train", "lenet-relu", "--dataset", "folder:.", "--epochs", "1"]) == 2
    assert "the default run folder" in capsys.readouterr().err
    assert cli.main(["lr-find", "lenet-relu", "--dataset", "folder:.", "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "the default plot (here)" in err and "lies inside the data folder" in err
    assert cli.main(["sweep", "lenet-relu", "--dataset", "folder:.", "--val-split", "2", "--param",
                     "lr=loguniform:1e-3:1", "--trials", "1", "--out", "sw"]) == 2
    err = capsys.readouterr().err
    assert f"--out {data / 'sw'} lies inside the data folder" in err
    assert sorted(data.rglob("*")) == before


def _run_then_move_its_folder(tmp_path, monkeypatch, per_class):
    """A one-epoch run on tmp_path/photos, the folder then renamed to tmp_path/moved; returns (photos, run)."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=per_class)
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "1",
                     "--out", str(run), "--quiet", "--no-report"]) == 0
    data.rename(tmp_path / "moved")
    return data, run


def test_a_moved_image_folder_is_evaluated_where_data_dir_says_it_is_now(tmp_path, monkeypatch, capsys):
    data, run = _run_then_move_its_folder(tmp_path, monkeypatch, (4, 3))
    capsys.readouterr()
    assert cli.main(["eval", str(run / "last.pt")]) == 2  # "... does not exist", as if the user had typed it
    assert capsys.readouterr().err.strip() == (f"cnnlab eval: error: the run's image folder {data} is not a folder "
                                               "here; expected --data-dir with the folder its files are in now")
    assert cli.main(["eval", str(run / "last.pt"), "--data-dir", str(tmp_path / "moved"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == json.loads((run / "result.json").read_text())["test_acc"]


def test_a_val_folder_beside_train_and_test_is_the_validation_split(tmp_path, monkeypatch, capsys):
    # The layout of Ultralytics' classification sets and many Kaggle ones: val/ validates (best.pt, early stopping,
    # a sweep's objective), test/ gives the final test accuracy; val/ was left out, with no word.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(6, 3, 2), splits=("train", "test", "val"))
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "2",
                     "--out", str(run), "--no-report"]) == 0
    assert "; best.pt: epoch " in (said := capsys.readouterr().out) and ", validation accuracy " in said
    result = json.loads((run / "result.json").read_text())
    assert result["test_samples"] == 9 and result["val_acc"] is not None
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    assert float(rows[-1][rows[0].index("val_acc")]) == pytest.approx(result["val_acc"], abs=1e-6)
    assert result["val_acc"] * 6 == pytest.approx(round(result["val_acc"] * 6))  # a share of the 6 val/ images
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--val-split", "0.2", "--epochs", "1",
                     "--out", str(tmp_path / "both")]) == 2
    assert "brings its own validation split" in capsys.readouterr().err


def test_the_end_of_training_line_says_how_many_held_out_images_a_limited_test_scored(tmp_path, monkeypatch, capsys):
    """Under --limit-val-batches the final test scores that many batches (result.json's test_samples): the line gave
    "test_acc 0.0938" of 256 of 10,000 test images as if of all, and eval of best.pt then gave another figure."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(8, 4))
    for limit, said in (("1", " on 6 of the 12 held-out images ("), (None, " (the last epoch's model")):
        run = tmp_path / f"run{limit}"
        assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "1",
                         "--batch-size", "6", "--out", str(run), "--no-report",
                         *(["--limit-val-batches", limit] if limit else [])]) == 0
        done = capsys.readouterr().out.strip().splitlines()[-1]
        result = json.loads((run / "result.json").read_text())
        assert f"test_acc {result['test_acc']:.4f}{said}" in done, done
        assert result["test_samples"] == (6 if limit else 12)


def test_the_end_of_training_line_says_which_model_each_figure_is_of(tmp_path, monkeypatch, capsys):
    """The line read "test_acc 0.9375 (best test accuracy 1.0000 at epoch 3)": the first figure is the last epoch's
    model's (result.json), the README's path evaluates and exports best.pt, which gave the other. Each is named now,
    and best.pt's test accuracy (known where the test set validates) is what eval of best.pt gives."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(8, 4))
    run = tmp_path / "run"
    assert cli.main(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "16", "--epochs", "3",
                     "--batch-size", "6", "--lr", "0.3", "--out", str(run), "--no-report"]) == 0
    done = capsys.readouterr().out.strip().splitlines()[-1]
    said = re.fullmatch(r"done: lenet-relu test_acc (\S+) \(the last epoch's model, epoch 3\); best\.pt: epoch (\d), "
                        r"test accuracy (\S+); in .* img/s -> .*run", done)
    assert said, done
    result = json.loads((run / "result.json").read_text())
    assert float(said[1]) == pytest.approx(result["test_acc"], abs=5e-5)
    assert float(said[1]) == pytest.approx(evaluate_checkpoint(run / "last.pt").accuracy, abs=5e-5)
    assert int(said[2]) == result["best_epoch"]
    assert float(said[3]) == pytest.approx(evaluate_checkpoint(run / "best.pt").accuracy, abs=5e-5)


def test_a_runs_config_with_a_relative_folder_trains_on_the_same_images_from_another_folder(tmp_path, monkeypatch):
    # config.json kept "folder:photos" as typed: `cnnlab train --config ../a/run/config.json` from another project
    # trained on that project's own photos/ (other classes, exit 0), or said photos does not exist.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_folder(tmp_path / "a" / "photos", per_class=(4, 3))
    (tmp_path / "b" / "photos" / "train" / "cat").mkdir(parents=True)  # another project's folder of that name
    monkeypatch.chdir(tmp_path / "a")
    assert cli.main(["train", "lenet-relu", "--dataset", "folder:photos", "--image-size", "16", "--epochs", "1",
                     "--out", "run", "--quiet", "--no-report"]) == 0
    config = json.loads((tmp_path / "a" / "run" / "config.json").read_text())["config"]
    assert config["dataset"] == f"folder:{tmp_path / 'a' / 'photos'}"
    monkeypatch.chdir(tmp_path / "b")
    assert cli.main(["train", "--config", "../a/run/config.json", "--out", "run", "--quiet", "--no-report"]) == 0
    again = json.loads((tmp_path / "b" / "run" / "result.json").read_text())
    assert again["dataset"] == f"folder:{tmp_path / 'a' / 'photos'}"
    assert load_trained(tmp_path / "b" / "run" / "last.pt").meta.classes == tuple(CLASSES)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert TrainConfig(dataset="folder:~/a/photos").dataset == f"folder:{tmp_path / 'a' / 'photos'}"


def test_a_run_whose_image_folder_moved_resumes_with_data_dir(tmp_path, monkeypatch, capsys):
    # `--resume` refused --data-dir, and the folder's absence read "... does not exist; expected a folder of class
    # subfolders", with nothing to do about it; eval, report and export took --data-dir already.
    data, run = _run_then_move_its_folder(tmp_path, monkeypatch, (6, 2))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert capsys.readouterr().err.strip() == (f"cnnlab train: error: the run's image folder {data} is not a folder "
                                               "here; expected --data-dir with the folder its files are in now")
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--data-dir", str(tmp_path / "moved"),
                     "--quiet", "--no-report"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs_trained"] == 2
    assert load_checkpoint(run / "last.pt")["dataset"]["name"] == f"folder:{tmp_path / 'moved'}"
    assert cli.main(["eval", str(run / "last.pt")]) == 0  # the run now knows where its images are
    write_folder(tmp_path / "other", per_class=(5, 2))  # other images are not the run's: refused as changed
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--data-dir", str(tmp_path / "other")]) == 2
    assert "training images" in capsys.readouterr().err
