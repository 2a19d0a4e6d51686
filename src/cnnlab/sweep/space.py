"""What a sweep searches: one ``--param`` (:class:`Param`) and the sweep's settings (:class:`SweepSpec`).

Both are checked against TrainConfig before any trial starts: a field that does not exist, cannot be searched, or
whose bounds TrainConfig would refuse fails at once, as one line.
"""

from __future__ import annotations

import itertools
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.checks import int_in_range, positive_int
from cnnlab.data.folder import has_validation_folder
from cnnlab.errors import CnnlabError
from cnnlab.train.config import AUGMENTS, JUDGED, check_ranked_on_held_out, field_types, make_config

KINDS = ("loguniform", "uniform", "int", "intlog", "choice")
PRUNERS = ("median", "hyperband", "none")
# Fields a sweep cannot search: they name where things go, or (val_split, test_split, dataset) what is measured.
_NOT_SEARCHABLE = ("model", "out", "data_dir", "device", "val_split", "test_split", "dataset")
# Fields that decide the figure a trial's run judges (its config's best_by): searched, they may give trials different
# ones.
_DECIDE_THE_FIGURE = ("best_by", "balance", "recipe")
# Fields each machine sets for itself: where its data is and what it trains on; not part of the shared settings.
LOCAL = ("data_dir", "device")


def _convert(name: str, kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        if name == "augment" and text.strip() in AUGMENTS:  # the old switch, or a preset's name
            return text.strip()
        raise ValueError(f"expected true or false for {name}, got {text!r}")
    return kind(text)


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field: ``name=loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH``,
    ``intlog:LOW:HIGH`` or ``choice:A,B,C``."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """The value Optuna's ``trial`` draws for this parameter."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind in ("int", "intlog"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.kind == "intlog")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")

    def extremes(self) -> list[Any]:
        """Values that together exercise every bound, for checking the space before any trial runs."""
        if self.kind == "choice":
            return list(self.choices)
        cast = int if self.kind in ("int", "intlog") else float
        return [cast(self.low), cast(self.high)]


def parse_param(text: str) -> Param:
    """Parse one ``--param`` (see :class:`Param`); a malformed one raises a one-line CnnlabError.

    Example:
        >>> parse_param("lr=loguniform:1e-3:1")
        Param(name='lr', kind='loguniform', low=0.001, high=1.0, choices=())
    """
    usage = (f"--param must be NAME=KIND:ARGS with KIND one of {', '.join(KINDS)} (e.g. lr=loguniform:1e-3:1 or "
             f"batch_size=choice:64,128); got {text!r}")
    name, eq, rest = text.partition("=")
    kind, colon, args = rest.partition(":")
    name = name.strip().replace("-", "_")
    if not eq or not colon or kind not in KINDS or not args:
        raise CnnlabError(usage)
    types = field_types()
    if name not in types:
        raise CnnlabError(f"--param {name}: not a TrainConfig field (see `cnnlab train --help`); got {text!r}")
    if name in _NOT_SEARCHABLE:
        raise CnnlabError(f"--param {name}: {name} cannot be searched (expected a training setting such as lr); "
                          f"got {text!r}")
    ftype = types[name]
    if kind == "choice":
        try:
            values = tuple(_convert(name, ftype, v) for v in args.split(","))
        except ValueError:
            kind_text = f"a preset ({', '.join(AUGMENTS)}) or true or false" if name == "augment" else \
                {int: "an integer", float: "a number", bool: "true or false"}.get(ftype, f"a {ftype.__name__}")
            raise CnnlabError(f"--param {name}: every choice must be {kind_text}; got {args!r}") from None
        if len(values) < 2 or len(set(values)) != len(values):
            raise CnnlabError(f"--param {name}: expected two or more different choices, got {args!r}")
        return Param(name, kind, choices=values)
    numeric = int if kind in ("int", "intlog") else float
    if ftype not in (int, float) or (numeric is float and ftype is int):
        raise CnnlabError(f"--param {name} is a {ftype.__name__} field: expected choice:..."
                          + (" or int:LOW:HIGH" if ftype is int else "") + f"; got {text!r}")
    bounds = args.split(":")
    try:
        low, high = (numeric(b) for b in bounds) if len(bounds) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise CnnlabError(f"--param {name}: expected {kind}:LOW:HIGH with {numeric.__name__} bounds, LOW < HIGH; "
                          f"got {text!r}")
    if kind in ("loguniform", "intlog") and low <= 0:
        raise CnnlabError(f"--param {name}: a log scale needs LOW > 0, got {low:g}")
    return Param(name, kind, float(low), float(high))


@dataclass
class SweepSpec:
    """What a sweep searches and how; stored in the study so that any worker can join it.

    Attributes:
        model: the registered model every trial trains.
        params: the ``--param`` texts.
        trials: how many trials the sweep runs in all (across every worker; failed ones count, interrupted ones
            are resumed instead).
        recipe: the recipe under the fixed overrides and the searched values.
        overrides: fixed TrainConfig fields, the same in every trial.
        pruner: ``median`` (stop a trial whose accuracy is below the median of earlier trials at that epoch),
            ``hyperband`` or ``none``.
        startup_trials: trials that run to the end before the median pruner stops any.
        warmup_epochs: epochs of each trial before the median pruner looks at it.
        allow_test_objective: tune on the test set when no ``val_split`` is set and the data brings no validation
            split of its own (the book validates on the test set).
        seed: the sampler's seed (each worker adds its index; a sweep continuing the study mixes in the trials it
            holds, so as not to draw its first points again), None for a fresh one.
        report: write report.html in every trial's run folder.
        objective: the validation figure the trials are judged by (the pruner's reports, the trial's value, the
            best trial), as ``--best-by`` names it: the one every trial's run picks its best.pt by (its config's
            ``best_by``: balanced-accuracy under ``--balance``); None until :meth:`trial_figure` fixes it. A study
            stored before sweeps judged it judged accuracy, and goes on doing so (``load_study``).
    """

    model: str
    params: list[str]
    trials: int = 20
    recipe: str = "book"
    overrides: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    startup_trials: int = 5
    warmup_epochs: int = 1
    allow_test_objective: bool = False
    seed: int | None = None
    report: bool = False
    objective: str | None = None

    def space(self) -> list[Param]:
        return [parse_param(p) for p in self.params]

    def check(self) -> SweepSpec:
        """Refuse a sweep that could not run, before any trial starts (one-line CnnlabError)."""
        positive_int(self.trials, "--trials")
        for value, flag in ((self.startup_trials, "--startup-trials"), (self.warmup_epochs, "--warmup-epochs")):
            int_in_range(value, flag, 0, 2**31, expected="a whole number from 0")  # optuna's pruner refuses less
        if self.pruner not in PRUNERS:
            raise CnnlabError(f"--pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}")
        space = self.space()
        if not space:
            raise CnnlabError("expected at least one --param NAME=KIND:ARGS to search, got none")
        names = [p.name for p in space]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(self.overrides)))
        if clash:
            raise CnnlabError(f"{', '.join(clash)} given twice (searched and fixed, or searched twice); expected once")
        check_ranked_on_held_out(self.overrides, "a sweep")
        own_val = has_validation_folder(str(self.overrides.get("dataset", "")))
        if self.overrides.get("val_split") is None and not own_val and not self.allow_test_objective:
            raise CnnlabError("a sweep tunes on a validation split, never on the test set: expected --val-split "
                              "(e.g. 0.1 or 5000), a folder dataset with its own val/ beside train/ and test/, or "
                              "--allow-test-objective to tune on the test set as the book's exercises do")
        self.objective = self.trial_figure()
        return self

    def judged(self) -> tuple[str, str]:
        """The objective's metrics.csv key and its name (``val_bal_acc``, ``balanced accuracy``); a spec not yet
        checked nor stored (one given to :func:`cnnlab.sweep.run_trial` directly) has it from its settings."""
        return JUDGED[self.objective or self.trial_figure()]

    def trial_figure(self) -> str:
        """The figure every trial's run judges its epochs by (its config's resolved ``best_by``), checking every
        bound and choice of the space through TrainConfig's own checks on the way: a value it refuses fails now.

        One figure for the whole sweep, so that one ranks the trials: a space that changes it (``balance`` searched
        without a fixed ``--best-by``, or ``best_by`` itself) would rank a trial by accuracy beside one by balanced
        accuracy, and is refused. A set ``objective`` must be that figure (the trials' best.pt judge it).

        Raises:
            CnnlabError: a value TrainConfig refuses, trials that would judge different figures, or an objective
                that is not theirs.
        """
        make_config(self.model, self.recipe, **self.overrides)
        space = self.space()
        for param in space:
            for value in param.extremes():
                make_config(self.model, value if param.name == "recipe" else self.recipe, **self.overrides,
                            **({} if param.name == "recipe" else {param.name: value}))
        # TrainConfig resolves best_by from best_by and balance, and a recipe may set either: every combination of
        # the choices searched among them is some trial's (these fields are strings: only choice: searches them)
        deciding = [p for p in space if p.name in _DECIDE_THE_FIGURE]
        figures: dict[str, str] = {}
        for values in itertools.product(*(p.choices for p in deciding)):
            settings = dict(zip((p.name for p in deciding), values, strict=True))
            where = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the fixed settings"
            recipe = settings.pop("recipe", self.recipe)
            figures.setdefault(make_config(self.model, recipe, **self.overrides, **settings).best_by, where)
        if len(figures) > 1:
            shown = ", ".join(f"{JUDGED[f][0]} with {where}" for f, where in figures.items())
            raise CnnlabError(f"the trials would judge different figures ({shown}: a run's best.pt judges --best-by, "
                              f"whose default --balance sets), and one figure must rank them; expected --best-by "
                              f"{' or --best-by '.join(sorted(figures))} fixed for every trial")
        figure = next(iter(figures))
        if self.objective is not None and self.objective != figure:
            raise CnnlabError(f"objective {self.objective!r} is not the figure the trials' runs judge ({figure}, "
                              f"their --best-by); expected {figure}, or --best-by {self.objective} fixed")
        return figure


def command_line(spec: SweepSpec, values: dict[str, Any], out: str | Path | None = None) -> str:
    """The ``cnnlab train`` command that repeats one trial."""
    settings = {**spec.overrides, **values}
    parts = ["cnnlab", "train", spec.model, "--recipe", str(settings.pop("recipe", spec.recipe))]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, str(value)]  # repr-exact floats: the command repeats the trial, not a rounding of it
    if out is not None:
        parts += ["--out", str(out)]
    return shlex.join(parts)
