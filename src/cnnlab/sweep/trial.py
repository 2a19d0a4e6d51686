"""One trial: the Optuna objective that trains one run folder and returns its best validation figure.

The figure is the sweep's objective (``SweepSpec.objective``): the one the run's best.pt judges, its ``--best-by``
(the balanced accuracy under ``--balance``), so the trial's value is best.pt's. Every epoch's figure goes to the
pruner, which may stop the run (it then ends as a stopped run, with its result.json and report); a crash or a
non-finite loss fails the trial and the sweep goes on. Each outcome is also written to the run folder's
``trial.json``, so the folder says what the sweep made of it without the database.
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
from cnnlab.train.config import JUDGED
from cnnlab.train.trainer import best_row

# The figures of the best epoch a complete trial records (its ``best_row`` attribute, the summary's best trial).
FIGURES = tuple(key for key, _ in JUDGED.values())


class TrialFailed(Exception):
    """A trial's run raised or produced no finite figure; Optuna records it as failed and the sweep goes on."""


def _trial_record(trial, state: str, **extra: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": state, "params": dict(trial.params), **extra}


def _pre_report(trial, run_dir: Path, key: str) -> None:
    """A resumed trial reports the epochs its run already has, so the pruner sees the whole curve."""
    for row in Run.open(run_dir).metrics:
        trial.report(row[key], int(row["epoch"]))


def run_trial(trial, spec: SweepSpec, sweep_dir: Path) -> float:
    """The objective: train one run folder for ``trial``; returns its best validation figure (``spec.objective``,
    the one its best.pt judges)."""
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

    key, name = spec.judged()
    pruned: str | None = None  # the pruner's reason, once it stops the trial

    def on_epoch(row: dict[str, float]) -> None:
        nonlocal pruned
        trial.report(row[key], int(row["epoch"]))
        if trial.should_prune():  # the run ends as a stopped one (result.json, report); Optuna hears of it below
            pruned = f"pruned by the sweep's pruner: {key} {row[key]:.4f} after epoch {int(row['epoch'])}"
            raise StopRun(pruned)

    common = dict(quiet=True, report=spec.report, on_epoch=on_epoch)
    try:
        if resume_of is not None and (run_dir / "last.pt").is_file():
            _pre_report(trial, run_dir, key)
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
    best = best_row(history, key)
    if best is None or not math.isfinite(best[key]):
        trial.set_user_attr("error", f"no finite validation {name}")
        raise TrialFailed(f"no finite validation {name}")
    figures = {"epoch": int(best["epoch"]),
               **{k: best[k] if math.isfinite(best.get(k, math.nan)) else None for k in FIGURES}}
    trial.set_user_attr("best_row", figures)  # the summary names the best trial's other figure too
    write_json(run_dir / "trial.json", _trial_record(trial, "complete", objective=key, value=best[key], **figures))
    return best[key]
