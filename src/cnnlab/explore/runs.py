"""The run folders under the explorer's root: finding them, naming them safely, and summarising each.

A run is named by its path relative to the root (``"20261201-101500-lenet"`` or ``"sweep/trial-3"``). Every
request names a run that way and :func:`resolve_run` is the only way back to a folder: it refuses absolute paths,
``..``, and anything whose real path (after following symlinks) leaves the root, so the server can only ever read
run folders under the root. A run that cannot be read becomes a summary with an ``error`` line, never an exception
that would take the list down.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from cnnlab.errors import CnnlabError

MARKER = "config.json"  # every run folder starts with it (a run still training has no result.json yet)
MAX_DEPTH, MAX_RUNS = 4, 2000
STALE_S = 600  # no metrics.csv/last.pt write for this long and no result.json: the run was stopped or killed


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
    path = (base / rel).resolve()
    if path != base and base not in path.parents:  # a symlink out of the root
        raise NotFound("no such run")
    if not (path / MARKER).is_file() or (path / MARKER).resolve().parent != path:
        raise NotFound("no such run")
    return path


def run_file(run: Path, filename: str) -> Path:
    """A file of a run folder by its plain name; the file itself must not be a symlink out of the run."""
    path = run / filename
    if "/" in filename or filename.startswith(".") or not path.is_file() or path.resolve().parent != run:
        raise NotFound("no such file")
    return path


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; anything else raises a one-line CnnlabError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CnnlabError(f"cannot read {path.name}: expected JSON ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(value, dict):
        raise CnnlabError(f"{path.name} holds a {type(value).__name__}, expected a JSON object")
    return value


def read_metrics(run: Path) -> list[dict[str, float]]:
    """The complete rows of ``metrics.csv``: a last line still being written (no newline yet) is left out.

    Raises:
        CnnlabError: a row that is complete but not numeric.
    """
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"cannot read metrics.csv: {e}") from None
    lines = text.split("\n")
    lines = lines[:-1]  # after the last newline: empty, or a row still being written
    if not lines:
        return []
    header = lines[0].split(",")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(header):
            raise CnnlabError(f"metrics.csv line {number} has {len(cells)} fields, expected {len(header)}")
        try:
            rows.append({k: float(v) if v else math.nan for k, v in zip(header, cells, strict=True)})
        except ValueError:
            raise CnnlabError(f"metrics.csv line {number} is not numeric: {line[:80]!r}") from None
    return rows


def _status(run: Path, result: dict[str, Any] | None) -> str:
    if result is not None:
        return str(result.get("status") or "finished")
    newest = max((p.stat().st_mtime for p in (run / "metrics.csv", run / "last.pt", run / MARKER) if p.is_file()),
                 default=0.0)
    return "training" if time.time() - newest < STALE_S else "stopped"


def summarize_run(root: Path, name: str) -> dict[str, Any]:
    """The runs table's row for one run: model, dataset, recipe, accuracy, speed, date, status (or ``error``)."""
    run = resolve_run(root, name)
    row: dict[str, Any] = {"run": name, "title": run.name if name == "." else name}
    try:
        info = read_json(run / MARKER)
        config = info.get("config") or {}
        result = read_json(run / "result.json") if (run / "result.json").is_file() else None
        metrics = read_metrics(run)
        dataset = info.get("dataset") or config.get("dataset") or "fashion-mnist"
        row.update({
            "model": (result or {}).get("model") or config.get("model"),
            "dataset": dataset.get("name") if isinstance(dataset, dict) else dataset,
            "recipe": (result or {}).get("recipe") or config.get("recipe"),
            "test_acc": (result or {}).get("test_acc"),
            "val_acc": metrics[-1].get("val_acc") if metrics else None,
            "images_per_s": (result or {}).get("images_per_s") or (metrics[-1].get("images_per_s") if metrics
                                                                     else None),
            "epochs": len(metrics), "planned_epochs": config.get("epochs"),
            "date": (info.get("environment") or {}).get("date") or time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.localtime((run / MARKER).stat().st_mtime)),
            "status": _status(run, result),
            "checkpoint": next((n for n in ("last.pt", "best.pt") if (run / n).is_file()), None),
            "figures": [n for n in ("curves.png",) if (run / n).is_file()],
        })
    except CnnlabError as e:
        row["error"] = str(e)
    except OSError as e:  # a file vanished or became unreadable between the listing and the read
        row["error"] = f"cannot read the run folder: {e.strerror or e}"
    return row


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run's summary row, newest first."""
    rows = [summarize_run(root, name) for name in find_runs(root)]
    return sorted(rows, key=lambda r: str(r.get("date") or ""), reverse=True)
