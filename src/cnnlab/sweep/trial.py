"""One trial: the Optuna objective that trains one run folder and returns its best validation accuracy.

Every epoch's accuracy goes to the pruner, which may stop the run (it then ends as a stopped run, with its
result.json and report); a crash or a non-finite loss fails the trial and the sweep goes on. Each outcome is also
written to the run folder's ``trial.json``, so the folder says what the sweep made of it without the database.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

from cnnlab.errors import Interrupted, StopRun
from cnnlab.io import write_json
from cnnlab.runs import Run
from cnnlab.sweep.space import SweepSpec, command_line
from cnnlab.sweep.storage import db_errors
from cnnlab.train import resume, train


class TrialFailed(Exception):
    """A trial's run raised or produced no finite accuracy; Optuna records it as failed and the sweep goes on."""


def _trial_record(trial, state: str, **extra: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": state, "params": dict(trial.params), **extra}


def _pre_report(trial, run_dir: Path) -> None:
    """A resumed trial reports the epochs its run already has, so the pruner sees the whole curve."""
    for row in Run.open(run_dir).metrics:
        trial.report(row["val_acc"], int(row["epoch"]))


def run_trial(trial, spec: SweepSpec, sweep_dir: Path) -> float:
    """The objective: train one run folder for ``trial``; returns its best validation accuracy."""
    import optuna

    trial.set_user_attr("pid", os.getpid())  # first: a running trial without it never began (fail_orphaned_trials)
    values = {p.name: p.suggest(trial) for p in spec.space()}
    resume_of = trial.user_attrs.get("resume_of")
    host = socket.gethostname()
    earlier = trial.user_attrs.get("run_dir")
    run_dir = Path(earlier) if earlier and trial.user_attrs.get("host") == host \
        else (sweep_dir / "trials" / f"{trial.number:04d}").resolve()
    for key, value in (("run_dir", str(run_dir)), ("host", host), ("command", command_line(spec, values, run_dir))):
        trial.set_user_attr(key, value)

    pruned: str | None = None  # the pruner's reason, once it stops the trial

    def on_epoch(row: dict[str, float]) -> None:
        nonlocal pruned
        trial.report(row["val_acc"], int(row["epoch"]))
        if trial.should_prune():  # the run ends as a stopped one (result.json, report); Optuna hears of it below
            pruned = f"pruned by the sweep's pruner: val_acc {row['val_acc']:.4f} after epoch {int(row['epoch'])}"
            raise StopRun(pruned)

    common = dict(quiet=True, report=spec.report, on_epoch=on_epoch)
    try:
        if resume_of is not None and (run_dir / "last.pt").is_file():
            _pre_report(trial, run_dir)
            history = resume(run_dir, **common)
            if history is None:  # finished meanwhile by `cnnlab train --resume` (the line its interruption printed)
                history = Run.open(run_dir).metrics
        else:
            settings = {**spec.overrides, **values}
            recipe = settings.pop("recipe", spec.recipe)
            history = train(spec.model, recipe, force=resume_of is not None, out=str(run_dir), **common, **settings)
    except (Interrupted, KeyboardInterrupt):
        trial.set_user_attr("interrupted", True)
        raise
    except db_errors():
        raise
    except Exception as e:  # a crash or a non-finite loss: this trial failed, the sweep goes on
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
        if run_dir.is_dir():
            write_json(run_dir / "trial.json", _trial_record(trial, "failed", error=message))
        trial.set_user_attr("error", message)
        raise TrialFailed(message) from e
    if pruned is not None:
        write_json(run_dir / "trial.json", _trial_record(trial, "pruned", reason=pruned))
        raise optuna.TrialPruned(pruned)
    accs = [row["val_acc"] for row in history if math.isfinite(row["val_acc"])]
    if not accs:
        trial.set_user_attr("error", "no finite validation accuracy")
        raise TrialFailed("no finite validation accuracy")
    write_json(run_dir / "trial.json", _trial_record(trial, "complete", value=max(accs)))
    return max(accs)
