"""cnnlab.runs.Run: the one reader of a run folder, on hand-made folders and on one real tiny run."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.runs import (
    ENDED,
    INCOMPLETE,
    NOT_ENDED,
    STALE_S,
    STATUSES,
    Run,
    folder_status,
    read_metrics,
)

CONFIG = {"config": {"model": "lenet", "recipe": "book", "epochs": 2, "dataset": "fashion-mnist"},
          "dataset": {"name": "fashion-mnist", "classes": ["a", "b"], "channels": 1}, "params": 61706}
METRICS = "epoch,train_loss,val_acc\n1,2.3,0.1\n2,1.2,0.5\n"


def _run(folder, *, metrics=METRICS, result=None, checkpoints=("last.pt",), trial=None, age=0.0):
    """A run folder as cnnlab leaves it: config.json, metrics.csv, checkpoints, result.json if it ended; every file
    last written ``age`` seconds ago."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    if metrics is not None:
        (folder / "metrics.csv").write_text(metrics)
    for name in checkpoints:
        (folder / name).write_bytes(b"a checkpoint")
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    if trial is not None:
        (folder / "trial.json").write_text(json.dumps(trial))
    stamp = time.time() - age
    for path in folder.iterdir():
        os.utime(path, (stamp, stamp))
    return folder


@pytest.mark.parametrize("status", ["finished", "stopped", "failed"])
def test_an_ended_run_has_the_status_its_result_json_says(tmp_path, status):
    run = Run.open(_run(tmp_path / "r", result={"status": status, "test_acc": 0.5}))
    assert run.status == run.outcome == status and run.ended
    assert run.config["model"] == "lenet" and run.record["params"] == 61706 and run.dataset["channels"] == 1
    assert run.result["test_acc"] == 0.5 and run.trial == {}
    assert [r["epoch"] for r in run.metrics] == [1.0, 2.0] and run.metrics[1]["val_acc"] == 0.5


def test_a_result_without_status_is_finished(tmp_path):
    assert Run.open(_run(tmp_path / "r", result={"test_acc": 0.5})).status == "finished"


def test_a_run_without_result_is_training_or_interrupted_as_the_reader_asks(tmp_path):
    fresh = _run(tmp_path / "fresh")
    assert Run.open(fresh).status == "interrupted"  # not judged by age: what is on disk
    assert Run.open(fresh, now=time.time()).status == "training"
    run = Run.open(fresh, now=time.time() + STALE_S + 1)
    assert run.status == "interrupted" and not run.ended and run.outcome == INCOMPLETE and run.result is None
    old = _run(tmp_path / "old", age=STALE_S + 60)
    assert Run.open(old, now=time.time()).status == "interrupted"
    no_checkpoint = _run(tmp_path / "none", checkpoints=(), age=STALE_S + 60)
    assert Run.open(no_checkpoint, now=time.time()).status == "partial"


def test_a_pruned_sweep_trial_is_pruned_though_its_result_says_stopped(tmp_path):
    run = Run.open(_run(tmp_path / "r", result={"status": "stopped"}, trial={"number": 3, "state": "pruned"}))
    assert run.status == run.outcome == "pruned" and run.ended and run.trial["number"] == 3


def test_checkpoints_in_order_of_preference(tmp_path):
    run = Run.open(_run(tmp_path / "r", checkpoints=("last.pt", "best.pt")))
    assert run.checkpoint().name == "last.pt" and run.checkpoint(("best.pt", "last.pt")).name == "best.pt"
    assert Run.open(_run(tmp_path / "b", checkpoints=("best.pt",))).checkpoint().name == "best.pt"
    assert Run.open(_run(tmp_path / "n", checkpoints=())).checkpoint() is None


def test_a_last_row_still_being_written_is_left_out_and_an_empty_cell_is_nan(tmp_path):
    run = Run.open(_run(tmp_path / "r", metrics=METRICS + "3,0.9,"))
    assert [r["epoch"] for r in run.metrics] == [1.0, 2.0]
    gap = Run.open(_run(tmp_path / "gap", metrics="epoch,val_loss,val_acc\n1,,0.5\n"))
    assert math.isnan(gap.metrics[0]["val_loss"]) and gap.metrics[0]["val_acc"] == 0.5
    assert Run.open(_run(tmp_path / "none", metrics=None)).metrics == [] == read_metrics(tmp_path / "none")
    assert Run.open(_run(tmp_path / "header", metrics="epoch,val_acc")).metrics == []


@pytest.mark.parametrize("damage, match", [
    (lambda f: (f / "config.json").unlink(), "is not a run folder: expected a config.json"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json: expected JSON"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json holds a list, expected a JSON object"),
    (lambda f: (f / "config.json").write_text('{"params": 3}'), "config.json has no \"config\" object"),
    (lambda f: (f / "result.json").write_text("{"), "result.json: expected JSON"),
    (lambda f: (f / "result.json").write_bytes(b"\xff\xfe"), "result.json: expected JSON"),
    (lambda f: (f / "trial.json").write_text('"pruned"'), "trial.json holds a str"),
    (lambda f: (f / "metrics.csv").write_text("epoch,val_acc\n1,abc\n"), "metrics.csv: .*line 2 is not numeric"),
    (lambda f: (f / "metrics.csv").write_text("epoch,val_acc\n1,0.5,7\n"), "metrics.csv: .*line 2 has 3 fields"),
])
def test_a_damaged_folder_is_one_line_naming_the_file(tmp_path, damage, match):
    folder = _run(tmp_path / "r", result={"status": "finished"})
    damage(folder)
    with pytest.raises(CnnlabError, match=match) as e:
        Run.open(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_the_status_words(tmp_path):
    assert STATUSES == (*ENDED, *NOT_ENDED, INCOMPLETE) and len(set(STATUSES)) == len(STATUSES)
    assert ENDED == ("finished", "stopped", "failed", "pruned")
    assert NOT_ENDED == ("training", "interrupted", "partial", "new")
    # Folders that are not runs (yet): what a study finds where a variant's run goes.
    assert folder_status(tmp_path / "absent") == "new"
    (tmp_path / "empty").mkdir()
    assert folder_status(tmp_path / "empty") == "new"
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "config.json").write_text(json.dumps(CONFIG))
    assert folder_status(tmp_path / "started") == "partial"
    broken = _run(tmp_path / "broken", result={"status": "finished"})
    (broken / "result.json").write_text("{")  # did not end cleanly: resume from its checkpoint
    assert folder_status(broken) == "interrupted"
    (broken / "last.pt").unlink()
    assert folder_status(broken) == "partial"
    assert folder_status(_run(tmp_path / "done", result={"status": "failed"})) == "failed"


def test_a_real_run_reads_back_as_it_was_trained(tmp_path, data_dir):
    from cnnlab.train import train

    folder = tmp_path / "run"
    history = train("lenet", epochs=1, limit_train_batches=2, limit_val_batches=2, batch_size=32, out=str(folder),
                    data_dir=str(data_dir), quiet=True, report=False)
    run = Run.open(folder)
    assert run.status == "finished" and run.config["model"] == "lenet" and run.config["epochs"] == 1
    assert len(run.metrics) == len(history) == 1
    assert run.metrics[0]["val_acc"] == pytest.approx(history[0]["val_acc"], abs=1e-6)
    assert run.result["test_acc"] is not None and run.checkpoint() == folder / "last.pt"
    assert run.dataset["name"] == "fashion-mnist" and run.record["environment"]["torch"]
