"""`cnnlab compare`: one table of several run folders' figures and one plot overlaying their curves.

A run folder is read, never written, through :class:`cnnlab.runs.Run`: ``config.json`` (what was asked),
``metrics.csv`` (one row per epoch) and, once the run has ended, ``result.json``. A run that has not ended has no
result.json; its row says ``incomplete``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import html
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.data import holds_out_nothing
from cnnlab.errors import CnnlabError
from cnnlab.io import check_figure_file, save_figure, train_loss_under, writable_json
from cnnlab.models.summary import model_macs
from cnnlab.report.plots import drawn_name, name_text, names_drawn_otherwise
from cnnlab.runs import Run
from cnnlab.train.config import BEFORE_THE_SETTING, JUDGED, augment_name, config_fields
from cnnlab.train.trainer import best_row

FORMATS = ("md", "csv", "json")
LEGEND_RUNS = 20  # the most runs the curves name in a legend

# Config keys that name a run rather than decide its figures (or that have a column of their own).
_NOT_COMPARED = {"out", "data_dir", "model", "recipe", "dataset"}

# The table's columns before and after the config keys that differ between the runs.
_LEADING = ("run", "model", "dataset", "recipe")
_TRAILING = ("params", "macs", "epochs_done", "best_val_acc", "final_val_acc", "test_acc", "wall_s", "images_per_s",
             "status")
# Columns after final_val_acc where some run judges its epochs by the balanced accuracy (--best-by, --balance's
# default): the figure its best.pt, and a study's ranking, go by.
_BALANCED = ("best_val_bal_acc", "final_val_bal_acc")
# Columns after final_val_acc where some run held out nothing (--test-split 0 without --val-split): it has no
# validation or test figure, and its last epoch's training accuracy is the one it measured.
_NOTHING_HELD_OUT = ("nothing_held_out", "final_train_acc")


def load_run(path: str | Path) -> Run:
    """Read one run folder (:meth:`cnnlab.runs.Run.open`); a folder without config.json raises a CnnlabError."""
    return Run.open(path)


def find_runs(patterns: Sequence[str]) -> list[Path]:
    """Run folders named by ``patterns``: folders, shell globs, or a folder of run folders (a study or sweep).

    Raises:
        CnnlabError: a pattern that names no run folder (nothing is silently left out of a comparison).
    """
    found: list[Path] = []
    seen: set[Path] = set()  # resolved: the same folder named two ways is one run
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        runs = []
        for match in map(Path, matches):
            if (match / "config.json").is_file():
                runs.append(match)
            elif match.is_dir():  # a study or sweep folder: the run folders anywhere below it
                runs.extend(sorted(p.parent for p in match.rglob("config.json")))
        if not runs:
            raise CnnlabError(f"{pattern!r} names no run folder: expected a folder with a config.json, a glob of "
                              f"such folders, or a folder holding them")
        for run in runs:
            if (resolved := run.resolve()) not in seen:
                seen.add(resolved)
                found.append(run)
    return found


def _labels(runs: Sequence[Run]) -> list[str]:
    """Short unique names: the folder's name, or more of its path where two runs share a name (paths resolved:
    ``.`` is named by the folder it is)."""
    paths = [r.path.resolve() for r in runs]
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _processes(run: Run) -> int:
    """The processes a run trained with (torchrun's world size; a record that does not say is of one process)."""
    value = run.record.get("world_size") or (run.result or {}).get("world_size") or 1
    return value if isinstance(value, int) else 1  # hand-edited: compared as it trained by default, not an error


def _global_batch(run: Run) -> Any:
    """The images a step of the whole run took: result.json's figure, else batch_size x processes."""
    batch = _setting(run, "batch_size")
    return (run.result or {}).get("global_batch_size") or (batch * _processes(run) if isinstance(batch, int) else None)


# What decides a run's figures besides its config: the processes it trained with under torchrun. Each takes
# batch_size images a step and scores its shard of the test set, so a run of two processes trained at twice the
# global batch and was tested on twice the images: beside a run of one its figures differed with no column saying
# why. A column each where the runs differ.
_RUN_SETTINGS = {"processes": _processes, "global_batch": _global_batch}


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (in TrainConfig's field order), then ``processes``
    and ``global_batch`` where those differ (the global batch only where some run had several processes: with one
    it is ``batch_size``)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.config if k not in keys and k not in _NOT_COMPARED)
    keys = [k for k in keys if len({json.dumps(_setting(r, k), default=str) for r in runs}) > 1]
    several = any(_processes(r) > 1 for r in runs)
    return keys + [k for k in _RUN_SETTINGS if (several or k == "processes")
                   and len({json.dumps(_setting(r, k), default=str) for r in runs}) > 1]


def _test_samples_differ(runs: Sequence[Run]) -> bool:
    """Whether the ended runs were tested on different numbers of images (a run still training has no count yet:
    that is no difference)."""
    return len({r.result.get("test_samples") for r in runs if r.result and r.result.get("test_samples")}) > 1


_MISSING = object()
# A setting an older run's config.json lacks is one that run's cnnlab did not have yet: it trained as today's
# default does (no mixup, no time budget), and reads as that default, not as a difference.
_DEFAULTS = {f.name: f.default for f in config_fields() if f.default is not dataclasses.MISSING}


def _setting(run: Run, key: str) -> Any:
    """A run's setting as today's runs record it (an older run's augment switch as its preset's name, a setting it
    lacks as what it did then, else today's default, a time-budgeted run's epochs as None)."""
    if key in _RUN_SETTINGS:
        return _RUN_SETTINGS[key](run)
    if key == "epochs" and _setting(run, "time_budget") is not None:
        return None  # a budget sets the run's length; its epochs were only the schedule until the speed was known
    value = run.config.get(key, BEFORE_THE_SETTING.get(key, _DEFAULTS.get(key, _MISSING)))
    return augment_name(value) if key == "augment" else value


def _judged_by(run: Run) -> str | None:
    """The figure a run's best.pt was picked by (its ``best_by``; a run from before it: the accuracy), or None for one
    that held out nothing: its best.pt is its last epoch's, picked by no figure, whatever ``--balance`` resolved its
    ``best_by`` to."""
    return None if holds_out_nothing(run.config) else _setting(run, "best_by")


def _best_epoch(run: Run) -> dict[str, Any] | None:
    """The metrics row of the epoch whose weights best.pt holds, as the Trainer picks it
    (:func:`cnnlab.train.trainer.best_row` of the figure the run judges by, :func:`_judged_by`); None where none
    judges (nothing held out, no epoch yet). Its accuracy is result.json's ``best_val_acc``: under ``--best-by
    balanced-accuracy`` the highest accuracy of any epoch is another epoch's, whose weights the run kept nowhere."""
    judged = _judged_by(run)
    return None if judged is None else best_row(run.metrics, JUDGED[judged][0])


def _finite(row: dict[str, Any] | None, key: str) -> float | None:
    """``row[key]`` where it is a number measured (metrics.csv's empty cells read as NaN); else None."""
    value = None if row is None else row.get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_row(run: Run, label: str, keys: Sequence[str],
            macs_of: Callable[[str, int, int, int], int | None] = model_macs) -> dict[str, Any]:
    """One row of the comparison: the run's identity, the differing config values and its figures; ``macs_of``:
    :func:`cnnlab.models.summary.model_macs`, or one that remembers its answers."""
    result = run.result or {}
    val = [r["val_acc"] for r in run.metrics if math.isfinite(r.get("val_acc", math.nan))]
    balanced = [r["val_bal_acc"] for r in run.metrics if math.isfinite(r.get("val_bal_acc", math.nan))]
    best = _best_epoch(run)
    train = [r["train_acc"] for r in run.metrics if math.isfinite(r.get("train_acc", math.nan))]
    dataset = run.dataset
    input_size = run.record.get("input_size") or result.get("input_size")
    num_classes = len(dataset["classes"]) if isinstance(dataset.get("classes"), list) else 10
    channels = dataset.get("channels") or run.config.get("channels") or 1
    macs = macs_of(run.config.get("model", ""), int(input_size), int(channels), num_classes) \
        if input_size else None
    row: dict[str, Any] = {
        "run": label, "model": run.config.get("model"),
        "dataset": dataset.get("name") or run.config.get("dataset", "fashion-mnist"),
        "recipe": run.config.get("recipe"),
    }
    row.update({k: None if (v := _setting(run, k)) is _MISSING else v for k in keys})
    # A time budget ends a run inside an epoch, and that part epoch has a row of metrics.csv as a whole one does:
    # what it trained is result.json's epochs_trained (steps over an epoch's steps).
    budgeted = result.get("time_budget_s") is not None and isinstance(result.get("epochs_trained"), (int, float))
    row.update({
        "params": run.record.get("params") or result.get("params"), "macs": macs,
        "epochs_done": result["epochs_trained"] if budgeted else len(run.metrics),
        "best_val_acc": _finite(best, "val_acc"), "final_val_acc": val[-1] if val else None,
        "best_by": _judged_by(run),  # what its best.pt judges (a run from before it: the accuracy)
        "best_val_bal_acc": _finite(best, "val_bal_acc"),
        "final_val_bal_acc": balanced[-1] if balanced else None,
        "nothing_held_out": holds_out_nothing(run.config),
        "final_train_acc": train[-1] if train else None,
        "test_acc": result.get("test_acc"), "test_samples": result.get("test_samples"), "wall_s": result.get("wall_s"),
        "images_per_s": result.get("images_per_s"), "status": run.outcome,
    })
    return row


def compare_runs(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """The comparison table: its column names and one row per run."""
    keys = differing_keys(runs)
    columns = [*_LEADING, *keys, *_TRAILING]
    if any(_judged_by(r) == "balanced-accuracy" for r in runs):
        at = columns.index("final_val_acc") + 1
        columns[at:at] = _BALANCED
    if any(holds_out_nothing(r.config) for r in runs):
        at = columns.index("test_acc")
        columns[at:at] = _NOTHING_HELD_OUT
    if _test_samples_differ(runs):  # beside the figure it counts
        columns.insert(columns.index("test_acc") + 1, "test_samples")
    # A model's MACs are counted once for all its runs: building and tracing it took 47 ms for a LeNet and 0.3 s for
    # a ResNet-50, for each of a sweep's hundreds of runs
    macs_of = functools.cache(model_macs)
    return columns, [run_row(run, label, keys, macs_of) for run, label in zip(runs, _labels(runs), strict=True)]


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if column.endswith("_acc"):
            return f"{value:.4f}"
        if column == "epochs_done":  # a time-budgeted run's part epoch
            return f"{value:.2f}"
        if column in ("wall_s", "images_per_s"):
            return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
        return f"{value:g}"
    if isinstance(value, int) and column in ("params", "macs"):
        return f"{value:,}"
    # A run folder's name is anything a file system allows: a line break ended the table's row, and <i> or &amp; in
    # it were read as HTML by markdown renderers. Line breaks read as spaces; <, > and & as HTML's entities.
    return html.escape(" ".join(str(value).splitlines()), quote=False).replace("|", "\\|")


def format_table(columns: Sequence[str], rows: Sequence[dict[str, Any]], fmt: str = "md") -> str:
    """The table as a markdown table (``md``), CSV (``csv``) or a JSON list of objects (``json``)."""
    if fmt == "json":
        return json.dumps(writable_json([{c: row.get(c) for c in columns} for row in rows]), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if fmt != "md":
        raise CnnlabError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    numeric = {c for c in columns if any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                         for r in rows)}
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def judged_figure(rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """The figure runs compared together are judged by (a study's ranking, the curves' accuracy panel), as
    ``(best_by, why)``: the one their runs judge (``best_by``, the balanced accuracy under ``--balance``; a row without
    it is of a run from before it, which judged accuracy), and where they judge different ones the balanced accuracy,
    with ``why`` saying so ("" otherwise).

    Ranked by plain accuracy, a variant that balances its classes would lose to one that does not for the very
    images the balancing moved toward the small classes; every run records the balanced accuracy beside it. A run
    that held out nothing (``nothing_held_out``) judges no figure and has none: it has no say.
    """
    rows = [r for r in rows if not r.get("nothing_held_out")]
    judged = {r.get("best_by") or BEFORE_THE_SETTING["best_by"]: None for r in rows}
    if len(judged) <= 1:
        return next(iter(judged), BEFORE_THE_SETTING["best_by"]), ""
    by = {figure: [r["run"] for r in rows if (r.get("best_by") or BEFORE_THE_SETTING["best_by"]) == figure]
          for figure in judged}
    shown = "; ".join(f"{', '.join(names)} by {JUDGED[figure][1]}" for figure, names in by.items())
    return "balanced-accuracy", (f"the variants judge their epochs by different figures ({shown}): ranked by the "
                                 "balanced accuracy, which accuracy would tilt toward the variants that do not "
                                 "balance their classes")


def _legend(runs: Sequence[Run], names: Sequence[str]) -> tuple[list[str], bool]:
    """The lines :func:`curves_overlay` draws, by their names (``names``: each run's group, or its own), once each: a
    run without an epoch draws none; and whether the legend names them (at most :data:`LEGEND_RUNS` lines)."""
    lines = list(dict.fromkeys(name for run, name in zip(runs, names, strict=True) if run.metrics))
    return lines, len(lines) <= LEGEND_RUNS


def curves_note(runs: Sequence[Run], labels: Sequence[str]) -> str | None:
    """One line saying which run names (``labels``) the legend of :func:`curves_overlay` draws as U+FFFD, no font on
    the machine having some of their characters, in the words the report says it of class names
    (:func:`cnnlab.report.plots.names_drawn_otherwise`); None where it draws every name as written, or names none."""
    lines, named = _legend(runs, labels)
    return names_drawn_otherwise(lines if named else [], of="run names", figures="the plot draws", text="the table")


def curves_overlay(runs: Sequence[Run], labels: Sequence[str] | None = None,
                   groups: Sequence[str] | None = None) -> Figure:
    """The validation figure the runs judge (:func:`judged_figure`) and training loss per epoch, one line per run on
    shared panels; where that figure is the balanced accuracy, the accuracy beside it on a third. ``groups``: a name
    for each run (a study's variant, run on several seeds), whose runs share one colour and one legend entry."""
    labels = list(labels or _labels(runs))
    # one colour and one legend entry per group (18 runs of 6 variants were 18 entries over the curves, the colours
    # repeating after 10); each run its own group without them
    names = list(groups or labels)
    colours = {name: f"C{k % 10}" for k, name in enumerate(dict.fromkeys(names))}
    first = {name: labels[names.index(name)] for name in colours}
    rows = [{"run": label, "best_by": _judged_by(run), "nothing_held_out": holds_out_nothing(run.config)}
            for run, label in zip(runs, labels, strict=True)]
    judged, _ = judged_figure(rows)
    # Under --balance the runs' best.pt (and a study's ranking) go by the balanced accuracy: the plot drew only the
    # accuracy, which the balancing moves away from
    figures = [(JUDGED[judged][0], f"validation {JUDGED[judged][1]}" + (" (judged)" if judged != "accuracy" else ""))]
    if judged != "accuracy":
        figures.append(("val_acc", "validation accuracy"))
    # What each run's training loss is (class-weighted, on balanced batches): said in the panel's title where the
    # runs agree, beside each run's name in the panel's own legend where they differ
    under = {label: train_loss_under(_setting(run, "balance")) for run, label in zip(runs, labels, strict=True)}
    mixed = len(set(under.values())) > 1
    only = next(iter(under.values()), None)
    loss_title = "training loss" + (f" ({only})" if only and not mixed else "")
    fig = Figure(figsize=(5.5 * (len(figures) + 1), 4))
    *panels, loss = fig.subplots(1, len(figures) + 1)
    drew: dict[Any, set[str]] = {ax: set() for ax in (*panels, loss)}  # the groups each panel draws a line of
    for run, label, name in zip(runs, labels, names, strict=True):
        if not run.metrics:  # failed before its first epoch: nothing to draw (the table says so)
            continue
        epochs = [r["epoch"] for r in run.metrics]
        marker = "o" if len(epochs) <= 20 else None  # a one-epoch run is a point, not an invisible line
        shown = drawn_name(name) if first[name] == label else "_nolegend_"  # a group's first run names it
        for ax, (key, _) in zip(panels, figures, strict=True):
            values = [r.get(key, math.nan) for r in run.metrics]
            if any(math.isfinite(v) for v in values):  # a run from before val_bal_acc was recorded has none
                ax.plot(epochs, values, marker=marker, label=shown, color=colours[name])
                drew[ax].add(name)
        drew[loss].add(name)
        loss.plot(epochs, [r["train_loss"] for r in run.metrics], marker=marker, color=colours[name],
                  label=f"{shown} ({under[label]})" if mixed and under[label] and shown != "_nolegend_" else shown)
    for ax, name in (*zip(panels, (name for _, name in figures), strict=True), (loss, loss_title)):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # A legend of hundreds of runs (a sweep's trials) was a column of names 6,000 px tall beside two small panels,
    # and most of the drawing time: past LEGEND_RUNS the lines go unnamed, and the first panel says where they are
    lines, named = _legend(runs, names)
    if not named:
        panels[0].set_title(f"{panels[0].get_title()}\n({len(lines)} {'groups of runs' if groups else 'runs'}: the "
                            "table names them)")
    # Runs without an epoch draw nothing, and an empty legend is a matplotlib warning. The legend goes on the first
    # panel with a line of every run drawn: one that held out nothing (--test-split 0 alone) draws no validation
    # figure, and a legend on that panel left its training loss unnamed
    if named and (drawn := next((ax for ax in (*panels, loss) if ax.lines and drew[ax] == drew[loss]), None)):
        drawn.legend(fontsize="small")
        if mixed and loss.lines and drawn is not loss:
            loss.legend(fontsize="small")
    return fig


def compare(patterns: Sequence[str], fmt: str = "md", plot: str | Path | None = None,
            force: bool = False) -> str:
    """Compare run folders: returns the table in ``fmt`` and, with ``plot``, writes the curves there (PNG).

    Example:
        >>> print(compare(["runs/*-lenet*"], plot="compare.png"))  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise CnnlabError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    runs = [Run.open(p) for p in find_runs(patterns)]
    if plot is not None:  # before the table and the figure are made
        check_figure_file(plot, force, what="plot file ")
    columns, rows = compare_runs(runs)
    if plot is not None:
        labels = [r["run"] for r in rows]
        with name_text():  # run folder names in any script
            save_figure(curves_overlay(runs, labels), Path(plot), overwrite=force)
        # names the plot drew otherwise (an emoji no font here has): said once, as the report says it of class names
        if drawn := curves_note(runs, labels):
            print(f"cnnlab: note: {drawn}", file=sys.stderr, flush=True)
    return format_table(columns, rows, fmt)

