"""``cnnlab train --config FILE``: TOML or JSON settings, flags overriding them, a run's config.json passed back."""

from __future__ import annotations

import json

import pytest

import cnnlab.train
from cnnlab import cli
from cnnlab.config_file import read_config_file
from cnnlab.errors import CnnlabError


@pytest.fixture
def calls(monkeypatch):
    """Record what the CLI hands to cnnlab.train.train instead of training."""
    seen = []

    def fake_train(model, recipe="book", **kwargs):
        seen.append(dict(model=model, recipe=recipe, **kwargs))
        return []

    monkeypatch.setattr(cnnlab.train, "train", fake_train)
    return seen


def test_toml_settings_with_flags_overriding_them(tmp_path, calls):
    path = tmp_path / "run.toml"
    path.write_text('model = "resnet18"\nrecipe = "fast"\nepochs = 20\nbatch-size = 64\nschedule = "multistep"\n'
                    'milestones = "10,15"\naugment = true\n')
    assert cli.main(["train", "--config", str(path), "--epochs", "3", "--no-augment"]) == 0
    [call] = calls
    assert call["model"] == "resnet18" and call["recipe"] == "fast"
    assert call["epochs"] == 3 and call["augment"] is False  # the flags win
    assert call["batch_size"] == 64 and call["milestones"] == "10,15"  # the file fills in the rest


def test_model_and_recipe_on_the_command_line_win_over_the_file(tmp_path, calls):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "resnet18", "recipe": "fast", "lr": 0.05}))
    assert cli.main(["train", "lenet", "--recipe", "book", "--config", str(path)]) == 0
    assert calls[0]["model"] == "lenet" and calls[0]["recipe"] == "book" and calls[0]["lr"] == 0.05


def test_a_runs_config_json_is_read_from_its_config_entry_without_its_folder(tmp_path):
    record = {"config": {"model": "lenet", "epochs": 2, "out": "runs/old", "resize": None, "seed": 3},
              "input_size": 28, "params": 61706, "environment": {"torch": "2.x"}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert read_config_file(tmp_path / "config.json") == {"model": "lenet", "epochs": 2, "seed": 3}


def test_a_budgeted_runs_config_json_is_its_budget_and_a_length_flag_replaces_it(tmp_path, calls):
    # The restart command cnnlab prints for a run that cannot be resumed is `--config RUN/config.json`: a budgeted
    # run's record holds its budget and the default epoch count, which were refused together.
    record = {"config": {"model": "lenet", "recipe": "fast", "epochs": 10, "time_budget": 60.0, "out": "runs/old"},
              "dataset": {"name": "fashion-mnist"}, "normalize": [[0.286], [0.353]], "input_size": 28}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert read_config_file(tmp_path / "config.json") == {"model": "lenet", "recipe": "fast", "time_budget": 60.0}
    for flags, length in (([], {"time_budget": 60.0}), (["--epochs", "2"], {"epochs": 2}),
                          (["--time-budget", "9"], {"time_budget": 9.0})):
        assert cli.main(["train", "--config", str(tmp_path / "config.json"), *flags]) == 0
        assert {k: calls[-1][k] for k in ("epochs", "time_budget") if k in calls[-1]} == length, flags
    (tmp_path / "own.toml").write_text('model = "lenet"\nepochs = 3\n')  # a file of settings: a flag replaces it too
    assert cli.main(["train", "--config", str(tmp_path / "own.toml"), "--time-budget", "30"]) == 0
    assert "epochs" not in calls[-1] and calls[-1]["time_budget"] == 30.0


def test_a_balance_flag_over_a_runs_config_json_chooses_best_by_afresh(tmp_path, calls):
    # A run's record holds best_by as its own --balance resolved it: accuracy for --balance none. Passed back with
    # --balance loss, that judged the new run's best epoch by the accuracy the balancing works against.
    record = {"config": {"model": "lenet", "balance": "none", "best_by": "accuracy", "out": "runs/old"}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    for flags, best_by in (([], "accuracy"), (["--balance", "loss"], None),
                           (["--balance", "loss", "--best-by", "accuracy"], "accuracy")):
        assert cli.main(["train", "--config", str(tmp_path / "config.json"), *flags]) == 0
        assert calls[-1].get("best_by") == best_by, flags
    assert cnnlab.train.make_config("lenet", balance="loss").best_by == "balanced-accuracy"


@pytest.mark.parametrize("name, text, message", [
    ("beside.json", '{"model": "lenet", "lr": 0.5, "config": {"model": "lenet"}}',
     "has a 'config' table, as a run's config.json does, and settings beside it .lr, model.; expected one or"),
    ("twice.json", '{"batch_size": 64, "batch-size": 32}', "sets batch_size twice .as batch_size and batch-size."),
    ("bad.toml", 'epochs = 3\nlearning_rate = 0.1\nbatchsize = 2\n',
     "has unknown key.s. batchsize, learning_rate; expected TrainConfig fields"),
    ("bad.toml", "epochs = \n", "does not parse"),
    ("bad.json", "{", "does not parse"),
    ("list.json", "[1, 2]", "must hold a table of settings, got a list"),
    ("run.yaml", "epochs: 3", "must end in .toml or .json, got '.yaml'"),
    ("absent.toml", None, "cannot read config file"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, calls, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(CnnlabError, match=message) as e:
        read_config_file(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert cli.main(["train", "lenet", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab train: error: ") and calls == []


def test_resume_takes_no_config(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("epochs = 1\n")
    assert cli.main(["train", "--resume", str(tmp_path), "--config", str(tmp_path / "c.toml")]) == 2
    assert "--resume takes the run's own config" in capsys.readouterr().err


def test_bad_values_in_a_file_are_judged_like_flags(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('model = "lenet"\nbatch_size = 0\n')
    assert cli.main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    assert "batch-size must be a positive integer, got 0" in capsys.readouterr().err


def test_a_run_trained_again_from_its_config_json(tmp_path, data_dir):
    """Round trip through real runs: the second run's recorded config equals the first's but for the folder."""
    first, second = tmp_path / "first", tmp_path / "second"
    (tmp_path / "tiny.toml").write_text(f'model = "lenet-relu"\nepochs = 1\nlimit_train_batches = 1\n'
                                        f'limit_val_batches = 1\nseed = 7\nlr = 0.05\nout = "{first}"\n')
    assert cli.main(["train", "--config", str(tmp_path / "tiny.toml"), "--quiet", "--no-report"]) == 0
    assert cli.main(["train", "--config", str(first / "config.json"), "--out", str(second), "--quiet",
                     "--no-report"]) == 0
    a, b = (json.loads((run / "config.json").read_text())["config"] for run in (first, second))
    assert a.pop("out") == str(first) and b.pop("out") == str(second)
    assert a == b and a["seed"] == 7 and a["lr"] == 0.05
