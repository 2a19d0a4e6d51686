"""Bad command lines end with exit code 2 and ONE line on stderr, never a traceback.

The contract (docs/design.md, "Errors"): ``cnnlab <command>: error: <what was expected, what was given>``;
argparse's own errors are shortened to one line too; tracebacks appear only with ``--debug``; an unexpected
failure (a bug, memory or disk running out) is one ``internal error`` line with exit code 1.
Most cases run ``cli.main`` in-process (cheap); a few run the real executable to see its whole stderr.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab import cli
from cnnlab.errors import CnnlabError

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``cnnlab argv`` run in-process."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    return code, capsys.readouterr().err.splitlines()


def assert_one_line(code: int, err: list[str], *needles: str, command: str = "train") -> None:
    assert code == 2, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith(f"cnnlab {command}: error: ") or err[0].startswith("cnnlab: error: "), err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])


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
    (["train", "lenet", "--lr", "inf"], ["lr must be a number > 0 (and finite), got inf"]),
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
    (["export", "no-such.pt"], ["the following arguments are required: --output"]),
])
def test_bad_commands(argv, needles, capsys):
    code, err = run(argv, capsys)
    assert_one_line(code, err, *needles, command=argv[0] if argv and argv[0] != "frobnicate" else "")


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


def test_resume_of_a_folder_without_last_pt(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert_one_line(*run(["train", "--resume", str(tmp_path)], capsys),
                    f"checkpoint {tmp_path / 'last.pt'} does not exist")
    assert_one_line(*run(["train", "--resume", str(tmp_path / "nope")], capsys), "does not exist")


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
    import cnnlab.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.evaluate, "evaluate_checkpoint", interrupted)
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
