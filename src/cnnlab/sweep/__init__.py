"""`cnnlab sweep`: hyper-parameter search on Optuna, every trial a normal run folder.

A sweep is an Optuna study whose objective trains one run (``cnnlab.train.train``) and returns its best
validation figure, the one the run's best.pt judges (``--best-by``: the balanced accuracy under ``--balance``, else
the accuracy; one for every trial, named ``val_acc`` or ``val_bal_acc`` in its lines and summary); after every epoch
the figure is reported to a pruner, which may stop the run early. The
study lives in a database: SQLite in the sweep folder by default, or any URL Optuna takes (``postgresql://...``)
so that workers on several machines can join one study. The sweep's settings are stored in the study itself, so
``cnnlab sweep --study NAME --storage URL`` on another machine needs nothing else.

The package, in the order a sweep uses it: ``space`` (what is searched: Param, SweepSpec), ``storage`` (the
database), ``study`` (the Optuna study and its trials' states), ``trial`` (the objective: one run folder),
``workers`` (processes running trials), ``summary`` (the outcome and its plots); :func:`sweep` ties them together.

Faults, and what happens:

- a trial that raises or trains into NaN is recorded as failed (the error in its ``error`` attribute and in its
  run folder's result.json) and the sweep goes on;
- Ctrl-C (SIGINT/SIGTERM): running trials checkpoint and stop; the next ``cnnlab sweep --study NAME`` enqueues
  each again with the same parameters and resumes its run folder from ``last.pt``;
- a worker killed outright stops beating its heartbeat; another worker marks its trial failed after the grace
  period (three heartbeats), and waits for that before calling the sweep finished; a worker only paused that long
  finds its trial failed when it ends, says so in one line and goes on; a trial whose worker stopped before it
  began (Optuna marks it running first, and has no heartbeat to go stale) is failed after the same grace period;
- the database going away ends the worker with one line saying so; what the database had recorded stays there,
  and every trial's run folder and ``trial.json`` stay on disk.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from cnnlab.checks import number, positive_int
from cnnlab.data.folder import refuse_writing_into
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.io import atomic_write, missing_folders, remove_made_folders
from cnnlab.sweep.space import KINDS, LOCAL, PRUNERS, Param, SweepSpec, command_line, parse_param
from cnnlab.sweep.storage import (
    PSYCOPG_URL,
    StorageLost,
    database_failure,
    db_errors,
    first_line,
    open_storage,
    shown,
    storage_url,
)
from cnnlab.sweep.study import SPEC_ATTR, enqueue_interrupted, load_study, progress
from cnnlab.sweep.summary import format_summary, summarize
from cnnlab.sweep.trial import TrialFailed, run_trial
from cnnlab.sweep.workers import Worker, run_workers, sigterm_as_ctrl_c, threads_per_job, work
from cnnlab.train.config import JUDGED

__all__ = ["KINDS", "LOCAL", "PRUNERS", "SPEC_ATTR", "Param", "StorageLost", "SweepSpec", "TrialFailed", "Worker",
           "command_line", "database_failure", "db_errors", "enqueue_interrupted", "format_summary", "load_study",
           "open_storage", "parse_param", "progress", "run_trial", "run_workers", "storage_url", "summarize",
           "sweep", "threads_per_job", "work"]


# The study a sweep folder belongs to: its trials' run folders are numbered per study (trials/0000, ...), so a
# second study there would write into the first one's.
STUDY_MARKER = "study.txt"


def _check_folder_is_the_studys(sweep_dir: Path, study: str) -> None:
    """Refuse a sweep folder of another study, or a run folder, before anything is written."""
    if (sweep_dir / "config.json").is_file() or (sweep_dir / "last.pt").is_file():
        raise CnnlabError(f"--out {sweep_dir} is a run folder; expected a sweep folder (a new one, or an existing "
                          "sweep's)")
    marker = sweep_dir / STUDY_MARKER
    owner = marker.read_text(encoding="utf-8").strip() if marker.is_file() else study
    if owner != study:
        raise CnnlabError(f"sweep folder {sweep_dir} holds study {owner!r}, whose trials' run folders a second "
                          f"study would write over; expected --study {owner} to continue or join it, or another "
                          f"--out for study {study!r}")


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
    try:
        import optuna
        if storage is not None and storage_url(storage, Path()).startswith(PSYCOPG_URL):
            import psycopg  # noqa: F401  (Optuna would say only "Failed to import DB access module")
    except ImportError as e:  # optuna and psycopg are the sweep extra, not dependencies
        raise CnnlabError(f"cnnlab sweep needs the sweep extra (pip install \"cnnlab[sweep]\"), missing "
                          f"{e.name or 'optuna'}") from None

    positive_int(jobs, "--jobs")
    number(heartbeat, "--heartbeat", low=0, low_open=True, expected="a number of seconds > 0")
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
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise CnnlabError(f"--out {sweep_dir} is a file; expected a sweep folder (a new one, or an existing sweep's)")
    unknown = sorted(set(local or {}) - set(LOCAL))
    if unknown:
        raise CnnlabError(f"a joining machine sets only {', '.join(LOCAL)} for itself; got {', '.join(unknown)}")
    _check_folder_is_the_studys(sweep_dir, study)
    if spec is not None:  # a joining worker's settings are read from the study below, before any trial
        refuse_writing_into(spec.overrides.get("dataset", ""), sweep_dir, "--out" if out else "the sweep folder")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    hint = f"cnnlab sweep --study {study} --out {sweep_dir}" + (f" --storage {shown(storage)}" if storage else "")
    try:
        # SIGTERM takes Ctrl-C's path at any moment from here to the summary: in a trial, between trials, in the
        # workers, and also while the study opens and in the summary, where it ended the process without a word
        with sigterm_as_ctrl_c():
            return _open_and_run(spec, study, storage, sweep_dir, out is not None, jobs, heartbeat, local, hint)
    except (Interrupted, KeyboardInterrupt) as e:
        raise Interrupted(getattr(e, "signum", 2), f"sweep interrupted; the running trials checkpointed. Resume "
                                                   f"with: {hint}") from None


def _open_and_run(spec: SweepSpec | None, study: str, storage: str | None, sweep_dir: Path, out_given: bool,
                  jobs: int, heartbeat: float, local: dict[str, Any] | None, hint: str) -> dict[str, Any]:
    """:func:`sweep` from the sweep folder's making to the summary, once its arguments are checked."""
    joining = spec is None  # the settings are read from the study
    made = missing_folders(sweep_dir)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only file system
        raise CnnlabError(f"cannot make the sweep folder {sweep_dir}: {e.strerror or e}") from None
    url = storage_url(storage, sweep_dir)
    try:
        handle = open_storage(url, heartbeat)
        try:
            asked = spec.objective if spec is not None else None
            study_obj, spec = load_study(handle, study, spec)
            if joining:  # the settings read from the study are held to the folder too
                refuse_writing_into(spec.overrides.get("dataset", ""), sweep_dir,
                                    "--out" if out_given else "the sweep folder")
            held = len(study_obj.get_trials(deepcopy=False))
            again = enqueue_interrupted(study_obj)
        except db_errors() as e:
            raise StorageLost(f"the study database {shown(url)} does not answer: {first_line(e)}") from None
    except CnnlabError:  # refused before any trial ran: the sweep folder made for it goes again (and its study.db)
        remove_made_folders(made, own=() if storage else ("study.db",))
        raise
    if not (sweep_dir / STUDY_MARKER).is_file():
        atomic_write(sweep_dir / STUDY_MARKER, lambda tmp: Path(tmp).write_text(study + "\n", encoding="utf-8"))
    if asked is not None and asked != spec.objective:  # the same settings: a study from before the objective
        print(f"study {study} judges its trials by {JUDGED[spec.objective][0]}, as it began (it was started before "
              f"sweeps judged the figure their runs' best.pt judges, {JUDGED[asked][0]} here)", flush=True)
    if again:
        print(f"resuming interrupted trial(s) {', '.join(map(str, again))}", flush=True)
    worker = Worker(url, study, str(sweep_dir.resolve()), threads_per_job(jobs), heartbeat, local=dict(local or {}),
                    held=held)
    codes = [0]
    if jobs == 1:
        work(worker)
    else:
        codes = run_workers(worker, jobs)
    stopped = [c - 128 for c in codes if c in (130, 143)]  # a worker signalled alone
    if stopped:
        raise Interrupted(stopped[0], "a worker was signalled")  # said by sweep, with the resume line
    if 3 in codes:
        raise StorageLost(f"the study database {shown(url)} went away during the sweep; what it recorded is kept. "
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
        raise StorageLost(f"the study database {shown(url)} went away before the summary; what it recorded is "
                          f"kept. Continue with: {hint}") from None
