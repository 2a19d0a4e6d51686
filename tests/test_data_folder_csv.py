"""folder:PATH labelled by a CSV file (labels.csv, metadata.csv, or a CSV named): the same dataset as class subfolders
of the same pictures, each layout and column variant, each refusal (one line, exit 2, through ``cnnlab train``), and a
run's train, eval, predict and resume.

The pictures are written here with Pillow; the subfolder layout of the same files is the oracle for pixels, labels,
classes and the held-out draw.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch

import data_support
from cli_support import assert_one_line, run_with_output
from cnnlab.data import load_dataset
from cnnlab.data.folder import has_validation_folder, refuse_writing_into
from cnnlab.errors import CnnlabError, DataError
from data_support import listing, rng_image, write_classes

home = data_support.home  # a fixture: every cache under tmp_path
TINY = ["--epochs", "1", "--batch-size", "8", "--limit-train-batches", "2", "--no-report", "--quiet"]
COUNTS = {"cat": 14, "dog": 10, "owl": 8}


def same_dataset(a, b) -> None:
    """Pixels, labels, classes and the held-out draw alike (the validation split too, where there is one)."""
    assert a.classes == b.classes
    for split in ("train_images", "train_labels", "test_images", "test_labels", "val_images", "val_labels"):
        x, y = getattr(a, split), getattr(b, split)
        assert (x is None and y is None) or torch.equal(x, y), split
    assert a.held_out == b.held_out or a.held_out[0] == b.held_out[0]  # the count; the hash is of the paths


def write_csv(path: Path, rows: list[tuple], header: tuple = ("file_name", "label")) -> Path:
    path.write_text("\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n", encoding="utf-8")
    return path


def class_rows(root: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(path relative to ``root``, class) of every picture under ``root/<class>/``, as ``write_classes`` made them."""
    return [(f"{prefix}{p.parent.name}/{p.name}", p.parent.name) for p in sorted(root.glob("*/*.png"))]


def flat_copy(classes_root: Path, target: Path) -> list[tuple[str, str]]:
    """The pictures of ``classes_root/<class>/NNN.png`` copied flat into ``target/images/<class>_NNN.png``; their
    rows."""
    (target / "images").mkdir(parents=True)
    rows = []
    for p in sorted(classes_root.glob("*/*.png")):
        name = f"images/{p.parent.name}_{p.name}"
        shutil.copy(p, target / name)
        rows.append((name, p.parent.name))
    return rows


def train_error(argv: list[str], capsys, *needles: str, command: str = "train") -> str:
    code, _, err = run_with_output(argv, capsys)
    assert_one_line(code, err, *needles, command=command)
    return err[0]


# -- the same dataset as class subfolders ----------------------------------------------------------------------
def test_a_csv_of_the_same_pictures_gives_the_dataset_of_class_subfolders(tmp_path, home):
    subfolders = tmp_path / "pets"
    write_classes(subfolders, COUNTS, size=(14, 12), mode="RGB")
    expected = load_dataset(f"folder:{subfolders}")
    # A CSV of another name among the same files, named: every path alike, so the held-out draw's record is too
    named = write_csv(subfolders / "pets.csv", class_rows(subfolders))
    data = load_dataset(f"folder:{named}")
    same_dataset(expected, data)
    assert data.held_out == expected.held_out and data.training_bytes == expected.training_bytes
    assert data.name == f"folder:{named}" and "labelled by pets.csv" in data.description
    # The same pictures flat, in any row order, labelled by labels.csv at the folder's top
    flat = tmp_path / "flat"
    rows = flat_copy(subfolders, flat)
    write_csv(flat / "labels.csv", rows[::-1])
    same_dataset(expected, load_dataset(f"folder:{flat}"))
    again = load_dataset(f"folder:{flat}")  # from the cache: the same
    same_dataset(expected, again)
    assert not again.notices


def test_split_rows_are_the_split_folders(tmp_path, home, capsys):
    split = tmp_path / "d" / "split"
    for part, counts in (("train", COUNTS), ("Test", {"cat": 3, "dog": 2, "owl": 2}), ("valid", {"cat": 2, "dog": 2,
                                                                                               "owl": 1})):
        write_classes(split / part, counts, seed=len(part))
    expected = load_dataset(f"folder:{split}")
    assert expected.val_images is not None
    rows = [(f"{p.relative_to(split)}", p.parent.name, p.parents[1].name) for p in sorted(split.glob("*/*/*.png"))]
    named = write_csv(tmp_path / "d" / "split.csv", [(f"split/{f}", c, s) for f, c, s in rows],
                      header=("Image", "Class", "Split"))
    same_dataset(expected, load_dataset(f"folder:{named}"))
    assert has_validation_folder(f"folder:{named}")
    assert load_dataset(f"folder:{named}").held_out is None  # its own test rows: nothing drawn
    train_error(["train", "lenet-relu", "--dataset", f"folder:{named}", *TINY, "--val-split", "0.1"], capsys,
                "brings its own validation split", "a CSV's val rows")
    # fastai's is_valid: the validation rows are the test split, as a val/ folder beside train/ is
    two = tmp_path / "d" / "two"
    shutil.copytree(split / "train", two / "train")
    shutil.copytree(split / "valid", two / "val")
    expected = load_dataset(f"folder:{two}")
    fastai = write_csv(tmp_path / "d" / "fastai.csv", [(f"two/{p.relative_to(two)}", p.parent.name,
                                                  str(p.parents[1].name == "val"))
                                                 for p in sorted(two.glob("*/*/*.png"))], header=("name", "label",
                                                                                                  "is_valid"))
    data = load_dataset(f"folder:{fastai}")
    same_dataset(expected, data)
    assert data.val_images is None and not has_validation_folder(f"folder:{fastai}")


@pytest.mark.parametrize("header, text", [
    (("file_name", "label"), "{file},{label}"),  # Hugging Face's metadata.csv
    (("Filename", "CLASS"), "{file},{label}"),  # any case
    (("image_id", "category", "width"), "{file},{label},12"),  # other columns are left alone
    (("id", "target"), "{stem},{label}"),  # Kaggle: no extension
    (("path", "labels"), '"{file}","{label}"'),  # quoted
])
def test_column_names_go_by_their_usual_names(tmp_path, home, header, text):
    root = tmp_path / "set"
    write_classes(root / "src", COUNTS)
    expected = load_dataset(f"folder:{root / 'src'}")
    rows = [text.format(file=f"src/{f}", stem=f"src/{f}".removesuffix(".png"), label=c)
            for f, c in class_rows(root / "src")]
    named = root / "any name.csv"
    named.write_text("\ufeff" + ",".join(header) + "\r\n" + "\r\n".join(rows) + "\r\n")  # Excel's BOM and CRLF
    same_dataset(expected, load_dataset(f"folder:{named}"))


def test_kaggles_ids_beside_a_train_folder_and_other_delimiters(tmp_path, home):
    kaggle = tmp_path / "kaggle"
    for i in range(24):  # train.csv's ids name train/<id>.jpg; test/ holds the unlabelled pictures of the contest
        (kaggle / "train").mkdir(parents=True, exist_ok=True)
        rng_image(i, (10, 10), "L").save(kaggle / "train" / f"x{i:02d}.jpg")
    (kaggle / "test").mkdir()
    rng_image(99, (10, 10), "L").save(kaggle / "test" / "y00.jpg")
    (kaggle / "sample_submission.csv").write_text("id,label\ny00,0\n")
    (kaggle / "train.csv").write_text("id;label\n" + "".join(f"x{i:02d};{i % 3}\n" for i in range(24)))
    data = load_dataset(f"folder:{kaggle / 'train.csv'}")
    assert data.classes == ("0", "1", "2") and len(data.train_labels) + len(data.test_labels) == 24
    assert data.notices == ("ignored the image files of test/ (1), of which train.csv names none",)
    (kaggle / "labels.csv").write_text("id\tlabel\n" + "".join(f"train/x{i:02d}.jpg\t{i % 3}\n" for i in range(24)))
    same_dataset(data, load_dataset(f"folder:{kaggle}"))


def test_a_csvs_notice_names_a_folder_it_names_none_of_as_written_and_a_picture_beside_it_as_a_stray(tmp_path, home):
    kaggle = tmp_path / "kaggle"  # a Test/ of unlabelled pictures, and one picture at the top beside train.csv
    (kaggle / "train").mkdir(parents=True)
    for i in range(12):
        rng_image(i, (10, 10), "L").save(kaggle / "train" / f"x{i:02d}.jpg")
    (kaggle / "Test").mkdir()
    rng_image(99, (10, 10), "L").save(kaggle / "Test" / "y00.jpg")
    rng_image(98, (10, 10), "L").save(kaggle / "stray.jpg")
    (kaggle / "train.csv").write_text("id,label\n" + "".join(f"x{i:02d},{i % 2}\n" for i in range(12)))
    assert load_dataset(f"folder:{kaggle / 'train.csv'}").notices == (
        "ignored the image files of Test/ (1), of which train.csv names none",
        f"ignored 1 image file(s) not named in train.csv (first: {kaggle / 'stray.jpg'})")


def test_kaggles_ids_that_test_uses_too_name_the_pictures_of_the_folder_named_as_the_csv(tmp_path, home, capsys):
    kaggle = tmp_path / "kaggle"  # train/0.jpg ... and test/0.jpg ...: the same ids in both folders
    for split, seed in (("train_images", 0), ("test_images", 50)):
        (kaggle / split).mkdir(parents=True)
        for i in range(12):
            rng_image(seed + i, (10, 10), "L").save(kaggle / split / f"{i}.jpg")
    data = load_dataset(f"folder:{write_csv(kaggle / 'train.csv', [(i, i % 2) for i in range(12)], ('id', 'label'))}")
    assert data.notices == ("ignored the image files of test_images/ (12), of which train.csv names none",)
    # a stray picture beside the ones it names is counted apart from the contest's unlabelled test pictures (the one
    # count of 13 named only test_images/0.jpg)
    rng_image(77, (10, 10), "L").save(kaggle / "train_images" / "stray.jpg")
    assert load_dataset(f"folder:{kaggle / 'train.csv'}").notices == (
        "ignored the image files of test_images/ (12), of which train.csv names none",
        f"ignored 1 image file(s) not named in train.csv (first: {kaggle / 'train_images' / 'stray.jpg'})")
    (kaggle / "train_images" / "stray.jpg").unlink()
    train = tmp_path / "train"  # the same pictures as class subfolders: the oracle of which file each row means
    for i in range(12):
        (train / str(i % 2)).mkdir(parents=True, exist_ok=True)
        shutil.copy(kaggle / "train_images" / f"{i}.jpg", train / str(i % 2) / f"{i}.jpg")
    same_dataset(data, load_dataset(f"folder:{train}"))
    # a CSV named as neither folder: each id could be either picture, refused by name
    write_csv(kaggle / "labels.csv", [(i, i % 2) for i in range(12)], ("id", "label"))
    train_error(["train", "lenet", "--dataset", f"folder:{kaggle / 'labels.csv'}", "--out", str(tmp_path / "run")],
                capsys, "row 2: '0' could be 2 files")


def test_a_contest_folder_named_without_its_csv_says_which_csvs_it_holds(tmp_path, home, capsys):
    kaggle = tmp_path / "kaggle"  # train/<id>.jpg, test/<id>.jpg, train.csv and sample_submission.csv, as shipped
    for split in ("train", "test"):
        (kaggle / split).mkdir(parents=True)
        rng_image(0, (10, 10), "L").save(kaggle / split / "x00.jpg")
    (kaggle / "train.csv").write_text("id,label\nx00,0\n")
    (kaggle / "sample_submission.csv").write_text("id,label\nx00,0\n")
    train_error(["train", "lenet", "--dataset", f"folder:{kaggle}", "--out", str(tmp_path / "run")], capsys,
                f"{kaggle / 'train'}: no class subfolders, found 1 image(s) directly in it; expected "
                f"{kaggle / 'train'}/<class>/<image>, or images labelled by a CSV named as the dataset: "
                f"folder:{kaggle}/NAME.csv (here: sample_submission.csv, train.csv)")
    (kaggle / "train.csv").unlink()
    (kaggle / "sample_submission.csv").unlink()
    assert train_error(["train", "lenet", "--dataset", f"folder:{kaggle}", "--out", str(tmp_path / "run")], capsys,
                       "no class subfolders").endswith("<class>/<image>")  # no CSV there: nothing said of one


def test_a_csv_of_one_label_is_refused_in_the_csvs_words(tmp_path, home, capsys):
    kaggle = tmp_path / "kaggle"  # a contest's sample_submission.csv named as the dataset: one dummy label
    (kaggle / "test").mkdir(parents=True)
    for i in range(6):
        rng_image(i, (10, 10), "L").save(kaggle / "test" / f"y{i}.jpg")
    write_csv(kaggle / "sample_submission.csv", [(f"y{i}", "cat") for i in range(6)], header=("id", "label"))
    train_error(["train", "lenet", "--dataset", f"folder:{kaggle / 'sample_submission.csv'}", "--out",
                 str(tmp_path / "run")], capsys, "has 1 class (cat); a classifier needs at least 2 (a folder dataset: "
                "one subfolder, or one label of its CSV, per class)")


def digit_rows(root: Path) -> list[tuple[str, int]]:
    """30 pictures in ``root``, labelled 2, 10 and 1 in turn by ``root/labels.csv``; its rows."""
    root.mkdir()
    rows = []
    for i in range(30):
        rng_image(i, (8, 8), "L").save(root / f"{i:02d}.png")
        rows.append((f"{i:02d}.png", (2, 10, 1)[i % 3]))
    write_csv(root / "labels.csv", rows)
    return rows


def test_whole_number_labels_are_in_the_order_of_their_values(tmp_path, home):
    root = tmp_path / "digits"
    rows = digit_rows(root)
    data = load_dataset(f"folder:{root}")
    assert data.classes == ("1", "2", "10")  # not "1", "10", "2"
    labels = torch.cat([data.train_labels, data.test_labels]).bincount().tolist()
    assert labels == [10, 10, 10]
    write_csv(root / "labels.csv", [(f, "b10" if c == 10 else f"b{c}") for f, c in rows])
    assert load_dataset(f"folder:{root}").classes == ("b1", "b10", "b2")  # names as folder names sort


def test_a_relabelled_or_renamed_class_is_not_read_from_the_cache(tmp_path, home):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    first = load_dataset(f"folder:{root}")
    rows[0] = (rows[0][0], "dog")  # one cat now a dog: the same files, another set
    write_csv(root / "labels.csv", rows)
    second = load_dataset(f"folder:{root}")
    assert torch.cat([second.train_labels, second.test_labels]).bincount().tolist() == [13, 11, 8]
    assert second.training_files != first.training_files or second.held_out != first.held_out
    # a class renamed, in the same place in the order: every file's label number is what it was
    write_csv(root / "labels.csv", [(f, "calf" if c == "cat" else c) for f, c in rows])
    assert load_dataset(f"folder:{root}").classes == ("calf", "dog", "owl")


def flat_copy_of(tmp_path: Path, root: Path) -> list[tuple[str, str]]:
    """A flat folder of COUNTS' pictures labelled by labels.csv; its rows."""
    write_classes(tmp_path / "classes", COUNTS)
    rows = flat_copy(tmp_path / "classes", root)
    write_csv(root / "labels.csv", rows)
    return rows


# -- refusals, one line each, through `cnnlab train` ---------------------------------------------------------
def refused(tmp_path, capsys, csv_text: str | bytes, *needles: str) -> None:
    root = tmp_path / "set"
    if not root.exists():
        flat_copy_of(tmp_path, root)
    csv_file = root / "labels.csv"
    csv_file.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    before = listing(root)
    train_error(["train", "lenet-relu", "--dataset", f"folder:{root}", *TINY, "--out", str(tmp_path / "run")],
                capsys, *needles)
    assert listing(root) == before and not (tmp_path / "run").exists()


@pytest.mark.parametrize("csv_text, needles", [
    ("picture,label\nimages/cat_000.png,cat\n", ("has no file column (its columns: picture, label)", "file_name")),
    ("file,kind\nimages/cat_000.png,cat\n", ("has no label column (its columns: file, kind)", "label, class")),
    ("file,label\nimages/cat_000.png,cat\nimages/gone.png,cat\nimages/lost,dog\n",
     ("2 row(s) name no image file under", "(first: row 3, 'images/gone.png')", "expected paths relative to")),
    ("file,label\nimages/cat_000.png,cat\nimages/dog_000.png,dog\nimages/cat_000.png,dog\n",
     ("images/cat_000.png has rows 2 and 4 of labels 'cat' and 'dog'", "one label and split a file")),
    ("file,label\nimages/cat_000.png,cat\nimages/dog_000.png, \n", ("row 3: no label for images/dog_000.png",)),
    ("file,label\nimages/cat_000.png,\"cat,dog\"\n", ("row 2: several labels in one cell ('cat,dog')",
                                                      "multi-label classification is not trained here")),
    ("file,label\nimages/cat_000.png,cat\nimages/dog_000.png,dog\nimages/owl_000.png,dog cat\n",
     ("row 4: several labels", "'dog cat'")),
    ("file,label,split\nimages/cat_000.png,cat,train\nimages/dog_000.png,dog,holdout\n",
     ("row 3: split 'holdout' is not a known value", "expected train, training, test")),
    ("file,label,is_valid\nimages/cat_000.png,cat,maybe\n", ("is_valid 'maybe' is not a known value", "true or")),
    ("file,label\n../escape.png,cat\n", ("'../escape.png' lies outside", "expected a path relative to")),
    ("file,label\nimages/cat_000.png,cat\n\"images/dog_000.png,dog\n", ("is not a CSV file (line",)),
    (b"file,label\nimages/cat_000.png,caf\xe9\n", ("is not UTF-8 text (byte 0xe9 at offset 33)", "UTF-8")),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("is not a CSV file (it holds NUL bytes",)),
    ("file,label\nimages/cat_000.png,cat\n", ("too few to hold out a test split", "add images or a split column")),
    ("file,label,split,is_valid\nimages/cat_000.png,cat,train,false\n", ("both a split and an is_valid column",)),
    ("file,label,split\nimages/cat_000.png,cat,\n", ("row 2: split '' is not a known value",)),
    ("file,label\nimages/cat_000.png\n", ("row 2: 1 field(s) where the header has 2", "(file, label)")),
    ("file,label,split\nimages/cat_000.png,cat\n", ("row 2: 2 field(s) where the header has 3",
                                                    "one for each of its columns (file, label, split)")),
    ("file,label,file_bytes\nimages/cat_000.png,cat,@@@\n", ("row 2: file_bytes '@@@' is not base64",)),
    ("file,label\n", ("has a header and no rows",)),
    ("\n\n", ("is empty; expected a header",)),
    ("file,label,split\nimages/cat_000.png,cat,train\nimages/dog_000.png,dog,test\n",
     ("label 'dog'", "has no training rows")),
])
def test_bad_csv_is_refused_in_one_line(tmp_path, home, capsys, csv_text, needles):
    refused(tmp_path, capsys, csv_text, "labels.csv", *needles)


def test_a_label_of_several_words_is_one_class_unless_each_word_is_a_label(tmp_path, home):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    write_csv(root / "labels.csv", [(f, {"cat": "sea lion", "dog": "lion"}.get(c, c)) for f, c in rows])
    assert load_dataset(f"folder:{root}").classes == ("lion", "owl", "sea lion")


def test_names_match_in_either_unicode_form(tmp_path, home):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    decomposed = unicodedata.normalize("NFD", "images/café.png")  # as macOS writes the file's name
    (root / rows[0][0]).rename(root / decomposed)
    write_csv(root / "labels.csv", [(unicodedata.normalize("NFC", "images/café.png"), "cat"), *rows[1:]])
    data = load_dataset(f"folder:{root}")
    assert len(data.train_labels) + len(data.test_labels) == len(rows) and not data.notices


def test_names_written_on_windows_are_read_with_backslashes_as_folder_separators(tmp_path, home, capsys):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    expected = load_dataset(f"folder:{root}")
    # pandas' to_csv of Windows paths: images\cat_000.png; a Linux name holding a backslash is read as written first
    odd = root / "images" / "odd\\name.png"
    shutil.copy(root / rows[0][0], odd)
    write_csv(root / "labels.csv", [(f.replace("/", "\\"), c) for f, c in rows] + [("images/odd\\name.png", "owl")])
    data = load_dataset(f"folder:{root}")
    assert torch.equal(torch.cat([data.train_labels, data.test_labels]).bincount(),
                       torch.cat([expected.train_labels, expected.test_labels]).bincount() + torch.tensor([0, 0, 1]))
    assert not data.notices
    odd.unlink()
    refused(tmp_path, capsys, "file,label\nimages\\cat_000.png,cat\n..\\escape.png,cat\n",
            "row 3: '..\\\\escape.png' lies outside")


def test_a_file_in_two_rows_of_the_same_label_is_read_once_and_said(tmp_path, home):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    expected = load_dataset(f"folder:{root}")
    write_csv(root / "labels.csv", [*rows, rows[3], rows[0], rows[3]])  # two exports merged, say
    data = load_dataset(f"folder:{root}")
    same_dataset(expected, data)
    n = len(rows)
    assert data.notices == (f"read once 3 row(s) of labels.csv that name a file again with the same label and split "
                            f"(first: row {n + 2}, {rows[3][0]!r}, as row 5)",)
    assert load_dataset(f"folder:{root}").notices == data.notices  # said from the cache too


def test_a_name_of_several_pictures_is_refused_naming_them(tmp_path, home, capsys):
    root = tmp_path / "set"
    flat_copy_of(tmp_path, root)
    shutil.copy(root / "images" / "cat_000.png", root / "images" / "cat_000.jpg")
    refused(tmp_path, capsys, "id,label\nimages/cat_000,cat\n", "'images/cat_000' could be 2 files",
            str(root / "images" / "cat_000.jpg"), str(root / "images" / "cat_000.png"))


def test_two_csvs_are_refused_saying_which_and_class_subfolders_label_beside_a_csv(tmp_path, home, capsys):
    root = tmp_path / "set"
    flat_copy_of(tmp_path, root)
    shutil.copy(root / "labels.csv", root / "metadata.csv")
    train_error(["train", "lenet-relu", "--dataset", f"folder:{root}", *TINY], capsys,
                "holds labels.csv and metadata.csv", "remove or rename the other", f"folder:{root / 'labels.csv'}")
    (root / "metadata.csv").unlink()
    # Beside class subfolders the subfolders label, as before CSVs were read (and as Hugging Face's imagefolder
    # reads a metadata.csv beside them): said in a notice naming the way to label by the CSV
    write_classes(tmp_path / "set", {"a": 2, "b": 2})
    by_folders = load_dataset(f"folder:{root}")
    assert by_folders.classes == ("a", "b", "images")
    assert f"labelled by its class subfolders: labels.csv beside them is not read (folder:{root / 'labels.csv'} " \
        "labels the images by it instead)" in by_folders.notices
    assert load_dataset(f"folder:{root / 'labels.csv'}").classes == ("cat", "dog", "owl")  # named: no doubt
    with pytest.raises(CnnlabError, match=f"did you mean 'folder:{root / 'labels.csv'}'"):  # the prefix left out
        load_dataset(str(root / "labels.csv"))
    not_csv = root / "notes.txt"
    not_csv.write_text("x")
    with pytest.raises(DataError, match="is a file; expected a folder of class subfolders"):
        load_dataset(f"folder:{not_csv}")


def test_a_row_of_a_file_that_is_not_an_image_is_refused(tmp_path, home, capsys):
    root = tmp_path / "set"
    flat_copy_of(tmp_path, root)
    (root / "images" / "notes.txt").write_text("x")
    refused(tmp_path, capsys, "file,label\nimages/notes.txt,cat\n", "images/notes.txt is not of an image format")


def test_nothing_is_written_inside_the_folder_of_a_named_csv(tmp_path, home):
    root = tmp_path / "set"
    flat_copy_of(tmp_path, root)
    with pytest.raises(CnnlabError, match="lies inside the data folder"):
        refuse_writing_into(f"folder:{root / 'labels.csv'}", root / "run", "--out")


# -- runs -------------------------------------------------------------------------------------------------------
def test_train_eval_predict_and_a_moved_resume_of_a_csv_folder(tmp_path, home, capsys):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    (root / "labels.csv").rename(root / "train.csv")
    run = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{root / 'train.csv'}", *TINY, "--out",
                            str(run), "--val-split", "0.2"], capsys)[0] == 0
    code, out, _ = run_with_output(["eval", str(run / "last.pt"), "--json"], capsys)
    # in the CSV's words: its images are in no test/ folder, and none was missing
    assert code == 0 and json.loads("\n".join(out))["scored"].startswith(
        f"the 5 test images drawn from folder:{root / 'train.csv'} (no test rows in train.csv): those the run held out")
    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / "train.csv").rename(other / "labels.csv")
    code, out, _ = run_with_output(["eval", str(run / "last.pt"), "--dataset", f"folder:{other}", "--json"], capsys)
    assert code == 0 and json.loads("\n".join(out))["scored"].startswith(
        f"all 32 images of folder:{other}: it has no test rows in labels.csv and is not the folder the run trained on")
    code, out, _ = run_with_output(["predict", str(run / "last.pt"), str(root / rows[0][0]), "--json"], capsys)
    assert code == 0 and json.loads("\n".join(out))[0]["top"][0]["class"] in COUNTS
    moved = root.rename(tmp_path / "moved")  # the folder moved: --data-dir names where it is, the CSV keeps its name
    assert run_with_output(["train", "--resume", str(run), "--epochs", "2", "--data-dir", str(moved), "--quiet",
                            "--no-report"], capsys)[0] == 0
    assert json.loads((run / "config.json").read_text())["dataset"]["name"] == f"folder:{moved / 'train.csv'}"
    assert run_with_output(["eval", str(run / "last.pt"), "--data-dir", str(moved)], capsys)[0] == 0


def test_a_resume_is_refused_once_the_csv_relabels_a_training_image(tmp_path, home, capsys):
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    rows = [(f, c, "test" if i % 5 == 0 else "train") for i, (f, c) in enumerate(rows)]  # the test rows fixed
    write_csv(root / "labels.csv", rows, header=("file_name", "label", "split"))
    run = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{root}", *TINY, "--out", str(run)],
                           capsys)[0] == 0
    relabelled = [(f, "owl" if i == 1 else c, s) for i, (f, c, s) in enumerate(rows)]
    write_csv(root / "labels.csv", relabelled, header=("file_name", "label", "split"))
    train_error(["train", "--resume", str(run), "--epochs", "2"], capsys, "the training images of",
                "changed since the run started", "but other ones, or other labels")
    write_csv(root / "labels.csv", rows[::-1], header=("file_name", "label", "split"))  # rows reordered: the same
    assert run_with_output(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-report"], capsys)[0] == 0
    write_csv(root / "labels.csv", [(f, c) for f, c, _ in rows])  # its test rows gone: a drawn sixth is refused
    train_error(["eval", str(run / "last.pt")], capsys, f"folder:{root} had its own test split (test rows in "
                "labels.csv) when the run trained and has none now", "expected the test rows in labels.csv back",
                command="eval")


def test_a_name_in_another_case_is_its_one_file_and_a_name_of_several_is_refused(tmp_path, home, capsys):
    # a CSV written on Windows, whose names are any case there: IMAGES\CAT_000.PNG of images/cat_000.png
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    expected = load_dataset(f"folder:{root}")
    write_csv(root / "labels.csv", [(f.upper().replace("/", "\\") if i % 2 else f.upper(), c)
                                    for i, (f, c) in enumerate(rows)])
    same_dataset(expected, load_dataset(f"folder:{root}"))
    write_csv(root / "labels.csv", [(f.removesuffix(".png").upper(), c) for f, c in rows])  # Kaggle's ids too
    same_dataset(expected, load_dataset(f"folder:{root}"))
    shutil.copy(root / "images" / "cat_000.png", root / "images" / "Cat_000.png")  # two files of that name, any case
    refused(tmp_path, capsys, "file_name,label\nIMAGES/CAT_000.PNG,cat\n", "'IMAGES/CAT_000.PNG' could be 2 files",
            str(root / "images" / "Cat_000.png"), str(root / "images" / "cat_000.png"))


def test_whole_number_labels_written_as_floats_are_the_numbers_they_write(tmp_path, home):
    # pandas writes a label column with a gap as floats (1.0, 2.0, 10.0): the classes are 1, 2 and 10, sorted by
    # value, and a file's row of 2 beside its row of 2.0 is one label
    root = tmp_path / "digits"
    rows = digit_rows(root)
    expected = load_dataset(f"folder:{root}")
    write_csv(root / "labels.csv", [(f, f"{c}.0" if i % 2 else c) for i, (f, c) in enumerate(rows)] +
              [(rows[0][0], f"{rows[0][1]}.0")])
    data = load_dataset(f"folder:{root}")
    assert data.classes == ("1", "2", "10")
    same_dataset(expected, data)
    assert data.notices == ("read once 1 row(s) of labels.csv that name a file again with the same label and split "
                            "(first: row 32, '00.png', as row 2)",)
    write_csv(root / "labels.csv", [(f, f"{c}.5" if i == 0 else f"{c}.0") for i, (f, c) in enumerate(rows)])
    assert load_dataset(f"folder:{root}").classes == ("1.0", "10.0", "2.0", "2.5")  # no whole numbers: as written


def test_a_changed_draw_of_a_csv_folder_is_told_of_the_csvs_test_rows(tmp_path, home, capsys):
    # the remedy said "a PATH/test/<class>/ folder" of a folder whose images are labelled by a CSV
    root = tmp_path / "set"
    rows = flat_copy_of(tmp_path, root)
    run = tmp_path / "run"
    assert run_with_output(["train", "lenet-relu", "--dataset", f"folder:{root}", *TINY, "--out", str(run)],
                           capsys)[0] == 0
    other = tmp_path / "other"
    shutil.copytree(root, other)
    for folder in (root, other):  # one image fewer: another draw
        write_csv(folder / "labels.csv", rows[1:])
    err = train_error(["eval", str(run / "last.pt")], capsys, f"the held-out test split of folder:{root} changed",
                      "(a split column of test rows in labels.csv keeps the split fixed)", command="eval")
    assert "test/<class>" not in err
    err = train_error(["eval", str(run / "last.pt"), "--data-dir", str(other)], capsys,
                      f"the test split drawn from folder:{other} is not the one the run drew",
                      "or give it a split column of test rows in labels.csv", command="eval")
    assert "test/<class>" not in err
