"""The Optuna study behind a sweep: created from a SweepSpec or loaded with the one stored in it, its trials
counted, interrupted trials enqueued again to resume their run folders, and trials that never began failed."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.sweep.space import LOCAL, SweepSpec
from cnnlab.sweep.storage import shown
from cnnlab.train.config import BEFORE_THE_SETTING

SPEC_ATTR = "cnnlab_sweep"


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


def fail_orphaned_trials(study, grace: float) -> list[int]:
    """Fail the running trials whose worker stopped before the trial began; returns their numbers.

    Optuna marks a trial running before its worker's heartbeat starts, and its stale check passes over a running
    trial that has no heartbeat yet. A worker killed, or cut off from the database, in between leaves a trial that
    nothing would ever fail, and every worker waits for it. The objective (:func:`cnnlab.sweep.trial.run_trial`)
    records its worker's ``pid`` first thing, so a running trial without one that started over ``grace`` seconds
    ago never began. Optuna stores the start in the starting machine's local time: a machine whose clock is behind
    this one's is only waited for longer.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now, failed = datetime.now(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "pid" in t.user_attrs or t.datetime_start is None or (now - t.datetime_start).total_seconds() <= grace:
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except UpdateFinishedTrialError:  # another worker failed it first
            continue
        failed.append(t.number)
    return failed


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


def _sampler_seed(seed: int | None, worker: int, held: int) -> int | None:
    """The seed of worker ``worker``'s sampler in a sweep that began with ``held`` trials in the study.

    A sampler seeded as another was draws the same points (Optuna's ``BaseSampler.reseed_rng`` says so of its
    threads): seeded again as the first sweep's, a resumed or joined study tried its first points again. A sweep
    that drew any point left a trial for it, so the next one holds more; mixing that count in (numpy's SeedSequence)
    gives every sweep of a study its own streams, while a new study keeps ``seed + worker`` and its points.
    """
    if seed is None:
        return None
    if held == 0:
        return seed + worker
    return int(np.random.SeedSequence((seed, held, worker)).generate_state(1)[0])


def load_study(storage, name: str, spec: SweepSpec | None, worker: int = 0, held: int = 0):
    """The study ``name`` with its stored spec, created from ``spec`` when it does not exist yet; ``worker`` and
    ``held`` (the trials the study held when this sweep began) make its sampler's seed (:func:`_sampler_seed`).

    Raises:
        CnnlabError: no such study and no spec to start it, or a spec that differs from the stored one.
    """
    import optuna

    stored = None
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        # A study stored before sweeps judged their runs' own figure judged accuracy: it goes on as it began
        stored = SweepSpec(**{"objective": BEFORE_THE_SETTING["best_by"], **study.user_attrs[SPEC_ATTR]}) \
            if SPEC_ATTR in study.user_attrs else None
        if stored is None:
            raise CnnlabError(f"study {name!r} was not made by cnnlab sweep (it has no {SPEC_ATTR} settings)")
        if spec is not None and _shared(spec) != _shared(stored):
            diff = sorted(k for k, v in _shared(spec).items() if _shared(stored)[k] != v)
            raise CnnlabError(f"study {name!r} exists with other settings ({', '.join(diff)}); expected the same, "
                              f"or only --study {name} to join it, or a new --study name")
    elif spec is None:
        raise CnnlabError(f"no study {name!r} in {shown(storage.url) if hasattr(storage, 'url') else storage}: "
                          "give MODEL and --param to start it")
    if stored is None and spec.objective is None:  # fixed once, as it is stored: every worker judges alike
        spec = replace(spec, objective=spec.trial_figure())
    spec = stored or spec
    sampler = optuna.samplers.TPESampler(seed=_sampler_seed(spec.seed, worker, held), constant_liar=True)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                pruner=_pruner(spec), load_if_exists=True)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, asdict(spec))
    return study, spec


def _shared(spec: SweepSpec) -> dict[str, Any]:
    """The settings every machine must agree on (all but the LOCAL fields; and the objective, which the others
    decide, and which a study stored before it existed keeps as it began)."""
    values = asdict(spec)
    values.pop("objective")
    values["overrides"] = {k: v for k, v in spec.overrides.items() if k not in LOCAL}
    return values
