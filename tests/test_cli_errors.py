"""Bad command lines end with exit code 2 and ONE line on stderr, never a traceback.

The contract (docs/design.md, "Errors"): ``cnnlab <command>: error: <what was expected, what was given>``;
argparse's own errors are shortened to one line too; tracebacks appear only with ``--debug``; an unexpected
failure (a bug, memory or disk running out) is one ``internal error`` line with exit code 1.
Most cases run ``cli.main`` in-process (cheap); a few run the real executable to see its whole stderr.
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnlab.device
import cnnlab.explore
import cnnlab.train
import cnnlab.train.launch
import report_fixtures
from cli_support import assert_one_line, run
from cnnlab import cli
from cnnlab.errors import CnnlabError, summary
from cnnlab.report import read_run
from cnnlab.runs import resume_command
from cnnlab.train import make_config

ROOT = Path(__file__).resolve().parents[1]

trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy  # shared fixtures


@pytest.fixture
def no_data(monkeypatch):
    """Checks that need no data must fail before the data is read (or downloaded)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before a bad argument was reported")

    import cnnlab.data

    monkeypatch.setattr(cnnlab.data, "load_dataset", refuse)  # every dataset is loaded through it


# ------------------------------------------------------------------------------------- values and choices
@pytest.mark.parametrize("argv, needles", [
    (["train", "lenet5"], ["unknown model 'lenet5'; expected one of: lenet, lenet-relu,", "resnet18",
                           "; did you mean 'lenet'?"]),
    (["train", "ResNet18"], ["unknown model 'ResNet18'", "did you mean 'resnet18'?"]),
    (["train", "alexnet", "--resize", "28"], ["input size 28 is too small for alexnet: expected at least "]),
    (["train", "lenet", "--resize", "8"], ["input size 8 is too small for lenet: expected at least "]),
    (["train", "lenet", "--batch-size", "0"], ["batch-size must be a positive integer, got 0"]),
    (["train", "lenet", "--batch-size", "-3"], ["batch-size must be a positive integer, got -3"]),
    (["train", "lenet", "--batch-size", "x"], ["argument --batch-size: invalid int value: 'x'"]),
    (["train", "lenet", "--batch-size", "1e3"], ["argument --batch-size: invalid int value: '1e3'"]),
    (["train", "lenet", "--epochs", "1.5"], ["argument --epochs: invalid int value: '1.5'"]),
    (["train", "lenet", "--epochs", "0"], ["epochs must be a positive integer, got 0"]),
    (["train", "lenet", "--lr", "0"], ["lr must be a number > 0"]),
    (["train", "lenet", "--lr", "-1"], ["lr must be a number > 0"]),
    (["train", "lenet", "--lr", "nan"], ["lr must be a number > 0", "nan"]),
    (["train", "lenet", "--lr", "inf"], ["lr must be a number > 0 (and finite) that float32 holds", "got inf"]),
    (["train", "lenet", "--lr", "1e300"], ["lr must be a number > 0 (and finite) that float32 holds (at most "
                                           "3.4e+38), got 1e+300"]),
    (["train", "lenet", "--weight-decay", "inf"], ["weight-decay must be a number >= 0 (and finite), got inf"]),
    (["train", "lenet", "--momentum", "1"], ["momentum must be below 1"]),
    (["train", "lenet", "--label-smoothing", "-0.1"], ["label-smoothing must be a number >= 0"]),
    (["train", "lenet", "--seed", "-1"], ["seed must be an integer in [0, 2**32), got -1"]),
    (["train", "lenet", "--seed", str(2**32)], ["seed must be an integer in [0, 2**32)"]),
    (["train", "lenet", "--checkpoint-every", "-5"], ["checkpoint-every must be an integer >= 0, got -5"]),
    (["train", "lenet", "--optimizer", "nesterov"], ["nesterov needs momentum > 0"]),
    (["train", "lenet", "--optimizer", "adagrad"], ["argument --optimizer: invalid choice: 'adagrad'", "'rmsprop'"]),
    (["train", "lenet", "--schedule", "poly"], ["argument --schedule: invalid choice: 'poly'", "'multistep'"]),
    (["train", "lenet", "--schedule", "step"], ["schedule step needs --step-size EPOCHS"]),
    (["train", "lenet", "--device", "tpu"], ["device must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"]),
    (["train", "lenet", "--device", "cuda:x"], ["device must be auto, cpu, cuda, cuda:N or mps; got 'cuda:x'"]),
    (["train", "lenet", "--recipe", "turbo"], ["argument --recipe: invalid choice: 'turbo'"]),
    (["train", "lenet", "--ops", "numpy"], ["argument --ops: invalid choice: 'numpy'"]),
    (["train", "lenet", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["train", "lenet", "--lr"], ["argument --lr: expected one argument"]),
    (["train"], ["expected a model name (see `cnnlab models`), a --config file naming one, or --resume RUN_DIR"]),
    (["train", "lenet", "--resume", "somewhere"], ["--resume takes the run's own config"]),
    (["train", "--resume", "somewhere", "--lr", "3"], ["--resume takes the run's own config"]),
])
def test_bad_train_arguments(argv, needles, capsys, no_data):
    assert_one_line(*run(argv, capsys), *needles)


@pytest.mark.parametrize("argv, needles", [
    (["summary", "lenet5"], ["unknown model 'lenet5'"]),
    (["summary", "lenet", "--input", "1,1,28"], ["--input must be N,C,H,W with four integers", "'1,1,28'"]),
    (["summary", "lenet", "--input", "a,b,c,d"], ["--input must be N,C,H,W with four integers"]),
    (["summary", "lenet", "--input", "1,1,28,27"], ["square image (H == W), got '1,1,28,27'"]),
    (["summary", "lenet", "--input", "0,1,28,28"], ["--input must be positive"]),
    (["summary", "lenet", "--input", "1,1,2,2"], ["input size 2 is too small for lenet: expected at least "]),
    (["summary", "alexnet", "--input", "1,1,64,64"], ["too small for alexnet: expected at least "]),
    (["summary", "lenet", "--ops", "numpy"], ["argument --ops: invalid choice: 'numpy'"]),
])
def test_bad_summary_arguments(argv, needles, capsys):
    assert_one_line(*run(argv, capsys), *needles, command="summary")


@pytest.mark.parametrize("argv, needles", [
    (["frobnicate"], ["invalid choice: 'frobnicate'", "'train'"]),
    ([], ["the following arguments are required: command"]),
    (["eval", "no-such.pt"], ["checkpoint no-such.pt does not exist"]),
    (["predict", "no-such.pt"], ["the following arguments are required: images"]),
    (["predict", "x.pt", "a.png", "--json", "--jsonl"], ["argument --jsonl: not allowed with argument --json"]),
    (["export", "no-such.pt"], ["the following arguments are required: --output"]),
])
def test_bad_commands(argv, needles, capsys):
    code, err = run(argv, capsys)
    assert_one_line(code, err, *needles, command=argv[0] if argv and argv[0] != "frobnicate" else "")


# What each subcommand needs besides flags, so that the unknown flag is the only thing wrong with its command line.
POSITIONALS = {"train": ["lenet"], "eval": ["x.pt"], "summary": ["lenet"], "report": ["run"],
               "predict": ["x.pt", "a.png"], "export": ["x.pt", "--output", "x.onnx"], "explore": ["runs"],
               "lr-find": ["lenet"], "compare": ["run"], "study": ["name"], "sweep": ["lenet"]}


@pytest.mark.parametrize("command", sorted(cli.build_parser()._subparsers._group_actions[0].choices))
def test_an_unknown_flag_is_named_by_its_subcommand(command, capsys):
    # lr-find takes fewer training flags than train: `--epochs` is unknown to it, and is lr-find's error to report.
    unknown = ["--epochs", "3"] if command == "lr-find" else ["--bogus"]
    code, err = run([command, *POSITIONALS.get(command, []), *unknown], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0] == f"cnnlab {command}: error: unrecognized arguments: {' '.join(unknown)} (see --help)"


# ------------------------------------------------------------------------------------------- run folders
def test_out_that_is_a_file(tmp_path, capsys, data_dir):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert_one_line(*run(["train", "lenet", "--out", str(a_file)], capsys), f"--out {a_file} is a file")
    assert_one_line(*run(["train", "lenet", "--out", str(a_file / "run")], capsys),
                    f"cannot write the run folder {a_file / 'run'}: Not a directory")


def test_out_on_a_read_only_file_system(capsys, data_dir):
    assert_one_line(*run(["train", "lenet", "--out", "/proc/cnnlab-run"], capsys),
                    "cannot write the run folder /proc/cnnlab-run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_under_a_read_only_folder(tmp_path, capsys, data_dir):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert_one_line(*run(["train", "lenet", "--out", str(locked / "run")], capsys),
                    f"cannot write the run folder {locked / 'run'}: Permission denied")


def test_existing_run_folder_needs_force_and_force_works(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    tiny = ["train", "lenet", "--epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1",
            "--out", str(out), "--no-report", "--quiet"]
    assert_one_line(*run(tiny, capsys), f"run folder {out} already holds files (notes.txt); pass --force")
    assert not (out / "last.pt").exists()
    # What an earlier run of another model left: --force must not let it pass for this run's.
    (out / "report.html").write_text("<h1>resnet18</h1>")
    (out / "tb").mkdir()
    (out / "tb" / "events.out.tfevents.1.old-run").write_bytes(b"old")
    code, err = run([*tiny, "--force"], capsys)
    assert code == 0 and not [line for line in err if "error" in line], err  # notes on a 1-batch run may come
    assert (out / "last.pt").is_file() and (out / "notes.txt").read_text() == "precious"
    assert not (out / "report.html").exists()  # --no-report: no report at all, not the old one
    assert [p.name for p in (out / "tb").iterdir() if "old-run" in p.name] == []
    assert len(list((out / "tb").rglob("events.out.tfevents.*"))) == 1


def test_a_taken_out_folder_or_a_missing_init_from_is_said_before_the_data_is_read(tmp_path, capsys):
    # A folder of images can take minutes to decode; a data folder that cannot be read shows whether it was read.
    taken = tmp_path / "run"
    taken.mkdir()
    (taken / "notes.txt").write_text("precious")
    unread = ["train", "lenet", "--data-dir", str(tmp_path / "no-data-here")]
    assert_one_line(*run([*unread, "--out", str(taken)], capsys), f"run folder {taken} already holds files")
    (tmp_path / "out-file").write_text("")
    assert_one_line(*run([*unread, "--out", str(tmp_path / "out-file")], capsys), "is a file, expected a folder")
    missing = tmp_path / "best.pt"
    assert_one_line(*run([*unread, "--init-from", str(missing)], capsys),
                    f"--init-from {missing} does not exist; expected a checkpoint or weights file")
    (taken / "best.pt").write_bytes(b"")
    assert_one_line(*run([*unread, "--init-from", str(taken)], capsys),
                    f"--init-from {taken} is a folder; expected a checkpoint or weights file, such as "
                    f"{taken / 'best.pt'}")
    assert sorted(os.listdir(taken)) == ["best.pt", "notes.txt"]


def test_the_commands_given_for_a_torchrun_run_start_as_many_processes(tmp_path, capsys):
    # A resume with another process count is refused, yet every hint said `cnnlab train --resume RUN`.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = make_config("lenet", epochs=3, out=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "world_size": 2}))
    torchrun = ["torchrun", "--nproc-per-node", "2", "-m", "cnnlab", "train"]
    assert_one_line(*run(["report", str(run_dir)], capsys), "start it again with " + shlex.join(
        [*torchrun, "--config", str(run_dir / "config.json"), "--out", str(run_dir), "--force"]), command="report")
    (run_dir / "last.pt").write_bytes(b"")
    (run_dir / "interrupted.json").write_text("{}")
    assert read_run(run_dir).unfinished().endswith(f"`{shlex.join([*torchrun, '--resume', str(run_dir)])}` "
                                                   "finishes it")
    assert_one_line(*run(["report", str(run_dir)], capsys), f"cannot read checkpoint {run_dir / 'last.pt'}: corrupt "
                    "or truncated", command="report")  # one line: the note on an unfinished run comes after success
    assert resume_command(run_dir, 1) == f"cnnlab train --resume {run_dir}"  # the trainer's line gives its count
    assert resume_command(tmp_path / "elsewhere", 2) == shlex.join([*torchrun, "--resume", str(tmp_path / "elsewhere")])


def test_resume_of_a_folder_without_last_pt(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert_one_line(*run(["train", "--resume", str(tmp_path)], capsys),
                    f"checkpoint {tmp_path / 'last.pt'} does not exist")
    assert_one_line(*run(["train", "--resume", str(tmp_path / "nope")], capsys), "does not exist")


def test_resume_of_a_checkpoint_file_or_a_read_only_run_folder_is_one_line(tmp_path, capsys, monkeypatch, data_dir):
    """`--resume RUN/last.pt` named "RUN/last.pt/last.pt", which does not exist; a run folder that cannot be written
    (a read-only mount) was an internal OSError once the data was loaded and the model built."""
    run_dir = tmp_path / "run"
    assert cli.main(["train", "lenet", "--epochs", "2", "--limit-train-batches", "1", "--limit-val-batches", "1",
                     "--out", str(run_dir), "--no-report", "--quiet"]) == 0
    assert_one_line(*run(["train", "--resume", str(run_dir / "last.pt")], capsys),
                    f"--resume takes a run folder; got the file {run_dir / 'last.pt'}, expected its folder {run_dir}")
    write_bytes = Path.write_bytes

    def read_only(path, data):
        if path.parent == run_dir:
            raise OSError(30, "Read-only file system")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    code, err = run(["train", "--resume", str(run_dir)], capsys)  # finished: nothing to write, so nothing refused
    assert code == 0 and not err, err
    (run_dir / "result.json").unlink()  # as if killed before its final figures: this resume would write
    monkeypatch.setattr(cnnlab.train.launch, "build_run", lambda *a, **k: pytest.fail("the run was built"))
    assert_one_line(*run(["train", "--resume", str(run_dir)], capsys),
                    f"cannot write the run folder {run_dir}: Read-only file system")


def test_a_run_killed_before_its_first_checkpoint_is_started_again_not_resumed(tmp_path, capsys, monkeypatch):
    """What `kill -9` in the first epoch leaves (RunFolder's config.json and tb/, no last.pt): the report's line
    advised `cnnlab train --resume`, which then failed for want of last.pt without saying why."""
    run_dir = tmp_path / "run"
    (run_dir / "tb").mkdir(parents=True)
    config = make_config("lenet", "fast", epochs=3, seed=7, out=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "world_size": 1}))
    restart = shlex.join(["cnnlab", "train", "--config", str(run_dir / "config.json"), "--out", str(run_dir),
                          "--force"])
    for argv, needles in ((["train", "--resume", str(run_dir)], ["stopped before it wrote its first checkpoint"]),
                          (["report", str(run_dir)], ["before its first checkpoint, which cannot be resumed"])):
        code, err = run(argv, capsys)
        assert_one_line(code, err, *needles, f"start it again with {restart}", command=argv[0])
        assert "--resume" not in err[0], err[0]
    # The command given starts the same run again.
    started = []
    monkeypatch.setattr(cnnlab.train, "train", lambda model, recipe, **kw: started.append((model, recipe, kw)) or [])
    assert run(shlex.split(restart)[1:], capsys) == (0, [])
    (model, recipe, kw), = started
    assert kw.pop("force") is True
    settings = {k: v for k, v in kw.items() if k not in ("quiet", "report")}
    assert make_config(model, recipe, **settings) == config


def test_a_run_refused_by_a_check_of_the_data_leaves_no_folder_behind(tmp_path, capsys, data_dir):
    """More held-out images than the training set has, an input too small for the model, a study whose every
    variant is refused (it left a study folder with an empty table and exit 0): nothing new in the runs folder."""
    runs = tmp_path / "runs"
    cases = [(["train", "lenet", "--val-split", "60000", "--out", str(runs / "a" / "run")], "train",
              "holds out 60000 of 60000 samples, but at most 59990 can be held out"),
             (["train", "alexnet", "--resize", "28", "--out", str(runs / "run")], "train",
              "input size 28 is too small for alexnet"),
             (["study", "lenet-batch-norm", "--val-split", "60000", "--quiet", "--out", str(runs / "study")], "study",
              "every variant was refused before training, so the study has no results; variant none-lr0.1: val=")]
    for argv, command, needle in cases:
        assert_one_line(*run(argv, capsys), needle, command=command)
        assert not runs.exists(), sorted(p.relative_to(tmp_path) for p in runs.rglob("*"))


def test_the_speedrun_recipe_without_cuda_names_the_cpu_recipes(capsys, monkeypatch, no_data):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cnnlab.device, "mps_available", lambda: False)
    assert_one_line(*run(["train", "lenet", "--recipe", "speedrun"], capsys),
                    "the speedrun recipe is made for a CUDA GPU", "so it would run on the cpu: expected --recipe fast "
                    "or cpu10 there (or --device cpu to run speedrun on it anyway)")


def test_the_speedrun_recipe_on_an_explicit_cpu_runs_after_one_warning(tmp_path, capsys, data_dir):
    argv = ["train", "lenet", "--recipe", "speedrun", "--device", "cpu", "--no-compile", "--epochs", "1",
            "--limit-train-batches", "1", "--limit-val-batches", "1", "--out", str(tmp_path / "r"), "--no-report",
            "--quiet"]
    code, err = run(argv, capsys)
    assert code == 0 and (tmp_path / "r" / "last.pt").is_file(), err
    assert [line for line in err if "speedrun" in line] == [
        "cnnlab: warning: the speedrun recipe is made for a CUDA GPU (bf16 autocast, torch.compile); on the cpu it is "
        "far slower than --recipe fast or cpu10, which are made for a CPU"]


# ------------------------------------ output files (each was an internal error, exit 1, before the one-line check)
# A path under a regular file (its folder cannot exist) and /proc (no file can be made there) are unwritable for
# root as well; a chmod'ed folder is not, so that case is skipped as root.
@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("precious")
    return path


def _unwritable(a_file: Path, name: str) -> list[tuple[str, str]]:
    """(output path, what the one line says) for each way an output file cannot be written."""
    return [(f"/proc/{name}", f"cannot write /proc/{name}: folder /proc is not writable"),
            (str(a_file / name), f"cannot write {a_file / name}: folder {a_file} is a file, not a folder")]


def test_export_to_an_unwritable_or_missing_folder(trained_run, a_file, tmp_path, capsys):
    cases = [*_unwritable(a_file, "m.onnx"),
             (str(tmp_path / "no" / "m.onnx"), f"folder {tmp_path / 'no'} does not exist")]
    for output, needle in cases:
        assert_one_line(*run(["export", str(trained_run / "last.pt"), "--output", output], capsys), needle,
                        command="export")


def test_export_suffix_must_match_the_format(trained_run, tmp_path, capsys):
    for fmt, name in (("onnx", "m.pt2"), ("pt2", "m.onnx"), ("onnx-int8", "m.pt2")):
        argv = ["export", str(trained_run / "last.pt"), "--format", fmt, "--output", str(tmp_path / name),
                "--calibration", "8"] if fmt == "onnx-int8" else ["export", str(trained_run / "last.pt"), "--format",
                                                                   fmt, "--output", str(tmp_path / name)]
        assert_one_line(*run(argv, capsys), f"--format {fmt} writes a .", f"got --output {tmp_path / name}",
                        command="export")
    assert list(tmp_path.iterdir()) == []


def test_report_into_an_unwritable_run_folder_is_refused_before_the_work(run_copy, capsys, monkeypatch):
    import cnnlab.io
    import cnnlab.report.html

    monkeypatch.setattr(cnnlab.report.html, "build_report", lambda *a, **k: pytest.fail("scored before checking"))

    def read_only(*args, **kwargs):  # what a read-only file system answers, for root too
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cnnlab.io.tempfile, "mkstemp", read_only)
    assert_one_line(*run(["report", str(run_copy)], capsys),
                    f"cannot write {run_copy / 'report.html'}: folder {run_copy} is not writable (Read-only file "
                    "system)", command="report")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_into_a_read_only_run_folder(run_copy, capsys):
    run_copy.chmod(0o555)
    try:
        assert_one_line(*run(["report", str(run_copy)], capsys), "is not writable (Permission denied)",
                        command="report")
    finally:
        run_copy.chmod(0o755)


def test_compare_plot_that_cannot_be_written(trained_run, a_file, tmp_path, capsys):
    for plot, needle in [*_unwritable(a_file, "c.png"), (str(tmp_path), f"plot file {tmp_path} is a folder")]:
        assert_one_line(*run(["compare", str(trained_run), "--plot", plot], capsys), needle, command="compare")


def test_lr_find_out_that_cannot_be_written(a_file, capsys, monkeypatch, no_data):
    import cnnlab.lr_find

    monkeypatch.setattr(cnnlab.lr_find, "lr_find", lambda *a, **k: pytest.fail("swept before checking --out"))
    for out, needle in _unwritable(a_file, "lr.png"):
        assert_one_line(*run(["lr-find", "lenet", "--out", out], capsys), needle, command="lr-find")


def test_kernel_out_that_cannot_be_written_or_exists(a_file, tmp_path, capsys):
    figure = tmp_path / "kernel.png"
    figure.write_bytes(b"precious")
    cases = [*_unwritable(a_file, "k.png"), (str(tmp_path), f"--out {tmp_path} is a folder, expected a file name"),
             (str(figure), f"--out {figure} already exists; pass --force")]
    for out, needle in cases:
        assert_one_line(*run(["kernel", "--out", out], capsys), needle, command="kernel")
    assert figure.read_bytes() == b"precious"
    assert run(["kernel", "--out", str(figure), "--force"], capsys)[0] == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SWEEP = ["sweep", "lenet", "--param", "lr=loguniform:1e-3:1", "--val-split", "0.1"]


def test_study_and_sweep_out_naming_a_file(a_file, capsys, no_data):
    assert_one_line(*run(["study", "lenet-batch-norm", "--out", str(a_file)], capsys),
                    f"--out {a_file} is a file", command="study")
    pytest.importorskip("optuna")
    assert_one_line(*run([*SWEEP, "--out", str(a_file)], capsys), f"--out {a_file} is a file", command="sweep")
    assert a_file.read_text() == "precious"


def test_sweep_without_the_sweep_extra_names_it(tmp_path, capsys, monkeypatch, no_data):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` meets when it is not installed
    assert_one_line(*run([*SWEEP, "--out", str(tmp_path / "s")], capsys),
                    'cnnlab sweep needs the sweep extra (pip install "cnnlab[sweep]"), missing optuna', command="sweep")
    assert not (tmp_path / "s").exists()


def test_a_postgresql_sweep_without_psycopg_names_the_sweep_extra(tmp_path, capsys, monkeypatch, no_data):
    """Optuna installed on its own lacks the extra's PostgreSQL driver; Optuna's own error named no package and
    came out as an internal error."""
    pytest.importorskip("optuna")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    argv = [*SWEEP, "--out", str(tmp_path / "s"), "--storage", "postgresql://127.0.0.1:1/study"]
    assert_one_line(*run(argv, capsys), 'needs the sweep extra (pip install "cnnlab[sweep]"), missing psycopg',
                    command="sweep")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("storage, needle", [
    ("bogus://x", "cannot open the study database bogus://x: Can't load plugin"),
    ("sqlite:////nonexistent-cnnlab-folder/x.db", "cannot open the study database sqlite:////nonexistent-cnnlab-folder"),
])
def test_a_sweep_refused_by_its_storage_leaves_no_folder_behind(storage, needle, tmp_path, capsys, no_data):
    pytest.importorskip("optuna")
    out = tmp_path / "sweeps" / "s"
    assert_one_line(*run([*SWEEP, "--out", str(out), "--storage", storage], capsys), needle, command="sweep")
    assert list(tmp_path.iterdir()) == []


def test_joining_a_sweep_the_storage_does_not_hold_leaves_no_folder_behind(tmp_path, capsys, no_data):
    pytest.importorskip("optuna")
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path / 'db' / 'studies.db'}"
    assert_one_line(*run(["sweep", "--study", "nosuch", "--storage", url, "--out", str(tmp_path / "sweeps" / "j")],
                         capsys), f"no study 'nosuch' in {url}", command="sweep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_explore_port_out_of_range(port, capsys):
    assert_one_line(*run(["explore", "--port", port], capsys), "--port must be a TCP port from 0 to 65535",
                    command="explore")


@pytest.mark.parametrize("size, needle", [
    ("16x", "argument --input-size: invalid size value: '16x'"),
    ("16x32x3", "argument --input-size: invalid size value: '16x32x3'"),
    ("4x300", "--input-size must be a side (or a height and a width) from 8 to 2048, got 4"),
    ("3000", "--input-size must be a side (or a height and a width) from 8 to 2048, got 3000"),
])
def test_explore_input_size_is_a_side_or_height_x_width(size, needle, capsys):
    assert_one_line(*run(["explore", "model.onnx", "--input-size", size], capsys), needle, command="explore")


def test_explore_passes_a_height_and_width_on(monkeypatch):
    import cnnlab.explore

    seen = {}
    monkeypatch.setattr(cnnlab.explore, "explore", lambda *a, **k: seen.update(k))
    assert cli.main(["explore", "model.onnx", "--input-size", "16X40"]) == 0 and seen["input_size"] == (16, 40)
    assert cli.main(["explore", "model.onnx", "--input-size", "24"]) == 0 and seen["input_size"] == 24


@pytest.mark.parametrize("extra, needle", [
    (["--export", "page.html", "--port", "9000"], "--port says how to serve the page, and --export page.html "
                                                  "writes it to a file instead"),
    (["--export", "page.html", "--host", "0.0.0.0", "--port", "0"], "--host and --port say how to serve"),
    (["--export", "page.html", "--no-browser"], "--no-browser says how to serve the page"),
    (["--force"], "--force lets --export overwrite its file, and no --export was given"),
])
def test_explore_flags_that_would_do_nothing_are_refused(extra, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "images").mkdir()
    assert_one_line(*run(["explore", "model.onnx", "--images", "images", *extra], capsys), needle,
                    command="explore")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "runs"]  # nothing opened, nothing written


# --------------------------------------------------------------------------------- --debug and the unexpected
def test_debug_shows_the_real_exception(capsys):
    for argv in (["--debug", "train", "lenet5"], ["train", "lenet5", "--debug"]):
        with pytest.raises(CnnlabError, match="unknown model 'lenet5'"):
            cli.main(argv)


def test_unexpected_failure_is_one_internal_error_line_unless_debug(monkeypatch, capsys):
    import cnnlab.train

    def broken(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory:\n  you tried to allocate 5 TB")

    monkeypatch.setattr(cnnlab.train, "train", broken)
    code, err = run(["train", "lenet"], capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("cnnlab train: internal error: RuntimeError: DefaultCPUAllocator: can't allocate")
    assert "--debug" in err[0]
    with pytest.raises(RuntimeError, match="can't allocate"):
        cli.main(["--debug", "train", "lenet"])


def test_ctrl_c_outside_training_is_one_line_and_130(monkeypatch, capsys):
    import cnnlab.explore.evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.explore.evaluation, "evaluate_any", interrupted)
    code, err = run(["eval", "x.pt"], capsys)
    assert code == 130 and err == ["cnnlab eval: interrupted"]


def test_a_multi_line_cnnlab_error_still_prints_one_line(monkeypatch, capsys):
    import cnnlab.train

    def fussy(*args, **kwargs):
        raise CnnlabError("expected this,\nand that")

    monkeypatch.setattr(cnnlab.train, "train", fussy)
    assert run(["train", "lenet"], capsys) == (2, ["cnnlab train: error: expected this, and that"])


# -------------------------------------------------------------------------------------- the real executable
@pytest.mark.parametrize("argv, needle", [
    (["train", "lenet5"], "cnnlab train: error: unknown model 'lenet5'"),
    (["train", "lenet", "--batch-size", "x"], "cnnlab train: error: argument --batch-size: invalid int value"),
    (["summary", "lenet", "--input", "1,1,28"], "cnnlab summary: error: --input must be N,C,H,W"),
])
def test_real_process_stderr_is_exactly_one_line(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(needle), proc.stderr
    assert proc.stdout == ""


def test_another_librarys_message_is_shortened_at_a_sentence_or_a_word():
    """cnnlab.errors.summary: a message never ends mid-word, as torch's truncated-zip advice once did."""
    miniz = ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal "
             "miniz error. If you are seeing this error, there is a high chance that your file is corrupted.")
    assert summary(RuntimeError(miniz)) == ("PytorchStreamReader failed reading zip archive: failed finding central "
                                            "directory. This is an internal miniz error.")
    assert summary("one two three four five six", 15) == "one two three..."
    assert summary(KeyError()) == "KeyError" and summary("a\n  b") == "a b"


def test_a_c_plus_plus_source_location_is_left_out_of_the_summary():
    """onnxruntime's file, line and function signature filled the 200 characters its refusal was given, and the
    reason after them was cut off (seen with onnxruntime 1.30 and a file of a newer IR version)."""
    ort = ("[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:202 onnxruntime::Model::"
           "Model(onnx::ModelProto&&, const onnxruntime::PathString&, const onnxruntime::IOnnxRuntimeOpSchemaRegistry"
           "List*, const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) Unsupported model IR "
           "version: 14, max supported IR version: 13\n")
    assert summary(ort, 200) == ("[ONNXRuntimeError] : 1 : FAIL : Unsupported model IR version: 14, max supported IR "
                                 "version: 13")
    nested = "x.cc:1 f(std::function<void(int)>) bad (really)"  # the signature's own parentheses, then the reason's
    assert summary(nested) == "bad (really)"
    assert summary("see file.cc:3 for why (it is a comment)") == "see file.cc:3 for why (it is a comment)"


@pytest.mark.parametrize("argv", [["sweep", "lenet", "--param", "lr=uniform:0.1:1"], ["study", "lenet-batch-norm"],
                                  ["lr-find", "lenet"], ["eval", "x.pt"]])
def test_commands_other_than_train_are_refused_under_torchrun(argv, capsys, monkeypatch):
    # Each of torchrun's processes ran the whole command: two sweeps' workers on one folder, a study whose second
    # variant found the process group gone, an lr-find per shard with two answers.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_one_line(*run(argv, capsys), "only cnnlab train runs across processes, and torchrun started 2 of them",
                    f"expected cnnlab {argv[0]} without torchrun", command=argv[0])


def test_explore_without_its_web_stack_names_the_extra_and_only_then(monkeypatch, capsys):
    """Without Starlette the explore command names the extra to install; an import of cnnlab's own failing is not
    passed off as a missing extra (it read "missing cnnlab.errors" once, while a file was half written)."""
    # the package imported afresh below becomes cnnlab's attribute; put the one every other test holds back after
    monkeypatch.setattr(cnnlab, "explore", cnnlab.explore)
    for name in [m for m in sys.modules if m == "cnnlab.explore" or m.startswith("cnnlab.explore.")]:
        monkeypatch.delitem(sys.modules, name)
    starlette = [m for m in sys.modules if m.split(".")[0] == "starlette"] or ["starlette"]
    for name in starlette:  # None in sys.modules: importing it raises ImportError naming it
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["explore", "model.onnx"]) == 2
    assert "needs the explore extra (pip install 'cnnlab[explore]'), missing starlette" in capsys.readouterr().err
    for name in starlette:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cnnlab.explore", None)
    assert cli.main(["explore", "model.onnx"]) == 1
    assert "explore extra" not in capsys.readouterr().err


def test_serving_without_uvicorn_names_the_explore_extra(tmp_path, monkeypatch, capsys):
    """Starlette installed without uvicorn (as FastAPI installs it): serving failed as an internal error, after the
    runs or the model were opened. A static page (--export) needs no server."""
    pytest.importorskip("starlette")
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    (tmp_path / "runs").mkdir()
    assert_one_line(*run(["explore", str(tmp_path / "runs"), "--no-browser", "--port", "0"], capsys),
                    "needs the explore extra (pip install 'cnnlab[explore]'), missing uvicorn", command="explore")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_an_onnx_model_without_the_export_extra_names_it(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: onnxruntime is asked for first")
    Image.new("L", (28, 28)).save(tmp_path / "picture.png")
    argv = [command, str(model), *([str(tmp_path / "picture.png")] if command == "predict" else [])]
    assert_one_line(*run(argv, capsys), "opening an ONNX model needs onnx and onnxruntime",
                    "pip install 'cnnlab[export]'", command=command)
