"""``--test-split``: how much of a folder without a test split of its own is drawn as one, or none (a contest's
labelled images, whose test images are its own unlabelled ones), and what every command does with a run that held out
none: its figures are of its validation split, said so, and ``eval`` asks for images the model never saw."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
import torch

from cli_support import run_with_output
from cnnlab import cli
from cnnlab.data import load_dataset
from cnnlab.data.split import run_split, stratified_split
from cnnlab.errors import CnnlabError
from cnnlab.explore.runs import summarize_run
from cnnlab.explore.session import Session
from cnnlab.explore.trained import load_test_set
from cnnlab.export import verify_export
from cnnlab.inference import load_trained
from cnnlab.train.config import make_config
from data_support import write_classes

COUNTS = {"cat": 30, "dog": 24, "fox": 18}


@pytest.fixture
def pets(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_classes(tmp_path / "pets", COUNTS, size=(14, 14), mode="RGB")
    return tmp_path / "pets"


def test_a_share_or_a_number_of_the_images_is_drawn_as_the_test_split(pets):
    default = load_dataset(f"folder:{pets}")
    assert len(default.test_labels) == 12 and "1/6 of the images" in default.description  # 72 images
    tenth = load_dataset(f"folder:{pets}", test_split=0.25)
    # stratified as the seeded draw of the loader: 1/4 of each class (30, 24, 18 -> 7.5, 6, 4.5: 18 in all)
    assert len(tenth.test_labels) == 18 and "0.25 of the images" in tenth.description
    assert torch.bincount(tenth.test_labels).tolist() == [8, 6, 4]
    assert len(tenth.train_labels) == 54 and tenth.held_out[0] == 18
    five = load_dataset(f"folder:{pets}", test_split=5)
    assert len(five.test_labels) == 5 and "5 images held out" in five.description
    # the test images are the draw of their labels, not the default sixth cut shorter
    labels = torch.tensor([c for c, n in enumerate(COUNTS.values()) for _ in range(n)])
    _, expected = stratified_split(labels, 0.25, seed=0)
    assert torch.equal(tenth.test_labels, labels[expected])


def test_a_test_split_of_none_trains_on_every_image(pets):
    data = load_dataset(f"folder:{pets}", test_split=0)
    assert len(data.test_labels) == 0 and len(data.train_labels) == sum(COUNTS.values())
    assert data.held_out[0] == 0 and "no test split" in data.description
    # no "class has no test image" notice: there is no test split to lack one
    assert not any("no test image" in line for line in data.notices)
    assert tuple(data.test_images.shape[1:]) == tuple(data.train_images.shape[1:])


@pytest.mark.parametrize(("flags", "said"), [
    (["--test-split", "0", "--early-stop", "2"], "--test-split 0 without --val-split holds out no image"),
    (["--test-split", "-0.1"], "test-split must be a fraction in (0, 1) or a whole number of images >= 1, or 0"),
    (["--test-split", "1.0"], "a fraction must be below 1"),
    (["--test-split", "2.5"], "got 2.5"),
    (["--test-split", "nan"], "test-split must be"),
])
def test_a_bad_test_split_is_one_line(pets, flags, said, capsys, tmp_path):
    code, out, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1",
                                      "--out", str(tmp_path / "run"), *flags], capsys)
    assert code == 2 and len(err) == 1 and said in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_test_split_is_refused_for_data_that_brings_its_own(tmp_path, monkeypatch, data_dir, capsys):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    split = tmp_path / "split"
    write_classes(split / "train", {"a": 6, "b": 6})
    write_classes(split / "test", {"a": 2, "b": 2})
    for dataset in (f"folder:{split}", "fashion-mnist"):
        code, _, err = run_with_output(["train", "lenet", "--dataset", dataset, "--epochs", "1", "--test-split", "0.1",
                                        "--out", str(tmp_path / "run")], capsys)
        assert code == 2 and len(err) == 1 and "expected no --test-split, got 0.1" in err[0], err
        assert ("test/, or a CSV's test rows" in err[0]) == dataset.startswith("folder:")


def _train(pets, out, *flags):
    code = cli.main(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1", "--batch-size", "16",
                     "--out", str(out), *flags])
    assert code == 0
    return out


def test_a_run_and_its_export_score_the_share_it_drew(pets, tmp_path, capsys):
    run = _train(pets, tmp_path / "run", "--test-split", "0.25")
    capsys.readouterr()
    assert json.loads((run / "result.json").read_text())["test_samples"] == 18
    code, out, _ = run_with_output(["eval", str(run / "best.pt")], capsys)
    assert code == 0 and "/18)" in out[0], out
    assert "the 18 test images drawn from" in out[1]
    onnx = tmp_path / "run.onnx"
    assert cli.main(["export", str(run / "best.pt"), "--output", str(onnx)]) == 0
    capsys.readouterr()
    # the export keeps the run's --test-split, so eval of it draws the run's quarter, not the default sixth
    code, out, err = run_with_output(["eval", str(onnx)], capsys)
    assert code == 0 and "/18)" in out[0] and "the 18 test images drawn from" in out[1], (out, err)


def test_a_run_without_a_test_split_is_scored_on_its_validation_split_and_says_so(pets, tmp_path, capsys):
    run = _train(pets, tmp_path / "runs" / "run", "--test-split", "0", "--val-split", "0.2")
    done = capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert result["test_acc"] is None and result["test_samples"] is None and result["test_loss"] is None
    assert result["test_bal_acc"] is None and result["val_bal_acc"] is not None
    assert result["val_acc"] is not None and set(result["per_class"]) == set(COUNTS)
    trained = load_trained(run / "best.pt", "cpu")
    data = trained.dataset()
    _, val_idx = run_split(trained.config, data.train_labels)
    assert len(val_idx) == round(0.2 * sum(COUNTS.values()))
    # the per-class figures are the validation split's: their counts are its classes' counts
    supports = [result["per_class"][c]["support"] for c in COUNTS]
    assert supports == torch.bincount(data.train_labels[val_idx]).tolist()
    assert f"done: lenet no test split, validation accuracy {result['val_acc']:.4f}" in done
    page = (run / "report.html").read_text()
    assert "Validation set: confusion matrix" in page and "Test set" not in page
    assert f"the {len(val_idx)} validation images of folder:{pets}" in page and "final validation accuracy" in page
    # eval of the run's own folder: every image trained or validated it
    code, out, err = run_with_output(["eval", str(run / "best.pt")], capsys)
    assert code == 2 and len(err) == 1 and "held out no test split" in err[0] and "--dataset folder:OTHER" in err[0]
    # another folder is scored whole, as for any run
    other = tmp_path / "other"
    write_classes(other, {"cat": 3, "dog": 3, "fox": 3}, size=(14, 14), mode="RGB", seed=7)
    code, out, err = run_with_output(["eval", str(run / "best.pt"), "--dataset", f"folder:{other}"], capsys)
    assert code == 0 and "all 9 images of" in out[1], (out, err)
    # the explorer's gallery and the export check show the validation images, as such
    shown = load_test_set(trained)
    assert shown.split == "validation" and torch.equal(shown.labels, data.train_labels[val_idx])
    assert torch.equal(shown.images, data.train_images[val_idx])
    agreement = verify_export(run / "best.pt", _exported(run, tmp_path), images=5)
    assert "/5 validation images" in str(agreement) and "test" not in str(agreement)
    gallery = Session(tmp_path / "runs").gallery("run")
    assert gallery["split"] == "validation" and gallery["of"] == len(val_idx)
    # the run's page heads with its validation accuracy, said so, where other runs show their test accuracy
    row = summarize_run(tmp_path / "runs", "run")
    assert row["test_split"] == 0 and row["test_acc"] is None
    assert row["val_acc"] == pytest.approx(result["val_acc"], abs=1e-6)  # metrics.csv keeps 6 decimals


def _exported(run, tmp_path):
    onnx = tmp_path / "run.onnx"
    assert cli.main(["export", str(run / "best.pt"), "--output", str(onnx)]) == 0
    return onnx


def test_scoring_another_dataset_takes_its_own_draw_not_the_runs_test_split(pets, tmp_path, capsys):
    run = _train(pets, tmp_path / "run", "--test-split", "0", "--val-split", "0.2")
    trained = load_trained(run / "best.pt", "cpu")
    other = tmp_path / "other"
    write_classes(other, COUNTS, size=(14, 14), mode="RGB", seed=9)
    # the run's --test-split 0 was of its own folder: another one named is drawn as any folder is
    assert len(trained.dataset(other=f"folder:{other}").test_labels) == 12
    with pytest.raises(CnnlabError, match="held out no test split"):
        trained.scored_images(trained.dataset())
    assert make_config("lenet", test_split=0, val_split=0.1).test_split == 0


def test_a_run_without_a_test_split_refuses_a_folder_whose_files_changed(pets, tmp_path, capsys):
    run = _train(pets, tmp_path / "runs" / "run", "--test-split", "0", "--val-split", "0.2", "--no-report")
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.copytree(pets, moved)
    # moved as it was: the run's folder, whose validation split is drawn again as it was
    code, _, err = run_with_output(["report", str(run), "--data-dir", str(moved)], capsys)
    assert code == 0, err
    # a file fewer draws another validation split (a draw of no test images is the same of any folder): refused
    next((moved / "cat").iterdir()).unlink()
    code, _, err = run_with_output(["report", str(run), "--data-dir", str(moved)], capsys)
    assert code == 2 and len(err) == 1 and "72 files then, 71 now" in err[0] and "--test-split 0" in err[0], err
    code, _, err = run_with_output(["eval", str(run / "best.pt"), "--data-dir", str(moved)], capsys)
    assert code == 2 and len(err) == 1 and "72 files then, 71 now" in err[0], err
    next((pets / "dog").iterdir()).unlink()  # in place, as the explorer's gallery reads it
    with pytest.raises(CnnlabError, match="72 files then, 71 now"):
        Session(tmp_path / "runs").gallery("run")


def test_an_export_scored_on_its_own_folder_named_as_typed_draws_the_runs_share(pets, tmp_path, capsys, monkeypatch):
    run = _train(pets, tmp_path / "run", "--test-split", "0.25", "--no-report")
    onnx = tmp_path / "run.onnx"
    assert cli.main(["export", str(run / "best.pt"), "--output", str(onnx)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(pets.parent)  # the run's folder named relative to here, as a user types it
    for model in (str(run / "best.pt"), str(onnx)):
        code, out, err = run_with_output(["eval", model, "--dataset", f"folder:{pets.name}"], capsys)
        assert code == 0 and "/18)" in out[0] and "the 18 test images drawn from" in out[1], (model, out, err)


@pytest.mark.parametrize(("share", "said"), [
    ("100", "cannot hold out --test-split 100 (test-split=100 holds out 100 of 72 samples, but at most 69"),
    ("0.001", "cannot hold out --test-split 0.001 (test-split=0.001 of 72 samples holds out none"),
])
def test_a_test_split_the_folder_cannot_give_is_named_as_given(pets, share, said, capsys, tmp_path):
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1",
                                    "--test-split", share, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(err) == 1 and said in err[0] and "val=" not in err[0], err


def test_the_explorers_analysis_of_a_run_without_a_test_split_names_its_image_a_validation_image(pets, tmp_path,
                                                                                               capsys):
    from cnnlab.explore import BackgroundServer

    _train(pets, tmp_path / "runs" / "run", "--test-split", "0", "--val-split", "0.2", "--no-report")
    with BackgroundServer(tmp_path / "runs") as server:
        with urllib.request.urlopen(f"{server.url.rstrip('/')}/api/analyze?run=run&index=0", timeout=60) as answer:
            body = json.loads(answer.read())
    assert body["source"] == "validation image #0", body["source"]


def test_the_export_check_of_a_run_without_a_test_split_names_the_split_it_compared_on(pets, tmp_path):
    run = _train(pets, tmp_path / "run", "--test-split", "0", "--val-split", "0.2", "--no-report")
    onnx = _exported(run, tmp_path)
    # --data-dir naming a folder with a test/ of its own: its test images are compared, and named as such
    elsewhere = tmp_path / "elsewhere"
    write_classes(elsewhere / "train", COUNTS, size=(14, 14), mode="RGB", seed=3)
    write_classes(elsewhere / "test", {"cat": 2, "dog": 2, "fox": 2}, size=(14, 14), mode="RGB", seed=5)
    agreement = verify_export(run / "best.pt", onnx, images=5, data_dir=elsewhere)
    assert "/5 test images" in str(agreement) and "validation" not in str(agreement)
