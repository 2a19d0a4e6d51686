"""The run folders under the explorer's root: finding them, naming them safely, and summarising each.

A run is named by its path relative to the root (``"20261201-101500-lenet"`` or ``"sweep/trial-3"``). Every
request names a run that way and :func:`resolve_run` is the only way back to a folder: it refuses absolute paths,
``..``, and anything whose real path (after following symlinks) leaves the root, so the server can only ever read
run folders under the root. A run's files are read through :class:`cnnlab.runs.Run`; a run that cannot be read
becomes a summary with an ``error`` line, never an exception that would take the list down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from cnnlab.data import holds_out_nothing
from cnnlab.errors import CnnlabError
from cnnlab.io import writable_text
from cnnlab.runs import Run

MARKER = "config.json"  # every run folder starts with it (a run still training has no result.json yet)
MAX_DEPTH, MAX_RUNS = 4, 2000


class NotFound(CnnlabError):
    """The name does not denote a run folder under the root (or is not allowed to)."""


def find_runs(root: Path) -> list[str]:
    """Relative names of the run folders under ``root`` (``root`` itself, ``"."``, if it is one), sorted.

    Symlinked folders are not followed, and a run folder's own subfolders (``tb/``) are not searched.
    """
    root = Path(root)
    if (root / MARKER).is_file():
        return ["."]
    found: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel = Path(folder).relative_to(root)
        if MARKER in files and rel.parts:
            found.append(rel.as_posix())
            dirs.clear()
        elif len(rel.parts) >= MAX_DEPTH:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(found) >= MAX_RUNS:
            break
    return sorted(found)


def resolve_run(root: Path, name: str) -> Path:
    """The folder of run ``name`` under ``root``; raises :class:`NotFound` for anything else."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise NotFound("no such run")
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or len(rel.parts) > MAX_DEPTH:
        raise NotFound("no such run")
    base = Path(root).resolve()
    path = base
    for part in rel.parts:
        path = path / _on_disk(path, part)
    path = path.resolve()
    if path != base and base not in path.parents:  # a symlink out of the root
        raise NotFound("no such run")
    if not (path / MARKER).is_file() or (path / MARKER).resolve().parent != path:
        raise NotFound("no such run")
    return path


def _on_disk(folder: Path, part: str) -> str:
    """``part`` of a run's name as ``folder`` names it on disk. A name that is not UTF-8 was listed with U+FFFD where
    its undecodable bytes are (no JSON carries them), and comes back so: it is the one entry that reads so."""
    if "\ufffd" not in part or (folder / part).exists() or not folder.is_dir():
        return part
    same = [p.name for p in folder.iterdir() if writable_text(p.name) == part]
    return same[0] if len(same) == 1 else part


def run_file(run: Path, filename: str) -> Path:
    """A file of a run folder by its plain name; the file itself must not be a symlink out of the run."""
    path = run / filename
    if "/" in filename or filename.startswith(".") or not path.is_file() or path.resolve().parent != run:
        raise NotFound("no such file")
    return path


def summarize_run(root: Path, name: str, detail: bool = False) -> dict[str, Any]:
    """The runs table's row for one run: model, dataset, recipe, accuracy, speed, date, status (or ``error``).

    With ``detail``, also its epoch rows (``metrics``) and config.json (``config``), for the run's own page.
    """
    folder = resolve_run(root, name)
    row: dict[str, Any] = {"run": name, "title": folder.name if name == "." else name}
    try:
        run = Run.open(folder, now=time.time())  # the explorer watches live runs: "training" is judged by age
        result, metrics = run.result or {}, run.metrics
        checkpoint = run.checkpoint()
        row.update({
            "model": result.get("model") or run.config.get("model"),
            "dataset": run.dataset.get("name") or run.config.get("dataset") or "fashion-mnist",
            "recipe": result.get("recipe") or run.config.get("recipe"),
            "test_acc": result.get("test_acc"),
            "val_acc": metrics[-1].get("val_acc") if metrics else None,
            # 0: no test split (--test-split 0): the page's headline is the validation accuracy, said so; and
            # without --val-split nothing held out: the training accuracy, said so
            "test_split": run.config.get("test_split"),
            "nothing_held_out": holds_out_nothing(run.config),
            "train_acc": metrics[-1].get("train_acc") if metrics else None,
            "images_per_s": result.get("images_per_s") or (metrics[-1].get("images_per_s") if metrics else None),
            "epochs": len(metrics),
            # a time budget plans its steps by the clock as it runs: its config's epochs are not its plan
            "planned_epochs": None if run.config.get("time_budget") else run.config.get("epochs"),
            "date": (run.record.get("environment") or {}).get("date") or time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.localtime((folder / MARKER).stat().st_mtime)),
            "status": run.status,
            "checkpoint": checkpoint.name if checkpoint else None,
            "figures": [n for n in ("curves.png",) if (folder / n).is_file()],
        })
        if detail:
            row.update(metrics=metrics, config=run.record)
    except CnnlabError as e:
        row["error"] = str(e)
    except OSError as e:  # a file vanished or became unreadable between the listing and the read
        row["error"] = f"cannot read the run folder: {e.strerror or e}"
    return row


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run's summary row, newest first.

    A folder the listing found but :func:`resolve_run` refuses (a name holding a backslash, a config.json that links
    elsewhere, a folder removed since the listing) is left out: it could not be opened from the page either, and one
    such folder must not take the whole table down.
    """
    rows = []
    for name in find_runs(root):
        try:
            rows.append(summarize_run(root, name))
        except NotFound:
            continue
    return sorted(rows, key=lambda r: str(r.get("date") or ""), reverse=True)
