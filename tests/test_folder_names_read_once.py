"""The file beside a folder's cache entry that names each image's file (``KEY.names``) is read once for a notice that
names images of several of its splits: `eval RUN --data-dir OTHER` of a folder without test/ scores its training and
test images together, and read the names file once for each."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import data_support
from cli_support import run_with_output
from data_support import write_classes
from test_reliability_folder import split_folder_run

home = data_support.home  # a fixture: every cache under tmp_path


def test_eval_of_another_folder_reads_each_names_file_once_for_its_notice(tmp_path, home, capsys, monkeypatch):
    data, out = split_folder_run(tmp_path, capsys)
    mixed = tmp_path / "mixed"
    write_classes(mixed, {"a": 9, "b": 9}, seed=70)
    shutil.copy(data / "train" / "b" / "003.png", mixed / "b" / "copied.png")
    reads, real = Counter(), Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.suffix == ".names":
            reads[self.name] += 1
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, lines, err = run_with_output(["eval", str(out / "last.pt"), "--data-dir", str(mixed)], capsys)
    assert code == 0, err
    assert "; 1 of 19 evaluation images are pixel for pixel a training image as decoded (first: mixed/b/copied.png = " \
        "split/train/b/003.png); the evaluation accuracy" in lines[1], lines[1]
    assert len(reads) == 2 and set(reads.values()) == {1}, reads  # the run's folder's entry and the scored one's
