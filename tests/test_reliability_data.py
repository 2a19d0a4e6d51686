"""A damaged, mistyped or foreign data folder ends `cnnlab train` with one line naming the file and the problem.

tests/test_data_idx.py and tests/test_data_fashion_mnist.py check the library's DataErrors; this file checks what
a user of the command line sees: exit code 2, exactly one line on stderr (no traceback), the path of the bad file
in it, and no run folder left behind. Each case copies the real files into a temporary folder and damages one.
"""

import gzip
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab import cli
from cnnlab.data import fashion_mnist
from cnnlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
LABELS = "train-labels-idx1-ubyte.gz"  # the smallest training file: cheap to damage and to re-compress


def _damage(data_dir: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of the data folder with LABELS damaged ``how``; returns (folder, damaged file)."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in fashion_mnist.FILES:
        if name != LABELS:
            (folder / name).symlink_to(data_dir / name)  # read-only use, no 30 MB copies
    good, bad = (data_dir / LABELS).read_bytes(), folder / LABELS
    raw = gzip.decompress(good)
    if how == "truncated gzip":
        bad.write_bytes(good[: len(good) // 2])
    elif how == "other content":  # a valid IDX file, just not Fashion-MNIST's labels
        bad.write_bytes(gzip.compress(raw[:8] + bytes(reversed(raw[8:])), mtime=0))
    elif how == "wrong magic":  # the images' magic (3 dims) in the labels file
        bad.write_bytes(gzip.compress(struct.pack(">I", 2051) + raw[4:], mtime=0))
    elif how == "short payload":
        bad.write_bytes(gzip.compress(raw[:-10], mtime=0))
    elif how == "not gzip at all":
        bad.write_bytes(b"<html>404 Not Found</html>\n")
    elif how == "missing":
        pass
    elif how == "a folder":
        bad.mkdir()
    return folder, bad


def _train(folder: Path, out: Path, capsys) -> tuple[int, list[str]]:
    code = cli.main(["train", "lenet", "--data-dir", str(folder), "--epochs", "1", "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("how", ["truncated gzip", "other content", "wrong magic", "short payload",
                                 "not gzip at all"])
def test_damaged_file_is_one_line_naming_it(data_dir, tmp_path, capsys, how):
    folder, bad = _damage(data_dir, tmp_path, how)
    code, err = _train(folder, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("cnnlab train: error: ") and str(bad) in line
    # Any change to a file changes its md5, and the md5 is checked first: that is the problem named.
    assert f"md5 mismatch, expected {fashion_mnist.FILES[LABELS]}" in line
    assert not (tmp_path / "run").exists()  # the data is checked before a run folder is made


@pytest.mark.parametrize("how, problem", [
    ("truncated gzip", "truncated gzip"),
    ("wrong magic", "bad IDX magic 0x00000803, expected 0x00000801"),
    ("short payload", "payload has 59990 bytes, header says 60000"),
])
def test_file_with_a_matching_md5_but_bad_content_names_the_problem(data_dir, tmp_path, capsys, monkeypatch, how,
                                                                     problem):
    """Past the md5 check (a table edited by mistake, or a checksum collision) the parser still answers in one line."""
    folder, bad = _damage(data_dir, tmp_path, how)
    monkeypatch.setitem(fashion_mnist.FILES, LABELS, hashlib.md5(bad.read_bytes()).hexdigest())
    code, err = _train(folder, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1, err
    assert str(bad) in err[0] and problem in err[0], err[0]


@pytest.mark.parametrize("how", ["missing", "a folder"])
def test_missing_file_beside_the_others_is_never_downloaded_over(data_dir, tmp_path, capsys, how, monkeypatch):
    from cnnlab.data import fetch

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted into someone's data folder")

    monkeypatch.setattr(fetch, "_fetch", no_network)
    folder, _ = _damage(data_dir, tmp_path, how)
    code, err = _train(folder, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1, err
    assert LABELS in err[0] and "not writing into someone else's data folder" in err[0]


def test_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    code, err = _train(a_file, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1 and f"{a_file} (from --data-dir) is a file; expected a folder" in err[0], err


def test_typo_in_data_dir_is_refused_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    typo = tmp_path / "fashoin-mnist"
    code, err = _train(typo, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{typo} (from --data-dir) does not exist; expected a folder with the four Fashion-MNIST" in err[0]
    assert not typo.exists() and not (tmp_path / "run").exists() and not (tmp_path / "home").exists()


def test_own_images_folder_never_gets_a_download(tmp_path, capsys, monkeypatch):
    from cnnlab.data import fetch

    def no_network(*args, **kwargs):
        raise AssertionError("a download was started into the user's folder")

    monkeypatch.setattr(fetch, "_fetch", no_network)
    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "tom.jpg").write_bytes(b"\xff\xd8\xff")
    before = sorted(p.name for p in photos.rglob("*"))
    code, err = _train(photos, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1 and "not writing into someone else's data folder" in err[0], err
    assert sorted(p.name for p in photos.rglob("*")) == before


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "MNIST/raw"])
def test_torchvision_layout_is_read_as_found(data_dir, tmp_path, layout):
    """torchvision's root (what d2l's own loader downloads into) holds <root>/FashionMNIST/raw/*.gz."""
    from cnnlab.data import load_dataset

    raw = tmp_path / layout
    raw.mkdir(parents=True)
    for name in fashion_mnist.FILES:
        (raw / name).symlink_to(data_dir / name)
    if layout == "MNIST/raw":  # Fashion-MNIST's files under MNIST's folder are not MNIST: md5 says so
        with pytest.raises(DataError, match="md5 mismatch"):
            load_dataset("mnist", tmp_path)
        return
    data = load_dataset("fashion-mnist", tmp_path)
    assert torch.equal(data.train_images, load_dataset("fashion-mnist", data_dir).train_images)
    assert sorted(p.name for p in raw.iterdir()) == sorted(fashion_mnist.FILES)  # nothing added


@pytest.mark.slow
def test_uncompressed_files_are_read_as_found(data_dir, tmp_path):
    from cnnlab.data import load_dataset

    for name in fashion_mnist.FILES:
        (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress((data_dir / name).read_bytes()))
    data, reference = load_dataset("fashion-mnist", tmp_path), load_dataset("fashion-mnist", data_dir)
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(data, split), getattr(reference, split))
    assert len(list(tmp_path.iterdir())) == 4


@pytest.mark.slow
def test_truncated_file_in_a_real_process_prints_exactly_one_line(data_dir, tmp_path):
    """The whole stderr of a real `cnnlab train` (import-time warnings included) is the one error line."""
    folder, bad = _damage(data_dir, tmp_path, "truncated gzip")
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "lenet", "--data-dir", str(folder), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert str(bad) in proc.stderr and "md5 mismatch" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""

