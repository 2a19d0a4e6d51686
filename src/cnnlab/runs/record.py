"""The one reader of a run folder: :class:`Run` and the status words every reader shares.

A run folder (written by :class:`cnnlab.runs.RunFolder` and the Trainer's checkpoints) holds config.json from the
start, metrics.csv after each epoch, last.pt/best.pt, and result.json once the run has ended; a sweep adds
trial.json. ``cnnlab report``, ``compare``, ``explore``, ``study`` and ``sweep`` read it only through
:meth:`Run.open`, so they agree on what a run is, and on its status (:func:`decide_status`).

Example:
    >>> run = Run.open("runs/20261201-101500-lenet")  # doctest: +SKIP
    >>> run.status, run.config["model"], run.metrics[-1]["val_acc"], run.checkpoint()  # doctest: +SKIP
    ('finished', 'lenet', 0.8412, PosixPath('runs/20261201-101500-lenet/last.pt'))
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, summary
from cnnlab.io import read_metrics_csv

# A run's status is one of these words. The first four are final: result.json says how the run ended (finished,
# stopped early by an observer, failed), or a sweep's trial.json says its pruner stopped it (pruned; its
# result.json says stopped). The others describe a run without result.json: still being written to (training,
# judged only by a reader that passes the time, such as the explorer), killed with a checkpoint to resume from
# (interrupted: a signal's interrupted.json says so at once, a kill after STALE_S), started without one (partial),
# or not started (new). ``incomplete`` is any of those four, for a reader that does not tell them apart (the
# comparison table).
ENDED = ("finished", "stopped", "failed", "pruned")
NOT_ENDED = ("training", "interrupted", "partial", "new")
INCOMPLETE = "incomplete"
STATUSES = (*ENDED, *NOT_ENDED, INCOMPLETE)

# No write to these for this long and no result.json: nobody is training the run any more (it was killed).
STALE_S = 600
LIVE_FILES = ("metrics.csv", "last.pt", "config.json")
CHECKPOINTS = ("last.pt", "best.pt")  # last.pt first: result.json's test_acc is the final model's
# Written by a run that SIGINT or SIGTERM stopped after its checkpoint; removed when the run is resumed.
INTERRUPTED_FILE = "interrupted.json"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; anything else raises a one-line CnnlabError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CnnlabError(f"cannot read {path}: expected JSON ({summary(e, 100)})") from None
    if not isinstance(value, dict):
        raise CnnlabError(f"{path} holds a {type(value).__name__}, expected a JSON object")
    return value


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """The epoch rows of ``folder``/metrics.csv as :attr:`Run.metrics` holds them ([] before the first epoch), for
    a reader that follows a live run's metrics alone (the explorer's stream).

    Raises:
        CnnlabError: one line naming the file: unreadable, or a complete row that is not numeric.
    """
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        return []
    try:
        return read_metrics_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CnnlabError(f"cannot read {path}: expected numeric epoch rows ({' '.join(str(e).split())})") from None


def decide_status(folder: Path, result: dict[str, Any] | None, trial: dict[str, Any],
                  now: float | None = None) -> str:
    """The status of the run in ``folder`` (one of :data:`STATUSES` but ``incomplete``), given its parsed
    result.json (None if it has none) and trial.json ({} if none).

    Args:
        now: the time (``time.time()``) at which to judge whether a run without result.json is still training: it
            is if one of :data:`LIVE_FILES` was written within :data:`STALE_S` before. None: not judged (a reader
            that is itself the only writer, such as a study resuming its variants, asks what is on disk).
    """
    if trial.get("state") == "pruned":
        return "pruned"
    if result is not None:
        return str(result.get("status") or "finished")
    if (folder / INTERRUPTED_FILE).is_file():
        return "interrupted"
    if now is not None:
        newest = max(((folder / name).stat().st_mtime for name in LIVE_FILES if (folder / name).is_file()),
                     default=None)
        if newest is not None and now - newest < STALE_S:
            return "training"
    if any((folder / name).is_file() for name in CHECKPOINTS):
        return "interrupted"
    return "partial" if folder.is_dir() and any(folder.iterdir()) else "new"


def _cnnlab(processes: int) -> list[str]:
    """How a command reaches cnnlab in a run of ``processes`` processes: a resume needs as many as the run had."""
    return ["cnnlab"] if processes <= 1 else ["torchrun", "--nproc-per-node", str(processes), "-m", "cnnlab"]


def _record(folder: Path) -> dict[str, Any]:
    """A run folder's config.json, or ``{}`` where it is missing or unreadable (the commands then take the general
    form)."""
    try:
        return read_json(folder / "config.json")
    except CnnlabError:
        return {}


def _processes(record: dict[str, Any]) -> int:
    """The processes a run trained with (its record's ``world_size``; 1 where it does not say)."""
    try:
        return int(record.get("world_size") or 1)
    except (TypeError, ValueError):
        return 1


def resume_command(folder: str | Path, processes: int | None = None) -> str:
    """``cnnlab train --resume FOLDER``, under torchrun with as many processes for a run that trained with several
    (``processes``, else its config.json says): a resume with another count is refused."""
    processes = _processes(_record(Path(folder))) if processes is None else processes
    return shlex.join([*_cnnlab(processes), "train", "--resume", str(folder)])


def restart_command(folder: str | Path) -> str:
    """The command that starts the run in ``folder`` again from its first step, for a run that never wrote a
    checkpoint (killed in its first epoch: ``--resume`` has no last.pt to continue from).

    Its own config.json holds every setting, and ``cnnlab train --config`` reads one back; ``--force`` replaces
    what the stopped run wrote. A folder without a readable config gets the general form.
    """
    folder = Path(folder)
    record = _record(folder)
    if not isinstance(record.get("config"), dict):
        return f"cnnlab train MODEL ... --out {shlex.quote(str(folder))} --force"
    return shlex.join([*_cnnlab(_processes(record)), "train", "--config", str(folder / "config.json"), "--out",
                       str(folder), "--force"])


def folder_status(folder: str | Path, now: float | None = None) -> str:
    """The status of any folder meant to hold a run, whether or not it is one yet (no config.json: ``new`` or
    ``partial``); never raises for a damaged file: a result.json or trial.json that does not parse means the run
    did not end cleanly (``partial``, or ``interrupted`` with a checkpoint)."""
    folder = Path(folder)
    try:
        trial = read_json(folder / "trial.json") if (folder / "trial.json").is_file() else {}
        result = read_json(folder / "result.json") if (folder / "result.json").is_file() else None
    except CnnlabError:
        trial, result = {}, None
    return decide_status(folder, result, trial, now)


@dataclass(frozen=True)
class Run:
    """What one run folder holds, read once (:meth:`open`).

    Attributes:
        path: the run folder.
        record: config.json as a whole (config, dataset, input_size, normalize, head: the layers trained as the
            head where more than the last layer, params, world_size, environment).
        config: its ``"config"`` object: the TrainConfig fields the run was started with.
        metrics: the rows of metrics.csv, one per finished epoch, as numbers (NaN where a cell is empty); a last
            line still being written is left out.
        result: result.json, or None while the run has not ended.
        trial: a sweep's trial.json, or {} for a run no sweep made.
        status: one of :data:`STATUSES` (see :func:`decide_status`).
    """

    path: Path
    record: dict[str, Any]
    config: dict[str, Any]
    metrics: list[dict[str, float]]
    result: dict[str, Any] | None
    trial: dict[str, Any]
    status: str

    @classmethod
    def open(cls, path: str | Path, now: float | None = None) -> Run:
        """Read the run folder ``path``; ``now`` as in :func:`decide_status` (pass ``time.time()`` to tell a run
        still training from an interrupted one).

        Raises:
            CnnlabError: one line naming the file: no config.json, a JSON file that does not parse or is not an
                object, a config.json without its "config" object, a complete metrics row that is not numeric.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CnnlabError(f"{path} is not a run folder: expected a config.json in it")
        record = read_json(path / "config.json")
        config = record.get("config")
        if not isinstance(config, dict):
            raise CnnlabError(f"{path / 'config.json'} has no \"config\" object: not a cnnlab run folder")
        metrics = read_metrics(path)
        result = read_json(path / "result.json") if (path / "result.json").is_file() else None
        trial = read_json(path / "trial.json") if (path / "trial.json").is_file() else {}
        return cls(path, record, config, metrics, result, trial, decide_status(path, result, trial, now))

    @property
    def ended(self) -> bool:
        """Whether the run has ended (a status of :data:`ENDED`): it will not change any more."""
        return self.status in ENDED

    @property
    def outcome(self) -> str:
        """The status where the run has ended, else ``incomplete`` (for readers that do not tell unfinished runs
        apart)."""
        return self.status if self.ended else INCOMPLETE

    @property
    def dataset(self) -> dict[str, Any]:
        """config.json's dataset entry (name, classes, channels, image_size, ...), or {} in a record without one."""
        info = self.record.get("dataset")
        return info if isinstance(info, dict) else {}

    def checkpoint(self, prefer: Sequence[str] = CHECKPOINTS) -> Path | None:
        """The first of the ``prefer`` checkpoint files the folder holds (last.pt, then best.pt), or None."""
        return next((self.path / name for name in prefer if (self.path / name).is_file()), None)
