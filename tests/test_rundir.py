"""cnnlab.runs.prepare_run_dir: refusing a used folder, and what ``force`` removes (only cnnlab's files)."""

from __future__ import annotations

import os
import shutil

import pytest

import cnnlab.runs.folder as rundir
from cnnlab.errors import CnnlabError
from cnnlab.runs.folder import RUN_FILES, TRASH_PREFIX, clear_run_dir, prepare_run_dir


def _old_run(folder):
    """A folder as an earlier run and its user left it: every cnnlab file, two runs' events, a temp, a note."""
    folder.mkdir()
    for name in RUN_FILES:
        if name != "tb":
            (folder / name).write_text(f"old {name}")
    (folder / "tb").mkdir()
    for i in range(2):
        (folder / "tb" / f"events.out.tfevents.{i}.old").write_bytes(b"old")
    (folder / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a write killed midway
    (folder / "notes.txt").write_text("mine")
    (folder / "mine").mkdir()
    (folder / "mine" / "result.json").write_text("mine too")  # same name, deeper: not cnnlab's
    return folder


def test_a_used_folder_is_refused_with_advice_for_the_cli_and_python(tmp_path):
    folder = _old_run(tmp_path / "run")
    with pytest.raises(CnnlabError, match=r"already holds files .*pass --force \(force=True in Python\)") as e:
        prepare_run_dir(folder, "lenet")
    assert "\n" not in str(e.value)
    assert (folder / "report.html").read_text() == "old report.html"  # nothing touched


def test_force_removes_what_cnnlab_wrote_and_keeps_the_users_files(tmp_path):
    folder = _old_run(tmp_path / "run")
    assert prepare_run_dir(folder, "lenet", force=True) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["mine", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "mine" / "result.json").read_text() == "mine too"


def test_force_on_an_empty_or_new_folder(tmp_path):
    assert clear_run_dir(tmp_path) == []
    assert prepare_run_dir(tmp_path / "new", "lenet", force=True).is_dir()


def test_a_crash_while_deleting_leaves_only_a_hidden_trash_that_the_next_force_removes(tmp_path, monkeypatch):
    folder = _old_run(tmp_path / "run")

    def crash(path, *args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "rmtree", crash)
    with pytest.raises(CnnlabError, match="cannot write the run folder"):
        prepare_run_dir(folder, "lenet", force=True)
    names = sorted(p.name for p in folder.iterdir())
    [trash] = [n for n in names if n.startswith(TRASH_PREFIX)]
    assert sorted(set(names) - {trash}) == ["mine", "notes.txt"]  # no old run file is left beside a new run
    monkeypatch.undo()
    prepare_run_dir(folder, "lenet", force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["mine", "notes.txt"]


def test_a_crash_while_moving_never_leaves_an_old_result_beside_missing_files(tmp_path, monkeypatch):
    """result.json and interrupted.json say how a run ended, so they go first: a half-cleared folder never looks
    finished, or stopped by a signal."""
    folder = _old_run(tmp_path / "run")
    moves, real_replace = [], os.replace

    def replace_then_crash(src, dst):
        if len(moves) == 2:
            raise OSError(28, "No space left on device")
        moves.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(rundir.os, "replace", replace_then_crash)
    with pytest.raises(CnnlabError):
        prepare_run_dir(folder, "lenet", force=True)
    assert moves == ["result.json", "interrupted.json"] and not (folder / "result.json").exists()
