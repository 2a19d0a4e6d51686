"""`cnnlab sweep`: hyper-parameter search on Optuna, every trial a normal run folder.

A sweep is an Optuna study whose objective trains one run (``cnnlab.train.train``) and returns its best
validation accuracy; after every epoch the accuracy is reported to a pruner, which may stop the run early. The
study lives in a database: SQLite in the sweep folder by default, or any URL Optuna takes (``postgresql://...``)
so that workers on several machines can join one study. The sweep's settings are stored in the study itself, so
``cnnlab sweep --study NAME --storage URL`` on another machine needs nothing else.

Faults, and what happens:

- a trial that raises or trains into NaN is recorded as failed (the error in its ``error`` attribute and in its
  run folder's result.json) and the sweep goes on;
- Ctrl-C (SIGINT/SIGTERM): running trials checkpoint and stop; the next ``cnnlab sweep --study NAME`` enqueues
  each again with the same parameters and resumes its run folder from ``last.pt``;
- a worker killed outright stops beating its heartbeat; another worker marks its trial failed after the grace
  period (three heartbeats), and waits for that before calling the sweep finished;
- the database going away ends the worker with one line saying so; what the database had recorded stays there,
  and every trial's run folder and ``trial.json`` stay on disk.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import sys
import time
import typing
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, Interrupted, StopRun

KINDS = ("loguniform", "uniform", "int", "intlog", "choice")
PRUNERS = ("median", "hyperband", "none")
SPEC_ATTR = "cnnlab_sweep"
# Fields a sweep cannot search: they name where things go, or (val_split, dataset) what is measured.
_NOT_SEARCHABLE = ("model", "out", "data_dir", "device", "val_split", "dataset")
# Fields each machine sets for itself: where its data is and what it trains on; not part of the shared settings.
LOCAL = ("data_dir", "device")


class StorageLost(CnnlabError):
    """The study's database stopped answering (or never did)."""


class TrialFailed(Exception):
    """A trial's run raised or produced no finite accuracy; Optuna records it as failed and the sweep goes on."""


# ------------------------------------------------------------------------------------------ search space
def _field_types() -> dict[str, type]:
    """TrainConfig field name -> its value type (``float`` for ``float | None``)."""
    from cnnlab.train.config import TrainConfig

    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types[name] = args[0] if args else hint
    return types


def _convert(name: str, kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
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
    types = _field_types()
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
            raise CnnlabError(f"--param {name}: every choice must be a {ftype.__name__}; got {args!r}") from None
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


# ------------------------------------------------------------------------------------------- the settings
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
        allow_test_objective: tune on the test set when no ``val_split`` is set (the book validates on it).
        seed: the sampler's seed (each worker adds its index), None for a fresh one.
        report: write report.html in every trial's run folder.
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

    def space(self) -> list[Param]:
        return [parse_param(p) for p in self.params]

    def check(self) -> SweepSpec:
        """Refuse a sweep that could not run, before any trial starts (one-line CnnlabError)."""
        from cnnlab.train.config import make_config

        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise CnnlabError(f"--trials must be a positive integer, got {self.trials!r}")
        if self.pruner not in PRUNERS:
            raise CnnlabError(f"--pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}")
        space = self.space()
        if not space:
            raise CnnlabError("expected at least one --param NAME=KIND:ARGS to search, got none")
        names = [p.name for p in space]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(self.overrides)))
        if clash:
            raise CnnlabError(f"{', '.join(clash)} given twice (searched and fixed, or searched twice); expected once")
        if self.overrides.get("val_split") is None and not self.allow_test_objective:
            raise CnnlabError("a sweep tunes on a validation split, never on the test set: expected --val-split "
                              "(e.g. 0.1 or 5000), or --allow-test-objective to tune on the test set as the book's "
                              "exercises do")
        make_config(self.model, self.recipe, **self.overrides)
        for param in space:  # each bound and choice through TrainConfig's own checks: a value it refuses fails now
            for value in param.extremes():
                make_config(self.model, value if param.name == "recipe" else self.recipe, **self.overrides,
                            **({} if param.name == "recipe" else {param.name: value}))
        return self


def command_line(spec: SweepSpec, values: dict[str, Any], out: str | Path | None = None) -> str:
    """The ``cnnlab train`` command that repeats one trial."""
    import shlex

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


# ---------------------------------------------------------------------------------------------- storage
def storage_url(url: str | None, sweep_dir: Path) -> str:
    """The database URL: SQLite in the sweep folder by default; ``postgresql://`` uses the psycopg driver."""
    if url is None:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    for plain in ("postgresql://", "postgres://"):  # SQLAlchemy's default PostgreSQL driver is psycopg2, not ours
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: Optuna will say so
        return url


def db_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a lost or unreachable database raises through Optuna."""
    import optuna
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError


def database_failure(error: BaseException) -> BaseException | None:
    """The database error behind ``error``, if one is in its chain of causes, else None.

    Optuna does not always pass the database's error on: when recording a trial's end fails, the trial still
    looks running to it and it raises ``AssertionError("Should not reach.")`` with the real error as context.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, db_errors()):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def open_storage(url: str, heartbeat: float):
    """An Optuna RDBStorage with a heartbeat, so that a killed worker's trial is failed after ``3 * heartbeat``.

    Raises:
        StorageLost: the database cannot be reached or opened.
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several workers on one file: wait for SQLite's lock instead of failing at once
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    interval = max(1, round(heartbeat))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental"
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=interval,
                                              grace_period=3 * interval)
    except db_errors() as e:
        raise StorageLost(f"cannot open the study database {_shown(url)}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    return " ".join(str(cause).split("\n")[0].split())[:300]


# ------------------------------------------------------------------------------------------ one trial
def _trial_record(trial, state: str, **extra: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": state, "params": dict(trial.params), **extra}


def _pre_report(trial, run_dir: Path) -> None:
    """A resumed trial reports the epochs its run already has, so the pruner sees the whole curve."""
    from cnnlab.io import read_metrics_csv

    if (run_dir / "metrics.csv").is_file():
        for row in read_metrics_csv(run_dir / "metrics.csv"):
            trial.report(row["val_acc"], int(row["epoch"]))


def run_trial(trial, spec: SweepSpec, sweep_dir: Path) -> float:
    """The objective: train one run folder for ``trial``; returns its best validation accuracy."""
    import optuna

    from cnnlab.io import write_json
    from cnnlab.train import resume, train

    values = {p.name: p.suggest(trial) for p in spec.space()}
    resume_of = trial.user_attrs.get("resume_of")
    host = socket.gethostname()
    earlier = trial.user_attrs.get("run_dir")
    run_dir = Path(earlier) if earlier and trial.user_attrs.get("host") == host \
        else (sweep_dir / "trials" / f"{trial.number:04d}").resolve()
    for key, value in (("run_dir", str(run_dir)), ("host", host), ("pid", os.getpid()),
                       ("command", command_line(spec, values, run_dir))):
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
            history = resume(run_dir, **common) or []
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


# ------------------------------------------------------------------------------------------- the study
def _is_interrupted(t) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.FAIL and bool(t.user_attrs.get("interrupted"))


def enqueue_interrupted(study) -> list[int]:
    """Enqueue every interrupted trial not yet enqueued again, with its parameters and run folder."""
    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get("resume_of") for t in trials}
    again = []
    for t in trials:
        if _is_interrupted(t) and t.number not in taken:
            attrs = {"resume_of": t.number, **{k: t.user_attrs[k] for k in ("run_dir", "host") if k in t.user_attrs}}
            study.enqueue_trial(dict(t.params), user_attrs=attrs, skip_if_exists=False)
            again.append(t.number)
    return again


def progress(study) -> dict[str, int]:
    """Trials by state; ``counted`` are those toward ``--trials`` (interrupted ones are replaced by their resume)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "interrupted" if _is_interrupted(t) else {"FAIL": "failed"}.get(t.state.name, t.state.name.lower())
        counts[key] = counts.get(key, 0) + 1
    counts["counted"] = sum(v for k, v in counts.items() if k != "interrupted")
    return counts


def _pruner(spec: SweepSpec):
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.overrides.get("epochs") or "auto")
    return optuna.pruners.NopPruner()


def load_study(storage, name: str, spec: SweepSpec | None, worker: int = 0):
    """The study ``name`` with its stored spec, created from ``spec`` when it does not exist yet.

    Raises:
        CnnlabError: no such study and no spec to start it, or a spec that differs from the stored one.
    """
    import optuna

    stored = None
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        stored = SweepSpec(**study.user_attrs[SPEC_ATTR]) if SPEC_ATTR in study.user_attrs else None
        if stored is None:
            raise CnnlabError(f"study {name!r} was not made by cnnlab sweep (it has no {SPEC_ATTR} settings)")
        if spec is not None and _shared(spec) != _shared(stored):
            diff = sorted(k for k, v in _shared(spec).items() if _shared(stored)[k] != v)
            raise CnnlabError(f"study {name!r} exists with other settings ({', '.join(diff)}); expected the same, "
                              f"or only --study {name} to join it, or a new --study name")
    elif spec is None:
        raise CnnlabError(f"no study {name!r} in {_shown(storage.url) if hasattr(storage, 'url') else storage}: "
                          "give MODEL and --param to start it")
    spec = stored or spec
    sampler = optuna.samplers.TPESampler(seed=None if spec.seed is None else spec.seed + worker, constant_liar=True)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                pruner=_pruner(spec), load_if_exists=True)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, asdict(spec))
    return study, spec


def _shared(spec: SweepSpec) -> dict[str, Any]:
    """The settings every machine must agree on (all but the LOCAL fields)."""
    values = asdict(spec)
    values["overrides"] = {k: v for k, v in spec.overrides.items() if k not in LOCAL}
    return values


@dataclass
class Worker:
    """Everything a worker process needs (picklable for the spawn start method).

    ``local`` holds this machine's own LOCAL fields (``--data-dir``, ``--device``), over the stored ones.
    """

    url: str
    name: str
    sweep_dir: str
    threads: int
    heartbeat: float
    index: int = 0
    local: dict[str, Any] = field(default_factory=dict)


def _log_trial(study, trial) -> None:
    from optuna.trial import TrialState

    what = {TrialState.COMPLETE: f"val_acc {trial.value:.4f}" if trial.value is not None else "complete",
            TrialState.PRUNED: f"pruned after epoch {trial.last_step}",
            TrialState.FAIL: f"failed: {trial.user_attrs.get('error', 'its worker stopped')}"}
    params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    print(f"trial {trial.number}: {what.get(trial.state, trial.state.name.lower())}  {params}", flush=True)


def work(worker: Worker) -> None:
    """Run trials of the study until ``trials`` are counted and none is left running (see the module's faults)."""
    import optuna
    import torch
    from optuna.storages import fail_stale_trials

    torch.set_num_threads(worker.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line of ours, not Optuna's traceback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(worker.url, worker.heartbeat)
    try:
        study, spec = load_study(storage, worker.name, None, worker.index)
        spec.overrides = {**spec.overrides, **worker.local}
        while True:
            fail_stale_trials(study)
            counts = progress(study)
            if counts.get("waiting") or counts["counted"] < spec.trials:
                study.optimize(lambda t: run_trial(t, spec, Path(worker.sweep_dir)), n_trials=1,
                               catch=(TrialFailed,), callbacks=[_log_trial])
            elif counts.get("running"):  # another worker's trial: wait until it ends or its heartbeat goes stale
                time.sleep(worker.heartbeat)
            else:
                return
    except Exception as e:
        lost = database_failure(e)
        if lost is None:
            raise
        raise StorageLost(f"the study database {_shown(worker.url)} stopped answering ({_first_line(lost)}); what "
                          f"it recorded is kept, and so are the run folders in {worker.sweep_dir}; run the same "
                          f"command again once it is back") from None


def _worker_main(worker: Worker) -> None:
    """A worker process: exit 0 when the study is done, 130 on a signal, 3 when the database is lost."""
    try:
        work(worker)
    except Interrupted as e:
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        sys.exit(130)
    except CnnlabError as e:
        print(f"cnnlab sweep: worker {worker.index}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(3 if isinstance(e, StorageLost) else 2)


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` trials at once: the cores split between them.

    An explicit ``OMP_NUM_THREADS`` caps it: on a CPU shared with other work, idle OpenMP threads spin while they
    wait and one thread is faster (README, "Development").
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    share = max(1, cores // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(cap)) if cap.isdigit() and int(cap) > 0 else share


def run_workers(worker: Worker, jobs: int) -> list[int]:
    """Run ``jobs`` worker processes (spawned: torch and fork do not mix) and wait; returns their exit codes.

    Ctrl-C reaches the workers (the terminal signals the whole process group, and it is passed on to them here
    too): each checkpoints its trial and stops, and this waits for them.
    """
    import signal

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(Worker(**{**asdict(worker), "index": i}),), daemon=False)
             for i in range(jobs)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        try:
            for p in procs:
                p.join(timeout=0.5)
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
    return [p.exitcode for p in procs]


def sweep(spec: SweepSpec | None, *, study: str | None = None, storage: str | None = None,
          out: str | Path | None = None, jobs: int = 1, heartbeat: float = 10.0,
          local: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start, join or resume a sweep and run it to the end; returns the summary (see :func:`summarize`).

    Args:
        spec: the sweep's settings; None to join (or resume) the existing study ``study``.
        study: the study's name (default: ``MODEL-TIME``).
        storage: a database URL Optuna accepts (default: SQLite ``study.db`` in the sweep folder).
        out: the sweep folder, for the trials' run folders, plots and summary (default: ``sweeps/STUDY``).
        jobs: trials run at once on this machine, each in its own process with ``cores // jobs`` torch threads.
        heartbeat: seconds between a running trial's heartbeats.
        local: this machine's ``data_dir`` and ``device`` when it joins a study (default: the stored ones).

    Raises:
        Interrupted: a signal stopped the sweep (the trials checkpointed; the same call resumes it).
        StorageLost: the database is unreachable or went away.
    """
    import optuna

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise CnnlabError(f"--jobs must be a positive integer, got {jobs!r}")
    if not heartbeat > 0:
        raise CnnlabError(f"--heartbeat must be a number of seconds > 0, got {heartbeat!r}")
    if spec is not None:
        spec.check()
    if study is None:
        if spec is None:
            raise CnnlabError("expected a MODEL and --param to start a sweep, or --study NAME to join one; got neither")
        study = f"{spec.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = Path(out) if out else Path("sweeps") / study
    if storage is None and spec is None and not (sweep_dir / "study.db").is_file():
        raise CnnlabError(f"no sweep folder {sweep_dir} with a study.db: expected --out of an existing sweep, "
                          "or --storage URL, or MODEL and --param to start one")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage, sweep_dir)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    handle = open_storage(url, heartbeat)
    try:
        study_obj, spec = load_study(handle, study, spec)
        again = enqueue_interrupted(study_obj)
    except db_errors() as e:
        raise StorageLost(f"the study database {_shown(url)} does not answer: {_first_line(e)}") from None
    if again:
        print(f"resuming interrupted trial(s) {', '.join(map(str, again))}", flush=True)
    unknown = sorted(set(local or {}) - set(LOCAL))
    if unknown:
        raise CnnlabError(f"a joining machine sets only {', '.join(LOCAL)} for itself; got {', '.join(unknown)}")
    worker = Worker(url, study, str(sweep_dir.resolve()), threads_per_job(jobs), heartbeat, local=dict(local or {}))
    hint = f"cnnlab sweep --study {study} --out {sweep_dir}" + (f" --storage {_shown(storage)}" if storage else "")
    codes = [0]
    try:
        if jobs == 1:
            work(worker)
        else:
            codes = run_workers(worker, jobs)
    except (Interrupted, KeyboardInterrupt) as e:
        raise Interrupted(getattr(e, "signum", 2), f"sweep interrupted; the running trials checkpointed. Resume "
                                                   f"with: {hint}") from None
    if any(c in (130, 143) for c in codes):
        raise Interrupted(2, f"sweep interrupted; the running trials checkpointed. Resume with: {hint}")
    if 3 in codes:
        raise StorageLost(f"the study database {_shown(url)} went away during the sweep; what it recorded is kept. "
                          f"Continue with: {hint}")
    for i, code in enumerate(codes):
        if code:
            print(f"cnnlab sweep: warning: worker {i} ended with exit code {code}; its trial is marked failed once "
                  f"its heartbeat is stale", file=sys.stderr, flush=True)
    try:
        return summarize(study_obj, spec, sweep_dir)
    except Exception as e:
        if database_failure(e) is None:
            raise
        raise StorageLost(f"the study database {_shown(url)} went away before the summary; what it recorded is "
                          f"kept. Continue with: {hint}") from None


# ------------------------------------------------------------------------------------------- the result
def _save_plot(plot, study, path: Path, notes: list[str]) -> None:
    from cnnlab.io import save_figure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        save_figure(figure, path)
    except Exception as e:  # e.g. importance needs two finished trials that differ in some parameter
        notes.append(f"{path.name} not drawn: {_first_line(e)}")


def summarize(study, spec: SweepSpec, sweep_dir: Path) -> dict[str, Any]:
    """The sweep's outcome: trials by state, the best trial with its command line, and the plots.

    Writes ``summary.json``, ``importance.png`` (each parameter's share of the accuracy's variance, Optuna's
    fANOVA) and ``parallel.png`` (parallel coordinates of the trials' values) into ``sweep_dir``.
    """
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_parallel_coordinate, plot_param_importances

    from cnnlab.io import write_json

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict[str, Any] = {"study": study.study_name, "model": spec.model, "trials": progress(study),
                               "best": None, "importance": None, "plots": [], "notes": []}
    if complete:
        best = max(complete, key=lambda t: t.value)
        summary["best"] = {"number": best.number, "val_acc": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir"), "host": best.user_attrs.get("host"),
                           "command": command_line(spec, best.params)}
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "importances will be equal" when every trial is alike
                summary["importance"] = get_param_importances(study)
        except Exception as e:
            summary["notes"].append(f"no parameter importance: {_first_line(e)}")
        for plot, name in ((plot_param_importances, "importance.png"), (plot_parallel_coordinate, "parallel.png")):
            _save_plot(plot, study, sweep_dir / name, summary["notes"])
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
        lines += [f"best: trial {best['number']}, val_acc {best['val_acc']:.4f} ({params})",
                  f"  run folder: {best['run_dir']}" + (f" on {best['host']}" if best.get("host") else ""),
                  f"  repeat it with: {best['command']}"]
    if summary["importance"]:
        lines.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importance"].items()))
    lines += [f"plot: {p}" for p in summary["plots"]] + [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)
