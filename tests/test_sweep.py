"""`cnnlab sweep` on Optuna: the search space, the refusals, and real sweeps on SQLite and PostgreSQL.

The PostgreSQL tests need a server: `.ci/run` starts one on loopback and sets CNNLAB_TEST_POSTGRES; without a
reachable one they skip, except under CI=true, where they fail.
"""

import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from cnnlab.cli import build_parser, main
from cnnlab.compare import compare_runs, find_runs, load_run
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.runs import Run
from cnnlab.sweep import (
    SPEC_ATTR,
    Param,
    SweepSpec,
    TrialFailed,
    command_line,
    format_summary,
    load_study,
    open_storage,
    parse_param,
    storage_url,
    sweep,
)
from cnnlab.sweep.trial import run_trial
from cnnlab.train import make_config, train

# Tiny runs: a few seconds each. BN-LeNet-ReLU learns within 8 batches at lr 0.1 (and not at all at 1e-6).
TINY = dict(epochs=2, limit_train_batches=8, limit_val_batches=2, batch_size=64, val_split=1000)
SPACE = ["lr=loguniform:1e-6:1e4"]


def _spec(**changes) -> SweepSpec:
    values = dict(model="lenet-bn-relu", params=list(SPACE), trials=4, overrides=dict(TINY), startup_trials=1,
                  warmup_epochs=0, seed=0)
    values.update(changes)
    return SweepSpec(**values)


def _cli_flags(overrides: dict) -> list[str]:
    return [part for k, v in overrides.items() for part in (f"--{k.replace('_', '-')}", str(v))]


# ------------------------------------------------------------------------------------------ search space
@pytest.mark.parametrize("text, expected", [
    ("lr=loguniform:1e-3:1", Param("lr", "loguniform", 1e-3, 1.0)),
    ("momentum=uniform:0:0.99", Param("momentum", "uniform", 0.0, 0.99)),
    ("epochs=int:2:10", Param("epochs", "int", 2, 10)),
    ("batch-size=intlog:16:512", Param("batch_size", "intlog", 16, 512)),
    ("batch_size=choice:64,128,256", Param("batch_size", "choice", choices=(64, 128, 256))),
    ("optimizer=choice:sgd,adamw", Param("optimizer", "choice", choices=("sgd", "adamw"))),
    ("augment=choice:true,false", Param("augment", "choice", choices=(True, False))),
    ("augment=choice:none,trivial,randaugment", Param("augment", "choice", choices=("none", "trivial", "randaugment"))),
    ("weight_decay=choice:0,5e-4", Param("weight_decay", "choice", choices=(0.0, 5e-4))),
])
def test_param_kinds(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text, message", [
    ("lr", "--param must be NAME=KIND:ARGS"),
    ("lr=1e-3", "--param must be NAME=KIND:ARGS"),
    ("lr=normal:0:1", "--param must be NAME=KIND:ARGS"),
    ("lr=loguniform:", "--param must be NAME=KIND:ARGS"),
    ("lr=loguniform:1e-3", "expected loguniform:LOW:HIGH"),
    ("lr=loguniform:1:1e-3", "LOW < HIGH"),
    ("lr=loguniform:0:1", "a log scale needs LOW > 0"),
    ("lr=uniform:a:b", "expected uniform:LOW:HIGH with float bounds"),
    ("lr=uniform:0:inf", "expected uniform:LOW:HIGH"),
    ("epochs=int:1.5:3", "expected int:LOW:HIGH with int bounds"),
    ("epochs=uniform:1:3", "is a int field: expected choice:... or int:LOW:HIGH"),
    ("optimizer=int:1:2", "is a str field: expected choice:..."),
    ("batch_size=choice:64", "two or more different choices"),
    ("batch_size=choice:64,64", "two or more different choices"),
    ("batch_size=choice:64,big", "every choice must be an integer"),
    ("augment=choice:true,maybe",
     "every choice must be a preset (none, crop-flip, trivial, randaugment, autoaugment) or true or false"),
    ("tta=choice:true,maybe", "every choice must be true or false"),
    ("bogus=uniform:0:1", "bogus: not a TrainConfig field"),
    ("val_split=uniform:0.1:0.2", "val_split cannot be searched"),
    ("out=choice:a,b", "out cannot be searched"),
])
def test_malformed_params_get_one_line(text, message):
    with pytest.raises(CnnlabError, match=None) as info:
        parse_param(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_sweep_refuses_to_tune_on_the_test_set_unless_allowed():
    without = dict(TINY)
    del without["val_split"]
    with pytest.raises(CnnlabError, match="tunes on a validation split, never on the test set"):
        _spec(overrides=without).check()
    assert _spec(overrides=without, allow_test_objective=True).check()


def test_a_folder_with_its_own_val_folder_is_tuned_on_it_without_val_split(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / "data" / split / "a").mkdir(parents=True)
    without = {k: v for k, v in TINY.items() if k != "val_split"}
    assert _spec(overrides={**without, "dataset": f"folder:{tmp_path / 'data'}"}).check()
    (tmp_path / "data" / "val" / "a").rmdir()
    (tmp_path / "data" / "val").rmdir()  # train/ and test/ only: the test set would be the objective
    with pytest.raises(CnnlabError, match="never on the test set"):
        _spec(overrides={**without, "dataset": f"folder:{tmp_path / 'data'}"}).check()


@pytest.mark.parametrize("changes, message", [
    (dict(params=[]), "at least one --param"),
    (dict(params=["lr=uniform:0.1:1", "lr=uniform:0.2:1"]), "lr given twice"),
    (dict(overrides={**TINY, "lr": 0.1}), "lr given twice"),
    (dict(trials=0), "--trials must be a positive integer"),
    (dict(pruner="asha"), "--pruner must be one of"),
    (dict(params=["momentum=uniform:0:1.5"]), "momentum must be below 1"),  # TrainConfig's own check, up front
    (dict(model="lenet5"), "unknown model 'lenet5'"),
])
def test_sweep_refuses_a_sweep_that_could_not_run(changes, message):
    with pytest.raises(CnnlabError, match=message):
        _spec(**changes).check()


@pytest.mark.parametrize("changes, searched", [
    (dict(params=[*SPACE, "balance=choice:none,loss"]), "val_bal_acc with balance=loss"),
    (dict(params=[*SPACE, "balance=choice:sampler,none"]), "val_bal_acc with balance=sampler, val_acc with "
                                                            "balance=none"),
    (dict(params=[*SPACE, "best_by=choice:accuracy,balanced-accuracy"]), "val_bal_acc with best_by=balanced-accuracy"),
])
def test_a_space_whose_trials_would_judge_different_figures_is_refused(changes, searched):
    # A sweep over --balance ranked a trial judged by balanced accuracy (its best.pt's) beside one judged by accuracy
    with pytest.raises(CnnlabError, match="the trials would judge different figures") as info:
        _spec(**changes).check()
    assert searched in str(info.value) and "expected --best-by accuracy or --best-by balanced-accuracy" in \
        str(info.value)


@pytest.mark.parametrize("overrides, objective", [
    ({}, "accuracy"), ({"balance": "loss"}, "balanced-accuracy"), ({"balance": "sampler"}, "balanced-accuracy"),
    ({"balance": "loss", "best_by": "accuracy"}, "accuracy"), ({"best_by": "balanced-accuracy"}, "balanced-accuracy")])
def test_the_objective_is_the_figure_the_trials_runs_judge(overrides, objective):
    assert _spec(overrides={**TINY, **overrides}).check().objective == objective
    # balance searched, with the figure fixed: every trial judges it alike
    spec = _spec(params=[*SPACE, "balance=choice:none,loss,sampler"], overrides={**TINY, "best_by": objective})
    assert spec.check().objective == objective
    assert _spec(params=[*SPACE, "balance=choice:sampler,loss"]).check().objective == "balanced-accuracy"
    other = "accuracy" if objective == "balanced-accuracy" else "balanced-accuracy"
    with pytest.raises(CnnlabError, match=f"objective '{other}' is not the figure the trials' runs judge"):
        _spec(overrides={**TINY, **overrides}, objective=other).check()


def test_best_command_line_repeats_the_trial():
    spec = _spec(params=SPACE + ["augment=choice:true,false"])
    values = {"lr": 0.123456789012, "augment": False}
    words = shlex.split(command_line(spec, values, "runs/best"))
    assert words[:3] == ["cnnlab", "train", "lenet-bn-relu"]
    args = build_parser().parse_args(words[1:])
    given = {k: getattr(args, k) for k in [*TINY, "lr", "augment"]}
    assert make_config(args.model, args.recipe, **given) == make_config("lenet-bn-relu", **TINY, **values)
    assert args.out == "runs/best"


def test_storage_urls(tmp_path):
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    assert storage_url("postgresql://u:p@127.0.0.1/db", tmp_path) == "postgresql+psycopg://u:p@127.0.0.1/db"
    assert storage_url("postgresql+psycopg2://h/db", tmp_path) == "postgresql+psycopg2://h/db"  # a driver given
    assert storage_url("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"


def test_joining_needs_an_existing_study(tmp_path):
    with pytest.raises(CnnlabError, match="no sweep folder .* with a study.db"):
        sweep(None, study="nope", out=tmp_path / "nope")
    with pytest.raises(CnnlabError, match="expected a MODEL and --param"):
        sweep(None)


def test_a_database_error_under_optunas_own_is_named_by_the_drivers_line():
    # A study.db in a read-only folder: Optuna's StorageInternalError ("An exception is raised during the commit")
    # wraps SQLAlchemy's error, which holds sqlite's own; the message named only Optuna's guess.
    import sqlite3

    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    from cnnlab.sweep.storage import first_line

    driver = sqlite3.OperationalError("attempt to write a readonly database")
    try:
        try:
            raise sqlalchemy.exc.OperationalError("INSERT INTO studies ...", {}, driver)
        except sqlalchemy.exc.OperationalError as e:
            raise StorageInternalError("An exception is raised during the commit. This typically happens ...") from e
    except StorageInternalError as e:
        assert first_line(e) == "attempt to write a readonly database"
    assert first_line(ValueError("one\ntwo")) == "one"


def test_a_study_keeps_its_settings_but_each_machine_its_data_dir(tmp_path, capsys):
    storage = open_storage(storage_url(None, tmp_path), 10)
    load_study(storage, "s", _spec())
    _, stored = load_study(storage, "s", _spec(overrides={**TINY, "data_dir": "/elsewhere"}))  # accepted
    assert "data_dir" not in stored.overrides
    with pytest.raises(CnnlabError, match=r"study 's' exists with other settings \(overrides\)"):
        load_study(storage, "s", _spec(overrides={**TINY, "epochs": 3}))
    assert main(["sweep", "--study", "s", "--out", str(tmp_path), "--epochs", "3"]) == 2
    assert "expected no --param, training or study flags then but this machine's own --data-dir/--device" in \
        capsys.readouterr().err
    # A worker joining cannot change the study's trials or pruner: these were silently ignored
    assert main(["sweep", "--study", "s", "--out", str(tmp_path), "--trials", "40", "--pruner", "none"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("--data-dir/--device, got --trials --pruner")


def test_a_sweep_folder_takes_one_study_and_no_run_folder(tmp_path, capsys):
    # A second study in a sweep folder numbered its trials from 0000 again, over the first study's run folders.
    folder = tmp_path / "sw"
    folder.mkdir()
    (folder / "study.txt").write_text("s3\n")
    argv = ["sweep", "lenet-relu", "--param", "lr=loguniform:1e-2:0.5", "--val-split", "100", "--trials", "1"]
    assert main([*argv, "--study", "s3x", "--out", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"cnnlab sweep: error: sweep folder {folder} holds study 's3', whose trials' run folders a second study would "
        f"write over; expected --study s3 to continue or join it, or another --out for study 's3x'")
    assert sorted(p.name for p in folder.iterdir()) == ["study.txt"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert main([*argv, "--out", str(run)]) == 2
    assert f"--out {run} is a run folder; expected a sweep folder" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


# ------------------------------------------------------------------------------------------- real sweeps
@functools.cache
def _storage(url: str):
    """One storage (one connection pool) per database for the whole test session: polling with a fresh one each
    time left a pool behind per poll and ran PostgreSQL out of connection slots."""
    return optuna.storages.RDBStorage(url)


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=_storage(url)).get_trials(deepcopy=False)


def _enqueue(url: str, name: str, spec: SweepSpec, lrs) -> None:
    """Fix the trials' learning rates, so the test knows which trial is good, hopeless and divergent."""
    study, _ = load_study(open_storage(url, 10), name, spec)
    for lr in lrs:
        study.enqueue_trial({"lr": lr})


# Runs trials that only record their numbers, with the heartbeat a sweep's storage has, as a sweep's worker does.
_POPPER = """
import json, sys, warnings
import optuna
from cnnlab.sweep import open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore")
study = optuna.load_study(study_name="pop", storage=open_storage(sys.argv[1], 10))
ran = []
study.optimize(lambda t: ran.append(t.number) or 0.0, n_trials=int(sys.argv[2]))
print(json.dumps(ran))
"""


def test_two_workers_on_sqlite_never_run_the_same_enqueued_trial(tmp_path):
    # SQLite has no row locks: without a write lock at BEGIN, some of the trials ran in both processes
    url, trials = storage_url(None, tmp_path), 150
    study = optuna.create_study(study_name="pop", storage=open_storage(url, 10))
    for i in range(trials):
        study.enqueue_trial({"x": float(i)})
    procs = [subprocess.Popen([sys.executable, "-c", _POPPER, url, str(trials // 2)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    first, second = (json.loads(out) for out, _ in outs)
    assert not set(first) & set(second) and sorted(first + second) == list(range(trials))


@pytest.mark.parametrize("ends", ["with a value", "failing"])
def test_a_trial_failed_by_another_worker_meanwhile_is_one_line_and_the_worker_goes_on(tmp_path, monkeypatch,
                                                                                       capsys, ends):
    # A worker paused past the grace period finds, when its trial ends, that another worker failed it
    url = storage_url(None, tmp_path)

    def run_trial_while_paused(trial, spec, sweep_dir):
        trial.set_user_attr("run_dir", str(sweep_dir / "trials" / "0000"))
        other = open_storage(url, 10)  # the other worker, through its own connection
        other.set_trial_state_values(other.get_trial_id_from_study_id_trial_number(
            other.get_study_id_from_name("paused"), trial.number), TrialState.FAIL)
        if ends == "failing":
            raise TrialFailed("NonFiniteLoss: loss became non-finite")
        return 0.5

    monkeypatch.setattr("cnnlab.sweep.workers.run_trial", run_trial_while_paused)
    summary = sweep(_spec(trials=1), study="paused", out=tmp_path, heartbeat=2)
    assert summary["trials"]["counted"] == 1 and summary["trials"]["failed"] == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cnnlab sweep: worker 0: trial 0 was marked failed by another worker while this one ran it (its "
                   f"heartbeat was over 6 s late: was the machine paused or overloaded?); its run folder "
                   f"{tmp_path / 'trials' / '0000'} is kept"]


def test_a_trial_whose_worker_stopped_before_it_began_is_failed_not_waited_for(tmp_path):
    # Optuna marks a trial running before its worker's heartbeat starts, and never fails one without a heartbeat:
    # a worker cut off from the database in between (as in the test of the database going away) left the next
    # sweep waiting for that trial forever.
    out = tmp_path / "sw"
    out.mkdir()
    study, _ = load_study(open_storage(storage_url(None, out.resolve()), 10), "orphan", _spec(trials=1))
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna: ask() starts no heartbeat, which is the point
        orphan = study.ask()  # running, no heartbeat, and no worker
    joined = _cnnlab("sweep", "--study", "orphan", "--out", str(out), "--heartbeat", "1")
    try:
        stdout, stderr = joined.communicate(timeout=90)
    finally:
        joined.kill()
    assert joined.returncode == 0, stderr
    assert f"trial {orphan.number}: failed: its worker stopped before the trial began" in stdout
    assert study.get_trials(deepcopy=False)[orphan.number].state == TrialState.FAIL


@pytest.mark.slow
def test_sqlite_sweep_with_two_jobs_prunes_fails_and_finishes(tmp_path, data_dir):
    out, name = tmp_path / "sw", "two-jobs"
    spec = _spec(overrides={**TINY, "data_dir": str(data_dir)})
    url = storage_url(None, out.resolve())
    out.mkdir()
    # 0.1 twice (learns), 1e-6 (stays at chance: pruned after epoch 1 against a finished 0.1), 1e4 (NaN: failed)
    _enqueue(url, name, spec, [0.1, 0.1, 1e-6, 1e4])
    summary = sweep(spec, study=name, out=out, jobs=2, heartbeat=2)

    trials = {t.params["lr"]: t for t in _trials(url, name) if t.params["lr"] != 0.1}
    good = [t for t in _trials(url, name) if t.params["lr"] == 0.1]
    assert len(_trials(url, name)) == 4
    assert trials[1e-6].state == TrialState.PRUNED and trials[1e-6].last_step == 1  # stopped before epoch 2
    hopeless = trials[1e-6].user_attrs["run_dir"]
    assert len(open(os.path.join(hopeless, "metrics.csv")).read().splitlines()) == 2  # header + epoch 1 only
    with open(os.path.join(hopeless, "result.json")) as f:  # a pruned run is stopped, not failed
        result = json.load(f)
    assert result["status"] == "stopped" and result["stop_reason"].startswith("pruned by the sweep's pruner")
    assert trials[1e4].state == TrialState.FAIL and "non-finite" in trials[1e4].user_attrs["error"]
    assert any(t.state == TrialState.COMPLETE for t in good)
    assert len({t.user_attrs["pid"] for t in _trials(url, name)}) == 2  # two worker processes ran trials
    assert all(os.path.isfile(os.path.join(t.user_attrs["run_dir"], "config.json")) for t in _trials(url, name))

    best = max((t for t in good if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert summary["best"]["number"] == best.number and summary["best"]["val_acc"] == best.value
    assert summary["trials"]["counted"] == 4 and summary["trials"]["failed"] == 1
    assert summary["best"]["command"].startswith("cnnlab train lenet-bn-relu --recipe book")
    assert (out / "summary.json").is_file() and (out / "parallel.png").read_bytes()[:4] == b"\x89PNG"
    _, rows = compare_runs([load_run(p) for p in find_runs([str(out)])])  # the sweep folder compares as runs
    assert {r["run"]: r["status"] for r in rows}[f"{trials[1e-6].number:04d}"] == "pruned"


def _cnnlab(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def _wait_for(predicate, timeout: float = 240, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_the_same_study_resumes_the_trial(tmp_path, data_dir):
    out = tmp_path / "sw"
    budget = {**TINY, "epochs": 4, "limit_train_batches": 30, "data_dir": str(data_dir)}
    first = _cnnlab("sweep", "lenet-bn-relu", "--param", "lr=uniform:0.05:0.2", "--trials", "2", "--study", "cc",
                    "--out", str(out), "--pruner", "none", *_cli_flags(budget))
    metrics = out / "trials" / "0000" / "metrics.csv"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, what="trial 0's epoch 1")
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert f"Resume with: cnnlab sweep --study cc --out {out}" in stdout
    url = storage_url(None, out.resolve())
    (t0,) = _trials(url, "cc")
    assert t0.state == TrialState.FAIL and t0.user_attrs["interrupted"]
    assert (out / "trials" / "0000" / "last.pt").is_file() and (out / "study.txt").read_text() == "cc\n"
    epochs_before = len(metrics.read_text().splitlines()) - 1

    again = _cnnlab("sweep", "--study", "cc", "--out", str(out))
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "resuming interrupted trial(s) 0" in stdout
    trials = _trials(url, "cc")
    resumed = next(t for t in trials if t.user_attrs.get("resume_of") == 0)
    assert resumed.state == TrialState.COMPLETE and resumed.params == t0.params
    assert resumed.user_attrs["run_dir"] == t0.user_attrs["run_dir"]  # the same run folder, continued
    rows = metrics.read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4] and epochs_before < 4
    assert sorted(resumed.intermediate_values) == [1, 2, 3, 4]  # the pruner saw the whole curve
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # --trials 2: the interrupted one is replaced


def _quick_train(calls: list, stop=None):
    """`train` for trials that need no training: one epoch at val_acc 0.5; ``stop(call)`` runs first."""

    def fake(model, recipe=None, *, out, on_epoch, **settings):
        calls.append(out)
        if stop is not None:
            stop(len(calls))
        os.makedirs(out, exist_ok=True)
        row = {"epoch": 1.0, "val_acc": 0.5}
        on_epoch(row)
        return [row]

    return fake


def _judged_train(calls: list):
    """`train` for trials judged by either figure: epoch 1 has the higher accuracy, epoch 2 the higher balanced
    accuracy (as under --balance, where the balancing costs the largest class some images)."""
    rows = [{"epoch": 1.0, "val_acc": 0.9, "val_bal_acc": 0.5}, {"epoch": 2.0, "val_acc": 0.8, "val_bal_acc": 0.7}]

    def fake(model, recipe=None, *, out, on_epoch, **settings):
        calls.append(settings)
        os.makedirs(out, exist_ok=True)
        for row in rows:
            on_epoch(row)
        return rows

    return fake


@pytest.mark.parametrize("overrides, key, value, epoch", [
    ({}, "val_acc", 0.9, 1), ({"balance": "loss"}, "val_bal_acc", 0.7, 2),
    ({"balance": "sampler", "best_by": "accuracy"}, "val_acc", 0.9, 1)])
def test_a_trial_is_judged_by_the_figure_its_runs_best_pt_judges(tmp_path, monkeypatch, capsys, overrides, key,
                                                                 value, epoch):
    # Under --balance a trial reported, was pruned on and was valued by the accuracy while its best.pt judged the
    # balanced accuracy: the sweep's best trial was the one the balancing worked against
    calls = []
    monkeypatch.setattr("cnnlab.sweep.trial.train", _judged_train(calls))
    out = tmp_path / "sw"
    summary = sweep(_spec(trials=1, overrides={**TINY, **overrides}), study="judged", out=out)
    assert {k: calls[0].get(k) for k in overrides} == overrides  # the trial's run was asked what the sweep was
    trial = _trials(storage_url(None, out.resolve()), "judged")[0]
    assert trial.state == TrialState.COMPLETE and trial.value == value
    assert trial.intermediate_values == {1: (0.9, 0.5)[key == "val_bal_acc"], 2: (0.8, 0.7)[key == "val_bal_acc"]}
    assert f"trial 0: {key} {value:.4f}" in capsys.readouterr().out
    record = json.loads((out / "trials" / "0000" / "trial.json").read_text())
    assert record["objective"] == key and record["value"] == value and record["epoch"] == epoch
    assert summary["objective"] == key and summary["best"]["objective"] == key and summary["best"]["value"] == value
    assert summary["best"]["epoch"] == epoch  # the old key keeps its meaning: the best epoch's accuracy
    assert summary["best"]["val_acc"] == (0.9, 0.8)[epoch - 1] and summary["best"]["val_bal_acc"] == (0.5, 0.7)[
        epoch - 1]
    assert json.loads((out / "summary.json").read_text())["objective"] == key
    line = format_summary(summary).splitlines()[1]
    assert line.startswith(f"best: trial 0, {key} {value:.4f}")
    assert ("val_acc 0.8000" in line) == (key == "val_bal_acc")  # the accuracy beside the balanced figure


def test_a_study_from_before_the_objective_goes_on_judging_accuracy(tmp_path, monkeypatch, capsys):
    # Its stored settings have no objective: its trials were judged by the accuracy, and so are the next ones
    out = tmp_path / "sw"
    out.mkdir()
    spec = _spec(trials=2, pruner="none", overrides={**TINY, "balance": "loss"})
    study, _ = load_study(open_storage(storage_url(None, out.resolve()), 10), "old", spec)
    stored = {k: v for k, v in study.user_attrs[SPEC_ATTR].items() if k != "objective"}
    study.set_user_attr(SPEC_ATTR, stored)
    monkeypatch.setattr("cnnlab.sweep.trial.train", _judged_train([]))
    summary = sweep(None, study="old", out=out)  # joined, as the resume line says
    assert summary["objective"] == "val_acc" and summary["best"]["value"] == 0.9
    assert "trial 0: val_acc 0.9000" in capsys.readouterr().out
    # The whole command again is not refused as other settings, and says what it judges
    summary = sweep(_spec(trials=2, pruner="none", overrides={**TINY, "balance": "loss"}), study="old", out=out)
    assert summary["objective"] == "val_acc" and summary["trials"]["counted"] == 2
    assert ("study old judges its trials by val_acc, as it began (it was started before sweeps judged the figure "
            "their runs' best.pt judges, val_bal_acc here)") in capsys.readouterr().out
    kept = optuna.load_study(study_name="old", storage=_storage(storage_url(None, out.resolve())))
    assert kept.user_attrs[SPEC_ATTR] == stored  # as it was stored: every later worker reads it so too


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # interrupted by the signal's handler, if it has one


@pytest.fixture
def sigterm_ignored():
    """SIGTERM ignored around the test: a sweep that does not take it as Ctrl-C goes on (and pytest lives)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGTERM, previous)


def _stopped_by_sigterm(out) -> None:
    """Run the two-trial sweep "term" into ``out``: SIGTERM stops it with its resume line, the caller's handler back."""
    with pytest.raises(Interrupted) as info:
        sweep(_spec(trials=2, pruner="none"), study="term", out=out)
    assert info.value.signum == signal.SIGTERM
    assert str(info.value) == (f"sweep interrupted; the running trials checkpointed. Resume with: cnnlab sweep "
                               f"--study term --out {out}")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the caller's handler, back


@pytest.mark.parametrize("when", ["while a trial loads its data", "between trials"])
def test_sigterm_outside_a_training_loop_stops_the_sweep_as_ctrl_c_does(tmp_path, monkeypatch, capsys,
                                                                        sigterm_ignored, when):
    # Nothing took SIGTERM outside a training loop: the sweep died (143) without its resume line, and a trial it
    # came in stayed running in the study, failed (not resumed) by the next sweep once its heartbeat was stale.
    calls, progressed = [], []
    if when == "between trials":
        import cnnlab.sweep.workers as workers

        real_progress = workers.progress

        def progress(study):
            progressed.append(study)
            if len(progressed) == 2:  # trial 0 has ended, trial 1 is not asked for yet
                _sigterm_self()
            return real_progress(study)

        monkeypatch.setattr(workers, "progress", progress)

    def stop(call: int) -> None:
        if when == "while a trial loads its data" and call == 2:
            _sigterm_self()

    monkeypatch.setattr("cnnlab.sweep.trial.train", _quick_train(calls, stop))
    out = tmp_path / "sw"
    _stopped_by_sigterm(out)
    url = storage_url(None, out.resolve())
    trials = _trials(url, "term")
    assert trials[0].state == TrialState.COMPLETE and not any(t.state == TrialState.RUNNING for t in trials)
    if when == "while a trial loads its data":
        assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["interrupted"]

    monkeypatch.setattr("cnnlab.sweep.trial.train", _quick_train(calls))
    summary = sweep(None, study="term", out=out)
    assert summary["trials"]["counted"] == 2 and "failed" not in summary["trials"]
    if when == "while a trial loads its data":
        assert "resuming interrupted trial(s) 1" in capsys.readouterr().out
        resumed = next(t for t in _trials(url, "term") if t.user_attrs.get("resume_of") == 1)
        assert resumed.state == TrialState.COMPLETE and resumed.params == trials[1].params


@pytest.mark.parametrize("when", ["while the study opens", "in the summary"])
def test_sigterm_before_or_after_the_trials_stops_the_sweep_with_its_resume_line(tmp_path, monkeypatch, capsys,
                                                                                 sigterm_ignored, when):
    """Outside the trials' span nothing took SIGTERM: the sweep ended at once (exit 143), without the line that says
    how to go on, and SIGTERM's handler was not the caller's."""
    import cnnlab.sweep as sweep_module

    calls, out = [], tmp_path / "sw"
    monkeypatch.setattr("cnnlab.sweep.trial.train", _quick_train(calls))
    name = "open_storage" if when == "while the study opens" else "summarize"
    real = getattr(sweep_module, name)
    signalled = []

    def signal_first(*args, **kwargs):
        if not signalled:
            signalled.append(name)
            _sigterm_self()
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, name, signal_first)
    _stopped_by_sigterm(out)
    summary = sweep(_spec(trials=2, pruner="none"), study="term", out=out)  # the same command goes on
    assert summary["trials"]["counted"] == 2 and (out / "summary.json").is_file()


def test_sigterm_while_the_workers_start_reaches_every_worker(tmp_path, monkeypatch, sigterm_ignored, data_dir):
    # A signal while the sweep started its workers must reach each of them, the ones started after it came too
    import multiprocessing.context

    started = []
    real_start = multiprocessing.context.SpawnProcess.start

    def start(process):
        real_start(process)
        started.append(process.pid)
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start)
    out = tmp_path / "sw"
    with pytest.raises(Interrupted) as info:
        sweep(_spec(trials=2, overrides={**TINY, "data_dir": str(data_dir)}), study="start", out=out, jobs=2)
    assert info.value.signum == signal.SIGTERM and len(started) == 2
    for pid in started:  # each ended (and was waited for) before the sweep did
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(t.state == TrialState.RUNNING for t in _trials(storage_url(None, out.resolve()), "start"))


def test_a_seeded_sweep_continued_draws_new_points_and_a_new_one_the_same_as_before(tmp_path, monkeypatch):
    # Every sweep seeded its sampler with --sampler-seed again, so the study resumed after an interruption drew its
    # first points over: trial 3 had trial 0's lr
    def interrupt(call: int) -> None:
        if call == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("cnnlab.sweep.trial.train", _quick_train([], interrupt))
    out = tmp_path / "sw"
    with pytest.raises(Interrupted):
        sweep(_spec(trials=3, pruner="none"), study="seeded", out=out)
    monkeypatch.setattr("cnnlab.sweep.trial.train", _quick_train([]))
    sweep(None, study="seeded", out=out)
    trials = _trials(storage_url(None, out.resolve()), "seeded")
    assert [t.user_attrs.get("resume_of") for t in trials] == [None, None, 1, None]
    drawn = [trials[n].params["lr"] for n in (0, 1, 3)]
    assert len(set(drawn)) == 3, drawn

    # A new study with the seed draws what it drew before this change: the sampler seeded with it
    sweep(_spec(trials=2, pruner="none"), study="again", out=tmp_path / "again")
    again = [t.params["lr"] for t in _trials(storage_url(None, (tmp_path / "again").resolve()), "again")]
    assert again == drawn[:2]
    alone = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    assert alone.ask().suggest_float("lr", 1e-6, 1e4, log=True) == drawn[0]


@pytest.mark.slow
def test_sigterm_to_a_sweep_with_two_jobs_stops_every_worker_and_waits_for_them(tmp_path, data_dir):
    # SIGTERM to a sweep with --jobs 2: it exited 143 at once with no word, and both workers trained on, alone
    out = tmp_path / "sw"
    # epochs enough that the first trial is still training when the second worker (started, then reading its data,
    # seconds later) is in its second epoch: the signal ends both long before
    budget = {**TINY, "epochs": 200, "limit_train_batches": 30, "data_dir": str(data_dir)}
    first = _cnnlab("sweep", "lenet-bn-relu", "--param", "lr=uniform:0.05:0.2", "--trials", "4", "--study", "tt",
                    "--out", str(out), "--pruner", "none", "--jobs", "2", *_cli_flags(budget))
    url = storage_url(None, out.resolve())

    def training() -> list:
        metrics = [out / "trials" / f"{n:04d}" / "metrics.csv" for n in (0, 1)]
        if not all(m.is_file() and len(m.read_text().splitlines()) >= 2 for m in metrics):
            return []
        running = [t.user_attrs["pid"] for t in _trials(url, "tt") if t.state == TrialState.RUNNING]
        return running if len(running) == 2 else []

    workers = _wait_for(training, what="two trials in their second epoch")
    try:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=120)
        assert first.returncode == 143, stderr
        assert f"sweep interrupted; the running trials checkpointed. Resume with: cnnlab sweep --study tt --out " \
               f"{out}" in stdout
        for pid in workers:  # each checkpointed and ended before the sweep did
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    trials = _trials(url, "tt")
    assert len(trials) == 2 and all(t.state == TrialState.FAIL and t.user_attrs["interrupted"] for t in trials)
    assert all((out / "trials" / f"{n:04d}" / "last.pt").is_file() for n in (0, 1))


def test_a_trial_finished_by_train_resume_before_the_sweep_resumed_keeps_its_result(tmp_path, data_dir):
    # A trial interrupted by Ctrl-C prints the trainer's "Resume with: cnnlab train --resume RUN" too; a user who
    # followed it finished the run, and the sweep's resume of that trial then failed it: "no finite validation
    # accuracy", its result lost.
    run_dir = tmp_path / "sw" / "trials" / "0000"
    spec = _spec(trials=1, overrides={**TINY, "data_dir": str(data_dir)})
    train(spec.model, out=str(run_dir), quiet=True, report=False, lr=0.1, **spec.overrides)
    trial = optuna.trial.FixedTrial({"lr": 0.1}, number=1)
    for key, value in (("resume_of", 0), ("run_dir", str(run_dir)), ("host", socket.gethostname())):
        trial.set_user_attr(key, value)
    value = run_trial(trial, spec, tmp_path / "sw")
    assert value == max(row["val_acc"] for row in Run.open(run_dir).metrics)
    assert json.loads((run_dir / "trial.json").read_text())["state"] == "complete"


# ----------------------------------------------------------------------------------------------- PostgreSQL
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES = os.environ.get("CNNLAB_TEST_POSTGRES", "postgresql://cnnlab:cnnlab@127.0.0.1:5432/cnnlab_test")


def _postgres_answers() -> bool:
    try:
        import psycopg

        psycopg.connect(POSTGRES, connect_timeout=3).close()
        return True
    except Exception:
        return False


needs_postgres = pytest.mark.skipif(
    not IN_CI and not _postgres_answers(),
    reason=f"no PostgreSQL server answers at {POSTGRES} (set CNNLAB_TEST_POSTGRES; .ci/run starts one); under "
           "CI=true this test runs and fails instead")


@pytest.fixture
def pg_study():
    """A fresh study name in the test database, deleted afterwards."""
    assert _postgres_answers(), f"CI=true but no PostgreSQL server answers at {POSTGRES} (see .ci/run)"
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=storage_url(POSTGRES, None))
    except KeyError:
        pass


@pytest.mark.slow
@needs_postgres
def test_two_machines_share_a_postgres_study_and_a_killed_worker_is_failed(tmp_path, data_dir, pg_study):
    url = storage_url(POSTGRES, None)
    budget = {**TINY, "epochs": 6, "limit_train_batches": 20, "data_dir": str(data_dir)}
    # six trials: room for the second machine to join while the first is still busy, however fast it is
    a = _cnnlab("sweep", "lenet-bn-relu", "--param", "lr=uniform:0.05:0.2", "--trials", "6", "--study", pg_study,
                "--storage", POSTGRES, "--out", str(tmp_path / "a"), "--heartbeat", "1", "--pruner", "none",
                *_cli_flags(budget))
    _wait_for(lambda: pg_study in optuna.get_all_study_names(_storage(url)), what="the study")
    b = _cnnlab("sweep", "--study", pg_study, "--storage", POSTGRES, "--out", str(tmp_path / "b"),
                "--heartbeat", "1", "--data-dir", str(data_dir))  # the second machine: its own data, the settings
    victim = _wait_for(lambda: next((t for t in _trials(url, pg_study) if t.state == TrialState.RUNNING
                                     and t.user_attrs.get("pid") == b.pid and "run_dir" in t.user_attrs
                                     and os.path.isfile(os.path.join(t.user_attrs["run_dir"], "config.json"))), None),
                       what="a trial training on worker b")  # killed mid-run, not while it loads the data
    os.kill(b.pid, signal.SIGKILL)
    b.communicate()
    stdout, stderr = a.communicate(timeout=400)
    assert a.returncode == 0, stderr
    trials = {t.number: t for t in _trials(url, pg_study)}
    assert len(trials) == 6
    assert trials[victim.number].state == TrialState.FAIL  # by its stale heartbeat
    assert all(t.state == TrialState.COMPLETE for n, t in trials.items() if n != victim.number)
    assert {t.user_attrs["host"] for t in trials.values()} == {socket.gethostname()}
    assert (tmp_path / "b" / "trials" / f"{victim.number:04d}" / "config.json").is_file()
    assert "best: trial" in stdout and (tmp_path / "a" / "summary.json").is_file()


class _Proxy:
    """A TCP relay on loopback to the test server, to make the database go away and come back.

    It keeps its listening port for its whole life: closing the port and binding it again can fail, because the port
    comes from the ephemeral range and any outgoing connection may take it in between. While the database is away,
    the relay accepts and at once closes each connection, as a server that went down would look."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.sockets, self.up, self.lock = target, [], True, threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def go_away(self):
        with self.lock:
            self.up, sockets, self.sockets = False, self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def come_back(self):
        self.up = True

    def close(self):
        self.go_away()
        self.server.close()


@pytest.mark.slow
@needs_postgres
def test_database_going_away_is_one_clear_line_and_loses_nothing(tmp_path, data_dir, pg_study):
    from sqlalchemy.engine import make_url

    server = make_url(storage_url(POSTGRES, None))
    proxy = _Proxy((server.host, server.port or 5432))
    via_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    budget = {**TINY, "epochs": 3, "limit_train_batches": 20, "data_dir": str(data_dir)}
    args = ["--study", pg_study, "--storage", via_proxy, "--out", str(tmp_path / "sw"), "--heartbeat", "1"]
    url = storage_url(POSTGRES, None)
    try:
        run = _cnnlab("sweep", "lenet-bn-relu", "--param", "lr=uniform:0.05:0.2", "--trials", "3", "--pruner", "none",
                      *args, *_cli_flags(budget))
        _wait_for(lambda: pg_study in optuna.get_all_study_names(_storage(url))
                  and any(t.state == TrialState.COMPLETE for t in _trials(url, pg_study)), what="a finished trial")
        proxy.go_away()
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 2, stderr
        lines = [line for line in stderr.splitlines() if line.startswith("cnnlab sweep: error:")]
        assert len(lines) == 1 and "the study database" in lines[0] and "cnnlab:***@" in lines[0]
        kept = [t.number for t in _trials(url, pg_study) if t.state == TrialState.COMPLETE]
        assert kept  # what the database recorded before it went away is still there

        proxy.come_back()
        again = _cnnlab("sweep", *args)
        stdout, stderr = again.communicate(timeout=400)
    finally:
        proxy.close()
    assert again.returncode == 0, stderr
    trials = _trials(url, pg_study)
    assert set(kept) <= {t.number for t in trials if t.state == TrialState.COMPLETE}
    assert sum(t.state != TrialState.RUNNING for t in trials) == len(trials) >= 3


def test_zeros_given_to_the_sweeps_own_flags_are_kept(monkeypatch, tmp_path, capsys):
    """`--trials 0`, `--sampler-seed 0`, `--startup-trials 0`, `--warmup-epochs 0` were dropped as not given
    (0 == False): --trials 0 ran the default 20 trials, seed 0 gave an unseeded sampler. Negative pruner settings
    were an internal error from optuna after the study's folder was made."""
    import cnnlab.sweep

    seen = []

    def capture(spec, **kwargs):
        seen.append(spec.check())
        raise CnnlabError("captured")

    monkeypatch.setattr(cnnlab.sweep, "sweep", capture)
    base = ["sweep", "lenet", "--param", "lr=loguniform:0.01:0.1", "--epochs", "1", "--allow-test-objective",
            "--out", str(tmp_path / "sw")]
    assert main([*base, "--sampler-seed", "0", "--startup-trials", "0", "--warmup-epochs", "0"]) == 2
    assert "captured" in capsys.readouterr().err
    assert (seen[-1].seed, seen[-1].startup_trials, seen[-1].warmup_epochs) == (0, 0, 0)
    for flag, value in (("--trials", "0"), ("--startup-trials", "-1"), ("--warmup-epochs", "-1")):
        assert main([*base, flag, value]) == 2
        err = capsys.readouterr().err
        assert f"{flag} must be" in err and "captured" not in err, err
    assert not (tmp_path / "sw").exists()
