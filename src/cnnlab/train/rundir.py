"""The run folder: what a training run leaves behind, every file written atomically.

config.json (full config, versions, git commit, device), metrics.csv (a row per epoch), result.json, curves.png,
tb/ (TensorBoard), last.pt and best.pt. Nothing already in a folder is overwritten without ``force``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.checkpoint import atomic_write

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"


def prepare_run_dir(out: str | Path | None, model: str, force: bool = False) -> Path:
    """Create the run folder; refuse a non-empty one unless ``force``; fail early if it is not writable.

    With ``force`` the files an earlier run wrote there (:data:`RUN_FILES`, ``tb/``, temporary files of
    interrupted writes) are removed first, so the new run's report, curves and TensorBoard events are its own;
    anything else in the folder (the user's files) stays.
    """
    path = Path(out) if out else default_run_dir(model)
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"--out {path} is a file, expected a folder for the run")
    if path.is_dir() and any(path.iterdir()) and not force:
        names = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise CnnlabError(f"run folder {path} already holds files ({names}); pass --force (force=True in Python) to "
                          "replace what an earlier run wrote there, --resume to continue it, or choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        if force:
            clear_run_dir(path)
    except OSError as e:
        raise CnnlabError(f"cannot write the run folder {path}: {e.strerror or e}") from None
    return path


# What a run writes into its folder; result.json first: it marks a finished run, so it is the first to go.
RUN_FILES = ("result.json", "report.html", "curves.png", "metrics.csv", "config.json", "best.pt", "last.pt", "tb")
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


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure atomically and free it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110,
                                               bbox_inches="tight"))
    plt.close(fig)


def git_commit() -> str | None:
    """The commit of the source tree cnnlab runs from, if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded beside every figure."""
    import torchvision

    import cnnlab

    info: dict[str, Any] = {
        "cnnlab": cnnlab.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
        "git_commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
