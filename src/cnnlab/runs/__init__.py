"""The run's record: one writer and one reader of a run folder, and its checkpoints.

:mod:`~cnnlab.runs.folder` makes the folder and writes config.json, metrics.csv, result.json and tb/ as the run
trains (:class:`RunFolder`, an observer of the Trainer); :mod:`~cnnlab.runs.checkpoint` writes and reads last.pt and
best.pt (weights-only); :mod:`~cnnlab.runs.record` reads a folder back (:class:`Run`). Everything that reads runs
(report, compare, explore, study, sweep) does so through :class:`Run`. This package sits below training and
inference: it imports nothing of either.
"""

from cnnlab.runs.checkpoint import FORMAT, READABLE, VERSION, load_checkpoint, save_checkpoint, upgrade
from cnnlab.runs.folder import (
    RUN_FILES,
    TRASH_PREFIX,
    RunFolder,
    check_writable,
    clear_run_dir,
    default_run_dir,
    environment,
    git_commit,
    prepare_run_dir,
    refuse_run_dir,
)
from cnnlab.runs.record import (
    CHECKPOINTS,
    ENDED,
    INCOMPLETE,
    NOT_ENDED,
    STALE_S,
    STATUSES,
    Run,
    decide_status,
    folder_status,
    read_json,
    read_metrics,
    restart_command,
    resume_command,
)

__all__ = [
    "CHECKPOINTS",
    "ENDED",
    "FORMAT",
    "INCOMPLETE",
    "NOT_ENDED",
    "READABLE",
    "RUN_FILES",
    "STALE_S",
    "STATUSES",
    "TRASH_PREFIX",
    "VERSION",
    "Run",
    "RunFolder",
    "check_writable",
    "clear_run_dir",
    "decide_status",
    "default_run_dir",
    "environment",
    "folder_status",
    "git_commit",
    "load_checkpoint",
    "prepare_run_dir",
    "refuse_run_dir",
    "read_json",
    "read_metrics",
    "restart_command",
    "resume_command",
    "save_checkpoint",
    "upgrade",
]
