"""Bad inputs around the user's own image folders (`--dataset folder:PATH`) that once gave silent wrong results.

Each case goes through the real command where a user meets it (exit code 2 and one `cnnlab CMD: error: ...` line,
or the note a training run prints), on small folders of PNGs written here. Each test failed on the code before its
fix (docs/reliability.md, "Image folders").
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab.train
import data_support
from cli_support import assert_one_line, run_with_output
from cnnlab.data import duplicates, folder, load_dataset, store
from cnnlab.data.duplicates import image_digest, images_seen_in_training
from cnnlab.errors import CnnlabError
from cnnlab.explore.session import Session
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train import build_run, make_config
from cnnlab.train.config import TrainConfig
from data_support import rng_image, write_classes

home = data_support.home  # a fixture: every cache under tmp_path
TINY = ["--epochs", "1", "--batch-size", "8", "--limit-train-batches", "2", "--no-report"]


def one_error(argv: list[str], capsys, *needles: str, command: str = "train") -> str:
    """Run ``argv``, expect exit 2 and exactly one error line holding every needle; returns the line."""
    code, _, err = run_with_output(argv, capsys)
    assert_one_line(code, err, *needles, command=command)
    return err[0]


# -- the held-out split a run used is fixed by the run --------------------------------------------------------
def test_a_changed_held_out_split_is_refused_by_eval_report_resume_and_explore(tmp_path, home, capsys):
    data = tmp_path / "digits"
    write_classes(data, {"a": 14, "b": 14})  # no test/: the loader holds out 5 of the 28 images
    out = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
               capsys)[0] == 0
    assert run_with_output(["eval", str(out / "last.pt")], capsys)[0] == 0  # the folder as it was: evaluated as before
    assert sum(len(c["images"]) for c in Session(tmp_path).gallery("run")["by_class"]) == 5

    (data / "a" / "000.png").unlink()  # one image deleted after training: 27 images, 4 held out now
    change = f"the held-out test split of folder:{data} changed since the run trained (5 files then, 4 now)"
    one_error(["eval", str(out / "last.pt")], capsys, change, "put the folder back", command="eval")
    one_error(["report", str(out)], capsys, change, command="report")
    one_error(["train", "--resume", str(out), "--epochs", "2"], capsys, change)
    with pytest.raises(CnnlabError, match=re.escape(change)):  # the gallery's test images and its accuracy
        Session(tmp_path).gallery("run")
    recorded = load_checkpoint(out / "last.pt")["dataset"]["held_out"]  # count and hash, in both records
    assert recorded[0] == 5 and json.loads((out / "config.json").read_text())["dataset"]["held_out"] == recorded

    # A checkpoint from before the record (none of them drew a held-out split knowingly) is evaluated as before. It
    # records no training files either (recorded since later): with them and no drawn split, the run had a test/.
    state = load_checkpoint(out / "last.pt")
    del state["dataset"]["held_out"], state["dataset"]["training_files"]
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, out / "old.pt")
    assert run_with_output(["eval", str(out / "old.pt")], capsys)[0] == 0


def test_a_moved_folder_is_held_to_the_split_the_run_drew(tmp_path, home, capsys):
    data, out = tmp_path / "digits", tmp_path / "run"
    write_classes(data, {"a": 14, "b": 14})
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
                           capsys)[0] == 0
    moved = data.rename(tmp_path / "moved")
    code, lines, _ = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(moved)], capsys)  # moved as is
    assert code == 0
    assert lines[1] == f"scored: the 5 test images drawn from folder:{moved} (no test/ folder): those the run " \
        "held out"
    (moved / "a" / "000.png").unlink()  # the moved folder lost an image: its drawn test split holds trained-on images
    one_error(["eval", str(out / "last.pt"), "--data-dir", str(moved)], capsys,
              f"the test split drawn from folder:{moved} is not the one the run drew from folder:{data} (5 files then, "
              "4 now)", "put it back as it was", "give it a PATH/test/<class>/ folder", command="eval")
    write_classes(tmp_path / "other" / "train", {"a": 3, "b": 3})  # another folder with a test set of its own
    write_classes(tmp_path / "other" / "test", {"a": 2, "b": 2}, seed=50)
    assert run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(tmp_path / "other")], capsys)[0] == 0


def split_folder_run(tmp_path: Path, capsys) -> tuple[Path, Path]:
    """A folder with its own train/ and test/ (4 test images), and a run trained on it: (the folder, the run)."""
    data, out = tmp_path / "split", tmp_path / "run"
    write_classes(data / "train", {"a": 6, "b": 6})
    write_classes(data / "test", {"a": 2, "b": 2}, seed=50)
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
                           capsys)[0] == 0
    return data, out


def test_eval_and_report_score_another_folder_without_test_whole_and_eval_says_which_images(tmp_path, home, capsys):
    # Another folder without test/ was scored on a seeded sixth of it, drawn as if the model had trained on the rest,
    # and nothing said which images were scored
    data, out = split_folder_run(tmp_path, capsys)
    other = tmp_path / "new"
    write_classes(other, {"a": 9, "b": 9}, seed=70)  # images the run never saw, in no test/ folder
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(other), "--json"], capsys)
    assert code == 0, err
    result = json.loads("\n".join(lines))
    assert result["n"] == 18 and sum(map(sum, result["confusion"])) == 18
    assert result["scored"] == f"all 18 images of folder:{other}: it has no test/ folder and is not the folder the " \
        "run trained on"  # none of them a training image: nothing more is said
    code, lines, err = run_with_output(["eval", str(out / "last.pt")], capsys)
    assert code == 0, err
    assert lines[1] == f"scored: the 4 test images of folder:{data}"
    assert run_with_output(["report", str(out), "--data-dir", str(other)], capsys)[0] == 0  # the report agrees
    assert "18 test images, last.pt" in (out / "report.html").read_text()


def test_eval_and_report_map_a_folder_runs_images_rather_than_load_them_whole(tmp_path, home, capsys, monkeypatch):
    # eval read all of a run's decoded folder into memory to score its test split (600 MB read for 100 MB scored),
    # and the report at a run's end loaded a second copy beside the one it trained on
    data, out = split_folder_run(tmp_path, capsys)
    opened, open_raw = [], folder.open_raw
    monkeypatch.setattr(folder, "open_raw", lambda *a, **k: opened.append(images := open_raw(*a, **k)) or images)
    code, lines, err = run_with_output(["eval", str(out / "last.pt")], capsys)
    assert code == 0 and lines[1] == f"scored: the 4 test images of folder:{data}", err
    assert opened and all(store.is_memory_mapped(images) for images in opened)
    opened.clear()
    assert run_with_output(["report", str(out)], capsys)[0] == 0
    assert opened and all(store.is_memory_mapped(images) for images in opened)
    trained_on = load_dataset(f"folder:{data}")  # a run's own load (under the limit): in memory, as before
    assert not trained_on.memory_mapped and "memory-mapped" not in trained_on.description


def test_eval_of_the_runs_own_training_images_elsewhere_says_they_are_training_images(tmp_path, home, capsys):
    """eval --data-dir pointed at the run's training images (its folder's train/, or a copy of some of them beside
    new ones) scored them whole as if unseen, and said the run did not train on them."""
    data, out = split_folder_run(tmp_path, capsys)
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(data / "train")], capsys)
    assert code == 0, err
    assert re.fullmatch(rf"scored: all 12 images of folder:{re.escape(str(data / 'train'))}: it has no test/ folder "
                        r"and is not the folder the run trained on; 12 of 12 evaluation images are pixel for pixel a "
                        r"training image as decoded \(first: train/(a|b)/(\d+)\.png = split/train/\1/\2\.png\); the "
                        r"evaluation accuracy scores them as unseen, though the model trains on them", lines[1])
    assert run_with_output(["report", str(out), "--data-dir", str(data / "train")], capsys)[0] == 0  # so does report
    page = html.unescape((out / "report.html").read_text())
    assert re.search(r"Note on the data: the figures below score all 12 images of folder:[^<]*; 12 of 12 evaluation "
                     r"images are pixel for pixel a training image", page)
    mixed = tmp_path / "mixed"
    write_classes(mixed, {"a": 9, "b": 9}, seed=70)
    shutil.copy(data / "train" / "a" / sorted(os.listdir(data / "train" / "a"))[0], mixed / "a" / "copied.png")
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(mixed), "--json"], capsys)
    assert code == 0, err
    assert "; 1 of 19 evaluation images are pixel for pixel a training image" in json.loads("\n".join(lines))["scored"]


def test_eval_elsewhere_counts_as_training_images_only_those_a_val_split_run_trained_on(tmp_path, home, capsys):
    """A --val-split run trains on its training part alone: eval of a copy of its folder said every image of the
    training split was one "the model trains on" (77 of 93 for a photo run that had trained on 62), the validation
    part's 15 among them."""
    data = tmp_path / "photos"
    write_classes(data / "train", {"a": 6, "b": 6})
    write_classes(data / "test", {"a": 2, "b": 2}, seed=50)
    out = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", "--val-split", "4", *TINY,
                            "--out", str(out), "--quiet"], capsys)[0] == 0
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(data / "train")], capsys)
    assert code == 0, err
    assert "; 8 of 12 evaluation images are pixel for pixel a training image as decoded (first: train/a/000.png = " \
        "photos/train/a/000.png)" in lines[1], lines[1]  # the first image scored, which trained the model
    assert run_with_output(["report", str(out), "--data-dir", str(data / "train")], capsys)[0] == 0  # so does report
    assert "8 of 12 evaluation images are pixel for pixel a training image" in \
        html.unescape((out / "report.html").read_text())


def test_eval_and_report_of_another_folder_read_the_digests_the_cache_keeps(tmp_path, home, capsys, monkeypatch):
    """Holding another folder against the run's training images hashed every training image again on each eval and
    report (about 20 s for 100,000 images at 224 px), though the folder's cache had hashed them while decoding."""
    data, out = split_folder_run(tmp_path, capsys)
    mixed = tmp_path / "mixed"  # new images, a copy of a training image among them, and no test/: scored whole
    write_classes(mixed, {"a": 9, "b": 9}, seed=70)
    shutil.copy(data / "train" / "b" / "003.png", mixed / "a" / "copied.png")
    own, other = load_dataset(f"folder:{data}"), load_dataset(f"folder:{mixed}")  # both decoded into the cache now
    said = images_seen_in_training(own.train_images, torch.cat([other.train_images, other.test_images]),
                                   "evaluation", training_files=lambda: own.file_names("train"),
                                   held_files=lambda: other.file_names("train") + other.file_names("test"))
    assert said.startswith("1 of 19 evaluation images are pixel for pixel a training image as decoded (first: "
                           "mixed/a/copied.png = split/train/b/003.png)")  # from the pixels, every image hashed
    hashed = []
    monkeypatch.setattr(duplicates, "image_digest", lambda pixels: hashed.append(1) or image_digest(pixels))
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(mixed), "--json"], capsys)
    assert code == 0, err
    assert json.loads("\n".join(lines))["scored"] == f"all 19 images of folder:{mixed}: it has no test/ folder and " \
        f"is not the folder the run trained on; {said}"
    assert run_with_output(["report", str(out), "--data-dir", str(mixed)], capsys)[0] == 0
    assert f"; {said}" in html.unescape((out / "report.html").read_text())
    assert hashed == []  # neither the run's 12 training images nor the 19 scored ones hashed again


def test_eval_of_another_folder_names_the_files_that_are_training_images(tmp_path, home, capsys, monkeypatch):
    """The notice named the pair by index (evaluation image 0 = training image 0), which a user cannot find, though
    both folders' files were known as they were decoded."""
    data, out = split_folder_run(tmp_path, capsys)
    mixed = tmp_path / "mixed"
    write_classes(mixed, {"a": 9, "b": 9}, seed=70)
    shutil.copy(data / "train" / "b" / "003.png", mixed / "b" / "copied.png")
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(mixed)], capsys)
    assert code == 0, err
    assert "; 1 of 19 evaluation images are pixel for pixel a training image as decoded (first: mixed/b/copied.png = " \
        "split/train/b/003.png); the evaluation accuracy" in lines[1], lines[1]
    read = []  # the names are read for a notice alone
    monkeypatch.setattr(folder, "_file_names", lambda *args, real=folder._file_names: read.append(1) or real(*args))
    other = tmp_path / "new"
    write_classes(other, {"a": 9, "b": 9}, seed=70)
    assert run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(other)], capsys)[0] == 0
    assert read == []
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)  # a side without files: named by index
    said = images_seen_in_training(images, images[1:2], "evaluation",
                                   training_files=lambda: ["x/0.png", "x/1.png", "x/2.png"])
    assert "(first: evaluation image 0 = x/1.png)" in said
    assert "(first: evaluation image 0 = training image 1)" in images_seen_in_training(
        images, images[1:2], "evaluation", training_files=lambda: ["x/0.png"])  # not one name an image: by index


def test_a_later_report_of_a_val_split_run_keeps_its_duplicate_validation_notice(tmp_path, home, capsys):
    """The notice of validation images that are training images was printed by the run and shown by the report it
    wrote at its end, and left out of a later `cnnlab report RUN`, which read the data afresh."""
    data, out = tmp_path / "twins", tmp_path / "run"
    write_classes(data / "train", {"a": 6, "b": 6})
    for image in sorted((data / "train").rglob("*.png")):  # every image twice: the split parts them
        shutil.copy(image, image.with_name(f"twin-{image.name}"))
    write_classes(data / "test", {"a": 2, "b": 2}, seed=50)
    code, lines, err = run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", "--epochs", "1",
                                        "--batch-size", "8", "--val-split", "8", "--out", str(out)], capsys)
    assert code == 0, err
    said = next(line for line in lines if "validation images are pixel for pixel" in line).removeprefix("note: ")
    first = html.unescape((out / "report.html").read_text())
    assert f"Note on the data: {said}" in first
    (out / "report.html").unlink()
    assert run_with_output(["report", str(out)], capsys)[0] == 0
    assert f"Note on the data: {said}" in html.unescape((out / "report.html").read_text())


def test_a_val_split_runs_notice_names_the_files_of_a_folder(tmp_path, home, capsys):
    """The notice of validation images that are training images named them by index among the training images
    (training image 7 = training image 2), though the folder's files were known."""
    data, out = tmp_path / "twins", tmp_path / "run"
    write_classes(data / "train", {"a": 6, "b": 6})
    for image in sorted((data / "train").rglob("*.png")):  # every image twice: the split parts some of them
        shutil.copy(image, image.with_name(f"twin-{image.name}"))
    write_classes(data / "test", {"a": 2, "b": 2}, seed=50)
    code, lines, err = run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", "--val-split", "4",
                                        *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    said = next(line for line in lines if "validation images are pixel for pixel" in line)
    assert re.search(r"\d+ of 4 validation images are pixel for pixel a training image as decoded \(first: "
                     r"twins/train/(a|b)/(twin-)?(\d+)\.png = twins/train/\1/(twin-)?\3\.png\)", said), said


def test_eval_refuses_the_runs_folder_that_lost_its_test_folder(tmp_path, home, capsys):
    # Its drawn sixth is images the model trained on: it was scored quietly
    data, out = split_folder_run(tmp_path, capsys)
    shutil.rmtree(data / "test")
    one_error(["eval", str(out / "last.pt")], capsys, f"folder:{data} had its own test split (a test/ folder) when the "
              f"run trained and has none now", f"expected {data}/test/<class>/<image> back", command="eval")


def test_a_run_started_on_a_folder_cached_before_its_bytes_were_hashed_refuses_other_pictures(tmp_path, home,
                                                                                                capsys):
    # Every folder decoded before the training files' bytes were hashed has a cache entry without their hash, reused
    # as it was: a run started on it recorded none, and its resume went on over a picture replaced under its name
    data, out = tmp_path / "split", tmp_path / "run"
    write_classes(data / "train", {"a": 6, "b": 6})
    write_classes(data / "test", {"a": 2, "b": 2}, seed=50)
    fresh = load_dataset(f"folder:{data}")
    [entry] = (store.cache_root() / "folders").glob("*.json")
    meta = json.loads(entry.read_text())
    del meta["training_bytes"]  # as cnnlab wrote it before
    entry.write_text(json.dumps(meta))
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
                           capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["dataset"]["training_bytes"] == fresh.training_bytes
    assert json.loads(entry.read_text())["training_bytes"] == fresh.training_bytes  # hashed once, kept
    rng_image(7, (12, 12), "L").save(data / "train" / "a" / "000.png")
    one_error(["train", "--resume", str(out), "--epochs", "2"], capsys, "the same 12 files, but the contents of some "
              "are not what they were")


def test_a_csv_named_that_is_not_there_is_refused_as_the_csv_expected(tmp_path, home, capsys):
    # folder:PATH/train.csv misspelt was told a folder of class subfolders was expected
    for named, expected in (("train.csv", "expected a CSV file of image names and labels"),
                            ("pets", "expected a folder of class subfolders")):
        one_error(["train", "lenet-relu", "--dataset", f"folder:{tmp_path / named}", *TINY], capsys,
                  f"{tmp_path / named} does not exist; {expected}")


def test_a_file_name_that_is_not_utf8_trains_and_evaluates(tmp_path, home, capsys):
    # Latin-1 names from an old archive: Python holds them as lone surrogates, and hashing the split's paths for its
    # record ended train, eval and report in an internal error
    data, out = tmp_path / "latin1", tmp_path / "run"
    write_classes(data, {"a": 8, "b": 8})
    os.rename(data / "a" / "000.png", os.path.join(os.fsencode(data / "a"), b"caf\xe9.png"))
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
                           capsys)[0] == 0
    assert run_with_output(["eval", str(out / "last.pt")], capsys)[0] == 0


def test_a_stray_file_named_in_another_encoding_is_named_in_the_report(tmp_path, home, capsys):
    # The notice of the files a folder leaves out names the first; report.html, written as strict UTF-8, failed
    # ("report.html not written") and `cnnlab report` was an internal error
    data, out = tmp_path / "latin1", tmp_path / "run"
    write_classes(data, {"a": 8, "b": 8})
    Path(os.fsdecode(os.path.join(os.fsencode(data / "a"), b"caf\xe9.txt"))).write_text("notes")
    reported = [a for a in TINY if a != "--no-report"]
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *reported, "--out", str(out),
                            "--quiet"], capsys)[0] == 0
    assert "caf\ufffd.txt" in (out / "report.html").read_text(encoding="utf-8")
    assert run_with_output(["report", str(out)], capsys)[0] == 0


def test_eval_decodes_a_grown_folder_as_the_model_was_trained(tmp_path, home, capsys):
    # The folder chose the run's image size and channels (median size, colour majority). Training images added since
    # made it choose others: eval decoded the unchanged test/ at another size, or refused it as 3-channel.
    data, out = tmp_path / "split", tmp_path / "run"
    write_classes(data / "train", {"a": 6, "b": 6}, size=(20, 20))
    write_classes(data / "test", {"a": 2, "b": 2}, size=(20, 20), seed=50)
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(out), "--quiet"],
                           capsys)[0] == 0
    before = run_with_output(["eval", str(out / "last.pt"), "--json"], capsys)[1]
    write_classes(data / "train" / "a" / "more", {"big": 20}, size=(64, 64), mode="RGB", seed=90)  # larger, colour
    code, after, err = run_with_output(["eval", str(out / "last.pt"), "--json"], capsys)
    assert code == 0, err
    assert json.loads("".join(after))["accuracy"] == json.loads("".join(before))["accuracy"]


def test_a_fixed_test_folder_records_no_drawn_split(tmp_path, home):
    write_classes(tmp_path / "split" / "train", {"a": 3, "b": 3})
    write_classes(tmp_path / "split" / "test", {"a": 1, "b": 1}, seed=50)
    assert load_dataset(f"folder:{tmp_path / 'split'}").held_out is None  # the user's own test/ is the split
    write_classes(tmp_path / "flat", {"a": 6, "b": 6})
    first = load_dataset(f"folder:{tmp_path / 'flat'}")
    assert first.held_out is not None and load_dataset(f"folder:{tmp_path / 'flat'}").held_out == first.held_out


# -- --val-split 1.0 ------------------------------------------------------------------------------------------
def captured_configs(monkeypatch) -> list[TrainConfig]:
    configs = []

    def fake_train(model, recipe="book", *, force=False, quiet=False, report=True, **overrides):
        configs.append(make_config(model, recipe, **overrides))
        return []  # an epoch history

    monkeypatch.setattr(cnnlab.train, "train", fake_train)
    return configs


def test_val_split_one_as_a_float_is_refused_and_one_as_an_integer_is_one_image(tmp_path, capsys, monkeypatch):
    configs = captured_configs(monkeypatch)
    message = one_error(["train", "lenet", "--val-split", "1.0"], capsys, "val-split must be a fraction in (0, 1)",
                        "got 1.0: a fraction must be below 1; for a number of images give an integer")
    assert configs == [] and "--val-split 1" in message
    with pytest.raises(CnnlabError, match="a fraction must be below 1"):
        make_config("lenet", val_split=1.0)
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"model": "lenet", "val_split": 1.0}))
    one_error(["train", "--config", str(config_file)], capsys, "a fraction must be below 1")
    for text, value in (("1", 1), ("5000", 5000), ("0.1", 0.1), ("2.0", 2.0)):  # as documented: < 1 a share
        assert run_with_output(["train", "lenet", "--val-split", text], capsys)[0] == 0
        assert configs[-1].val_split == value and type(configs[-1].val_split) is type(value)


def test_a_run_that_recorded_val_split_1_0_still_resumes(tmp_path, home, capsys):
    """The CLI once stored `--val-split 1` as 1.0: such a run resumes holding out its one image, as it trained."""
    data, out = tmp_path / "set", tmp_path / "run"
    write_classes(data, {"a": 6, "b": 6})
    argv = ["train", "lenet-relu", "--dataset", f"folder:{data}", "--val-split", "1", *TINY, "--out", str(out)]
    assert run_with_output([*argv, "--quiet"], capsys)[0] == 0
    state = load_checkpoint(out / "last.pt")
    state["config"]["val_split"] = 1.0
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, out / "last.pt")
    assert run_with_output(["train", "--resume", str(out), "--epochs", "2", "--quiet"], capsys)[0] == 0
    assert json.loads((out / "result.json").read_text())["val_split"] == 1


# -- --skip-bad-images says what it skipped -------------------------------------------------------------------
def test_skip_bad_images_prints_how_many_and_the_first(tmp_path, home, capsys):
    data = tmp_path / "set"
    write_classes(data, {"a": 6, "b": 6})
    (data / "a" / "broken.png").write_text("<html>404</html>")
    (data / "b" / "empty.png").write_bytes(b"")
    argv = ["train", "lenet-relu", "--dataset", f"folder:{data}", "--skip-bad-images", *TINY]
    code, out, _ = run_with_output([*argv, "--out", str(tmp_path / "run")], capsys)
    lines = [line for line in out if "skipped" in line]
    assert code == 0 and len(lines) == 1, out
    assert lines[0].startswith(f"note: skipped 2 unreadable image(s) of 14 (first: {data / 'a' / 'broken.png'}: ")
    # the decoded set is cached now
    code, out, _ = run_with_output([*argv, "--out", str(tmp_path / "quiet"), "--quiet"], capsys)
    assert code == 0 and not any("skipped" in line for line in out)


# -- the run's flip policy over the dataset's -----------------------------------------------------------------
def left_bright(root: Path) -> None:
    """Two classes of 12-px images bright in their three left columns: a mirror puts the light on the right."""
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.zeros((12, 12), np.uint8)
            pixels[:, :3] = 200 + 10 * c + i
            Image.fromarray(pixels, "L").save(root / name / f"{i}.png")


def mirrored(parts) -> int:
    """How many augmented training images of three epochs have more light on the right than on the left."""
    count = 0
    for epoch in range(3):
        parts.train_loader.set_epoch(epoch)
        for x, _ in parts.train_loader:
            count += int((x[..., 6:].sum((1, 2, 3)) > x[..., :6].sum((1, 2, 3))).sum())
    return count


def test_no_flip_keeps_a_folder_run_from_mirroring_and_is_recorded(tmp_path, home, capsys):
    data = tmp_path / "marks"
    left_bright(data)
    settings = dict(dataset=f"folder:{data}", augment="crop-flip", batch_size=4, device="cpu")
    assert mirrored(build_run(make_config("lenet-relu", **settings), quiet=True)) > 0  # the folder's own: flips
    parts = build_run(make_config("lenet-relu", flip=False, **settings), quiet=True)
    assert parts.train_loader.flip is False and mirrored(parts) == 0
    out = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", "--augment", "crop-flip", "--no-flip",
                "--tta", *TINY, "--out", str(out), "--quiet"], capsys)[0] == 2  # flip-TTA would undo --no-flip
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", "--augment", "crop-flip", "--no-flip",
                *TINY, "--out", str(out), "--quiet"], capsys)[0] == 0
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["flip"] is False and state["dataset"]["flip"] is False  # eval: no flip-TTA either
    assert json.loads((out / "config.json").read_text())["dataset"]["flip"] is False
    assert run_with_output(["train", "--resume", str(out), "--epochs", "2", "--quiet"], capsys)[0] == 0
    assert load_checkpoint(out / "last.pt")["dataset"]["flip"] is False


# -- one colour file in a grey set ----------------------------------------------------------------------------
def test_a_grey_set_stays_grey_past_an_rgba_grey_file_and_a_colour_one(tmp_path, home, capsys):
    data = tmp_path / "grey"
    write_classes(data, {"a": 6, "b": 6})
    grey = rng_image(7, (12, 12), "L")
    Image.merge("RGBA", (grey, grey, grey, Image.new("L", (12, 12), 255))).save(data / "a" / "alpha.png")
    rng_image(8, (12, 12), "RGB").save(data / "b" / "colour.png")
    rng_image(9, (12, 12), "RGB").convert("CMYK").save(data / "b" / "print.jpg")
    loaded = load_dataset(f"folder:{data}")
    assert loaded.channels == 1
    (notice,) = loaded.notices
    assert notice.startswith("read as grey (1 channel): 2 of 15 images are in colour (e.g. ") and "colour.png" in notice
    everything = torch.cat([loaded.train_images, loaded.test_images])
    assert any(torch.equal(x[0], torch.from_numpy(np.asarray(grey).copy())) for x in everything)  # exactly its grey
    code, out, _ = run_with_output(["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out",
                                    str(tmp_path / "r")], capsys)
    assert code == 0 and f"note: {notice}" in out
    assert load_dataset(f"folder:{data}", channels=3).channels == 3  # --channels still decides
    rgba = tmp_path / "all-rgba"
    for name in ("a", "b"):  # every file grey with alpha: 1 channel, nothing converted, nothing to say
        (rgba / name).mkdir(parents=True)
        for i in range(6):
            grey = rng_image(10 * i + ord(name), (12, 12), "L")  # no picture in both classes
            Image.merge("RGBA", (grey, grey, grey, grey)).save(rgba / name / f"{i}.png")
    loaded = load_dataset(f"folder:{rgba}")
    assert loaded.channels == 1 and loaded.notices == ()


def test_a_colour_set_stays_colour(tmp_path, home):
    write_classes(tmp_path / "rgb", {"a": 6, "b": 6}, mode="RGB")
    rng_image(1, (12, 12), "L").save(tmp_path / "rgb" / "a" / "grey.png")
    loaded = load_dataset(f"folder:{tmp_path / 'rgb'}")
    assert loaded.channels == 3 and loaded.notices == ()


# -- the decoded cache's size is checked first ----------------------------------------------------------------
def test_an_image_size_enlarging_past_the_cap_is_refused_before_decoding(tmp_path, home, capsys, monkeypatch):
    data = tmp_path / "tiny"
    write_classes(data, {"a": 6, "b": 6}, size=(8, 8))
    monkeypatch.setattr(folder, "MAX_ENLARGED_BYTES", 10**6)  # 12 x 1 x 400 x 400 = 1.9 MB is over it
    one_error(["train", "lenet-relu", "--dataset", f"folder:{data}", "--image-size", "400", *TINY, "--out",
               str(tmp_path / "run")], capsys,
              f"--image-size 400 enlarges the 12 images of {data} (median shorter side 8 px) to a decoded cache of "
              "1.9 MB (12 x 1 x 400 x 400 bytes), over the limit of 1.0 MB for enlarged images; pass a smaller "
              "--image-size (at most 288), or --resize 400")
    cache = home / ".cache" / "cnnlab" / "folders"
    assert not cache.exists() or not any(cache.glob("*.u8"))
    assert not (tmp_path / "run").exists()
    assert load_dataset(f"folder:{data}", image_size=288).image_size == 288  # under the cap
    monkeypatch.setattr(folder, "MAX_ENLARGED_BYTES", 10)  # the images' own size is never capped (only the disk)
    assert load_dataset(f"folder:{data}", image_size=8).image_size == 8


# -- an input too small for the model names the flag ----------------------------------------------------------
def test_images_too_small_for_the_model_name_resize_and_image_size(tmp_path, home, capsys):
    data = tmp_path / "small"
    write_classes(data, {"a": 6, "b": 6}, size=(8, 8))
    one_error(["train", "lenet", "--dataset", f"folder:{data}", *TINY, "--out", str(tmp_path / "run")], capsys,
              "input size 8 is too small for lenet: expected at least 12",
              f"(the images of folder:{data} are 8 px); pass --resize 28 to enlarge them on the device, or "
              "--image-size 28 to decode the folder at that size")
    assert not (tmp_path / "run").exists()
    assert run_with_output(["train", "lenet", "--dataset", f"folder:{data}", "--resize", "28", *TINY, "--out",
                str(tmp_path / "run"), "--quiet"], capsys)[0] == 0  # the flag named works
