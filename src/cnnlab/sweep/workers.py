"""The sweep's workers: each runs trials of the study until enough are counted and none is left running.

One worker runs in the calling process; ``--jobs N`` starts N worker processes (spawned: torch and fork do not
mix), each with its share of the cores as torch threads. A worker process finds its entry point,
``cnnlab.sweep.workers._worker_main``, by this module's path.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.io import file_names_written
from cnnlab.sweep.storage import StorageLost, database_failure, first_line, grace_period, open_storage, shown
from cnnlab.sweep.study import fail_orphaned_trials, load_study, progress
from cnnlab.sweep.trial import TrialFailed, run_trial
from cnnlab.train.spawn import cores
from cnnlab.train.state import install_stop_handlers, restore_handlers


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where Ctrl-C raises KeyboardInterrupt, so that it takes Ctrl-C's path through a sweep: the
    running trial marked interrupted (the next sweep resumes it), the workers told, the one resume line. A training
    loop answers SIGTERM itself (a checkpoint, then :class:`~cnnlab.errors.Interrupted`)."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in this block; off the main thread, signals are not ours to take."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    held: int = 0  # trials the study held when this sweep began (its samplers' seeds: load_study)


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` trials at once: the cores split between them.

    An explicit ``OMP_NUM_THREADS`` caps it: on a CPU shared with other work, idle OpenMP threads spin while they
    wait and one thread is faster (README, "Development").
    """
    share = max(1, cores() // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(cap)) if cap.isdigit() and int(cap) > 0 else share


def _log_trial(key: str, study, trial) -> None:
    """The trial's line: its value named as the figure ``key`` it is (the sweep's objective)."""
    from optuna.trial import TrialState

    what = {TrialState.COMPLETE: f"{key} {trial.value:.4f}" if trial.value is not None else "complete",
            TrialState.PRUNED: f"pruned after epoch {trial.last_step}",
            TrialState.FAIL: f"failed: {trial.user_attrs.get('error', 'its worker stopped')}"}
    params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    print(f"trial {trial.number}: {what.get(trial.state, trial.state.name.lower())}  {params}", flush=True)


def _run_one_trial(study, spec, worker: Worker) -> None:
    """One trial through Optuna; one that another worker failed meanwhile (its heartbeat late) is said and left."""
    from optuna.trial import TrialState

    started = []

    def objective(trial):
        started.append(trial)
        return run_trial(trial, spec, Path(worker.sweep_dir))

    try:
        study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                       callbacks=[functools.partial(_log_trial, spec.judged()[0])])
    except (ValueError, AssertionError):  # Optuna cannot record the end of a trial that has ended meanwhile
        if not started:  # (ValueError, or "Should not reach." when the objective returned a value)
            raise
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == started[0].number)
        if trial.state != TrialState.FAIL:
            raise
        print(f"cnnlab sweep: worker {worker.index}: trial {trial.number} was marked failed by another worker while "
              f"this one ran it (its heartbeat was over {grace_period(worker.heartbeat)} s late: was the "
              f"machine paused or overloaded?); its run folder {trial.user_attrs.get('run_dir')} is kept",
              file=sys.stderr, flush=True)


def work(worker: Worker) -> None:
    """Run trials of the study until ``trials`` are counted and none is left running (see cnnlab.sweep's faults)."""
    import optuna
    import torch
    from optuna.storages import fail_stale_trials

    torch.set_num_threads(worker.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line of ours, not Optuna's traceback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(worker.url, worker.heartbeat)
    try:
        study, spec = load_study(storage, worker.name, None, worker.index, worker.held)
        spec.overrides = {**spec.overrides, **worker.local}
        while True:
            fail_stale_trials(study)
            for number in fail_orphaned_trials(study, grace_period(worker.heartbeat)):
                print(f"trial {number}: failed: its worker stopped before the trial began", flush=True)
            counts = progress(study)
            if counts.get("waiting") or counts["counted"] < spec.trials:
                _run_one_trial(study, spec, worker)
            elif counts.get("running"):  # another worker's trial: wait until it ends or its heartbeat goes stale
                time.sleep(worker.heartbeat)
            else:
                return
    except Exception as e:
        lost = database_failure(e)
        if lost is None:
            raise
        raise StorageLost(f"the study database {shown(worker.url)} stopped answering ({first_line(lost)}); what "
                          f"it recorded is kept, and so are the run folders in {worker.sweep_dir}; run the same "
                          f"command again once it is back") from None


def _worker_main(worker: Worker) -> None:
    """A worker process: exit 0 when the study is done, 128 + the signal on one, 3 when the database is lost."""
    try:
        with sigterm_as_ctrl_c(), file_names_written():  # a spawned process's streams are its own, not the CLI's
            work(worker)
    except Interrupted as e:
        sys.exit(128 + e.signum)
    except KeyboardInterrupt as e:
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))
    except CnnlabError as e:
        print(f"cnnlab sweep: worker {worker.index}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(3 if isinstance(e, StorageLost) else 2)


def run_workers(worker: Worker, jobs: int) -> list[int]:
    """Run ``jobs`` worker processes (spawned: torch and fork do not mix) and wait; returns their exit codes.

    Ctrl-C and SIGTERM reach the workers (the terminal signals the whole process group, and a signal raised here as
    KeyboardInterrupt, or :class:`Terminated` under :func:`sigterm_as_ctrl_c`, is passed on to them): each
    checkpoints its trial and stops; this waits for them, then raises it again.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(Worker(**{**asdict(worker), "index": i}),), daemon=False)
             for i in range(jobs)]
    # A signal while the workers start is held until all have started, so that it is passed on to every one (a
    # worker being started when it came would not be told, and would run its trials alone)
    pending: list[int] = []
    previous = install_stop_handlers(pending.append)
    try:
        for p in procs:
            p.start()
    finally:
        restore_handlers(previous)
    stop: KeyboardInterrupt | None = None
    while True:
        try:
            if pending:  # now to the handler it was held from
                signum = pending[0]
                pending.clear()
                signal.raise_signal(signum)
            for p in procs:
                p.join(timeout=0.5)
            if not any(p.is_alive() for p in procs):
                break
        except KeyboardInterrupt as e:
            stop = e
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, getattr(e, "signum", signal.SIGINT))
    if stop is not None:
        raise stop
    return [p.exitcode for p in procs]
