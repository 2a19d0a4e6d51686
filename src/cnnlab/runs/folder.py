"""The run folder's writer: what a training run leaves behind, every file written atomically.

config.json (full config, dataset, versions, git commit, device), metrics.csv (a row per epoch), result.json and
tb/ (TensorBoard) are written by :class:`RunFolder`, an observer of the Trainer, beside the Trainer's own last.pt
and best.pt (:mod:`cnnlab.runs.checkpoint`); curves.png and report.html by the report's observer
(:class:`cnnlab.report.RunReport`). Nothing already in a folder is overwritten without ``force``. They are read
back through :class:`cnnlab.runs.Run` only.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import cnnlab
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.io import TRAIN_LOSS_UNDER, write_json, write_metrics_csv
from cnnlab.runs.record import INTERRUPTED_FILE


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"


def prepare_run_dir(out: str | Path | None, model: str, force: bool = False) -> Path:
    """Create the run folder; refuse a non-empty one unless ``force``; fail early if it is not writable.

    With ``force`` the files an earlier run wrote there (:data:`RUN_FILES`, ``tb/``, temporary files of
    interrupted writes) are removed first, so the new run's report, curves and TensorBoard events are its own;
    anything else in the folder (the user's files) stays.
    """
    path = Path(out) if out else default_run_dir(model)
    refuse_run_dir(path, force)
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
        if force:
            clear_run_dir(path)
    except OSError as e:
        raise _unwritable(path, e) from None
    return path


def refuse_run_dir(path: Path, force: bool = False) -> None:
    """The refusals of :func:`prepare_run_dir` that need nothing made: a file where the run folder would be, or a
    folder that already holds files (unless ``force``). A new run makes them before its data is read too, so that a
    folder of images is not decoded only to be told ``--out`` is taken."""
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"--out {path} is a file, expected a folder for the run")
    if path.is_dir() and any(path.iterdir()) and not force:
        names = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise CnnlabError(f"run folder {path} already holds files ({names}); pass --force (force=True in Python) to "
                          "replace what an earlier run wrote there, --resume to continue it, or choose another --out")


def check_writable(path: Path) -> None:
    """Fail early, in one line, when the run folder ``path`` cannot be written (read-only, another user's): before
    the data is read and the model built, not at the first file the run writes."""
    try:
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise _unwritable(path, e) from None


def _unwritable(path: Path, error: OSError) -> CnnlabError:
    return CnnlabError(f"cannot write the run folder {path}: {error.strerror or error}")


# What a run writes into its folder; result.json and interrupted.json first: they say how the run ended, so they
# are the first to go.
RUN_FILES = ("result.json", INTERRUPTED_FILE, "report.html", "curves.png", "metrics.csv", "config.json", "best.pt",
             "last.pt", "tb")
TRASH_PREFIX = ".cnnlab-trash-"


def clear_run_dir(path: str | Path) -> list[str]:
    """Remove what cnnlab wrote into a run folder before, and nothing else; returns the names removed.

    The entries are first renamed into one hidden folder (each rename is atomic) and that folder is deleted
    afterwards, so a crash midway leaves the old run's files or a hidden trash folder, never half-deleted
    TensorBoard logs or checkpoints beside a new run; a later call also removes a trash folder left that way.
    """
    path = Path(path)
    own = [path / name for name in RUN_FILES if (path / name).exists() or (path / name).is_symlink()]
    own += sorted(p for p in path.glob(".*.*.tmp") if p.is_file())  # cnnlab.io.atomic_write's temporary files
    leftovers = sorted(p for p in path.glob(TRASH_PREFIX + "*") if p.is_dir())
    if not own and not leftovers:
        return []
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=path))
    for entry in own:
        os.replace(entry, trash / entry.name)
    for folder in (trash, *leftovers):
        shutil.rmtree(folder)
    return [entry.name for entry in own]


def git_commit() -> str | None:
    """The commit of the source tree cnnlab runs from, if it is a git checkout of cnnlab.

    An installed cnnlab has none, also where its virtualenv lies inside another project's checkout (``.venv/``):
    HEAD there is that project's commit, so it counts only when cnnlab's own files are tracked in that checkout.
    """
    here = Path(__file__)
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", here.name], cwd=here.parent,
                                 capture_output=True, timeout=5)
        if tracked.returncode != 0:
            return None
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here.parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded beside every figure."""
    import torchvision  # only for its version: not worth its import time in every process that reads runs

    info: dict[str, Any] = {
        "cnnlab": cnnlab.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
        "git_commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class RunFolder:
    """Observer of a :class:`~cnnlab.train.trainer.Trainer` that keeps the run folder's record up to date.

    config.json when the fit starts, and metrics.csv from a resumed run's epochs; TensorBoard scalars and
    metrics.csv after every epoch (after the Trainer's last.pt, so a listed epoch is always resumable); result.json
    at the end, with ``status: failed`` and the error when the fit fails; interrupted.json when a signal stopped it
    (a reader sees the run as interrupted at once, not after minutes of silence), removed when it is resumed.

    Args:
        path: the run folder (made by :func:`prepare_run_dir`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tb = None

    def on_start(self, trainer) -> None:
        write_json(self.path / "config.json", trainer.config_record())
        # Resumed (interrupted, or finished and given more epochs): it trains again, and how it ended before is
        # no longer how it ended; a result.json left here would show it finished, with its old figures
        for name in (INTERRUPTED_FILE, "result.json"):
            (self.path / name).unlink(missing_ok=True)
        if trainer.state.history:  # the checkpoint's epochs: a kill just after last.pt left metrics.csv one short
            write_metrics_csv(self.path / "metrics.csv", trainer.state.history)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra: the run goes on without tb/
            return
        self._tb = SummaryWriter(log_dir=str(self.path / "tb"))
        balance = trainer.config.balance
        if balance in TRAIN_LOSS_UNDER:  # its scalars draw train_loss as val_loss's kind of figure, which it is not
            self._tb.add_text("train_loss", f"train_loss is {TRAIN_LOSS_UNDER[balance]} (--balance {balance}); "
                              "val_loss is not", trainer.state.epoch)

    def on_epoch(self, trainer, row: dict[str, Any], is_best: bool) -> None:
        if self._tb is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr", "images_per_s"):
                if key in row:  # a run that holds out nothing has no validation figures
                    self._tb.add_scalar(key, row[key], row["epoch"])
        write_metrics_csv(self.path / "metrics.csv", trainer.state.history)

    def on_end(self, trainer, result: dict[str, Any]) -> None:
        write_json(self.path / "result.json", result)
        self._close()

    def on_interrupt(self, trainer, stop: Interrupted) -> None:
        """SIGINT or SIGTERM stopped the fit after its checkpoint: no result.json, since it can be resumed."""
        # "epoch": the one it stopped in, counted from 1 as the stop's own line says; "epochs_done": the whole ones
        write_json(self.path / INTERRUPTED_FILE, {
            "signal": signal.Signals(stop.signum).name, "epoch": trainer.state.epoch + 1,
            "epochs_done": trainer.state.epoch, "step": trainer.state.step,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self._close()

    def on_failure(self, trainer, error: BaseException) -> None:
        """A fit that raised (a non-finite loss, a crash, an observer's exception): say so in result.json.

        A run stopped by a signal is not a failure: it has a checkpoint and no result.json until it is resumed.
        """
        history, best = trainer.state.history, trainer.best_row() or {}
        write_json(self.path / "result.json", {
            "model": trainer.config.model, "recipe": trainer.config.recipe, "dataset": trainer.dataset.name,
            "status": "failed", "error": f"{type(error).__name__}: {' '.join(str(error).split())}"[:500],
            "epochs": len(history), "best_by": trainer.picked_by, "best_epoch": best.get("epoch"),
            "best_val_acc": best.get("val_acc"), "best_val_bal_acc": best.get("val_bal_acc"),
            "test_acc": None, "seed": trainer.config.seed,
        })
        self._close()

    def _close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
