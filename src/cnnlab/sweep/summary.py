"""A sweep's outcome: trials by state, the best trial with the command that repeats it, and two plots."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

from cnnlab.io import save_figure, write_json
from cnnlab.sweep.space import SweepSpec, command_line
from cnnlab.sweep.storage import first_line
from cnnlab.sweep.study import progress
from cnnlab.sweep.trial import FIGURES


def _save_plot(plot, study, path: Path, notes: list[str]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        save_figure(figure, path)
    except Exception as e:  # e.g. importance needs two finished trials that differ in some parameter
        notes.append(f"{path.name} not drawn: {first_line(e)}")


def summarize(study, spec: SweepSpec, sweep_dir: Path) -> dict[str, Any]:
    """The sweep's outcome: trials by state, the best trial with its command line, and the plots.

    Writes ``summary.json``, ``importance.png`` (each parameter's share of the objective's variance, Optuna's
    fANOVA) and ``parallel.png`` (parallel coordinates of the trials' values) into ``sweep_dir``. The objective is
    named (``objective``: ``val_acc`` or ``val_bal_acc``, as metrics.csv names it); the best trial has its
    ``value``, and its best epoch's ``val_acc`` and ``val_bal_acc`` (None where not recorded).
    """
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_parallel_coordinate, plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    key = spec.judged()[0]
    summary: dict[str, Any] = {"study": study.study_name, "model": spec.model, "objective": key,
                               "trials": progress(study), "best": None, "importance": None, "plots": [], "notes": []}
    if complete:
        best = max(complete, key=lambda t: t.value)
        # A trial from before trials recorded their best epoch's figures has only its value
        figures = {**dict.fromkeys(("epoch", *FIGURES)), **best.user_attrs.get("best_row", {}), key: best.value}
        summary["best"] = {"number": best.number, "objective": key, "value": best.value, **figures,
                           "params": best.params, "run_dir": best.user_attrs.get("run_dir"),
                           "host": best.user_attrs.get("host"), "command": command_line(spec, best.params)}
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "importances will be equal" when every trial is alike
                summary["importance"] = get_param_importances(study)
        except Exception as e:
            summary["notes"].append(f"no parameter importance: {first_line(e)}")
        for plot, name in ((plot_param_importances, "importance.png"), (plot_parallel_coordinate, "parallel.png")):
            _save_plot(functools.partial(plot, target_name=key), study, sweep_dir / name, summary["notes"])
            if (sweep_dir / name).is_file():
                summary["plots"].append(str(sweep_dir / name))
    else:
        summary["notes"].append("plots need two or more complete trials")
    write_json(sweep_dir / "summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the lines `cnnlab sweep` prints at the end."""
    counts = ", ".join(f"{v} {k}" for k, v in summary["trials"].items() if k != "counted")
    lines = [f"study {summary['study']}: {counts}"]
    best = summary["best"]
    if best:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        key = best["objective"]
        # judged by the balanced accuracy: the accuracy beside it, as the epoch lines of a run under --balance show both
        plain = f", val_acc {best['val_acc']:.4f}" if key != "val_acc" and best.get("val_acc") is not None else ""
        lines += [f"best: trial {best['number']}, {key} {best['value']:.4f}{plain} ({params})",
                  f"  run folder: {best['run_dir']}" + (f" on {best['host']}" if best.get("host") else ""),
                  f"  repeat it with: {best['command']}"]
    if summary["importance"]:
        lines.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importance"].items()))
    lines += [f"plot: {p}" for p in summary["plots"]] + [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)
