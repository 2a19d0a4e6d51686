"""What a user trips over: --version, model-name suggestions, cuda:N, the one-epoch chart, busy-CPU advice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnlab
import cnnlab.device
from cli_support import fresh_python
from cnnlab import cli
from cnnlab.device import advised_threads, check_device_name, oversubscription_hint, resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.export import RELATIVE_TOLERANCE, TOLERANCE
from cnnlab.models import model_info
from cnnlab.report.curves import curves_figure
from cnnlab.train import make_config


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cnnlab {cnnlab.__version__}"


@pytest.mark.parametrize("given, suggested", [
    ("ResNet18", "resnet18"), ("LENET", "lenet"), ("googlenet2", "googlenet"), ("lenet_relu", "lenet-relu"),
])
def test_unknown_model_suggests_the_closest_name(given, suggested):
    with pytest.raises(CnnlabError, match=f"unknown model '{given}'; expected one of: .*; did you mean "
                                          f"'{suggested}'\\?$"):
        model_info(given)


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(CnnlabError) as e:
        model_info("transformer")
    assert "did you mean" not in str(e.value)


@pytest.mark.parametrize("name", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted_by_train(name):
    assert make_config("lenet", device=name).device == name


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:-1", "cuda:one", "CPU", "cuda:0 ", 0])
def test_bad_device_names(name):
    with pytest.raises(CnnlabError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        check_device_name(name)
    with pytest.raises(CnnlabError, match="device must be"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_train_on_cuda_n_without_cuda_says_so(capsys):
    assert cli.main(["train", "lenet", "--device", "cuda:1", "--epochs", "1"]) == 2
    assert "device cuda:1 was asked for but torch sees no CUDA device" in capsys.readouterr().err  # it said "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_devices():
    n = torch.cuda.device_count()
    assert resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
    with pytest.raises(CnnlabError, match=f"torch sees {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def _rows(n: int) -> list[dict[str, float]]:
    return [{"epoch": float(e), "train_loss": 1 / e, "val_loss": 1.1 / e, "val_acc": 0.5 + e / 100,
             "train_acc": 0.4 + e / 100} for e in range(1, n + 1)]


def _visible_ticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_a_one_epoch_chart_shows_its_point_at_a_whole_epoch():
    ax = curves_figure(_rows(1)).axes[0]
    lo, hi = ax.get_xlim()
    assert lo <= 0.5 and hi >= 1.5  # the point sits well inside the box, not at the edge of a 0.1-wide axis
    assert _visible_ticks(ax) == [1.0]
    assert ax.lines and all(line.get_marker() not in (None, "", "None") for line in ax.lines)  # a visible point


@pytest.mark.parametrize("n", [3, 40])
def test_longer_charts_have_integer_epoch_ticks_over_the_whole_run(n):
    ax = curves_figure(_rows(n)).axes[0]
    ticks = _visible_ticks(ax)
    assert all(t == int(t) for t in ticks) and min(ticks) <= 1 + n // 5 and max(ticks) >= n - n // 5
    assert ax.get_xlim()[1] >= n and ax.get_xlim()[0] <= 1


@pytest.fixture
def machine(monkeypatch):
    """Set the load average, the cores in use now (by default the same), core count and torch thread count the hint
    sees."""
    def set_machine(load, cores, threads, now=None):
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(cnnlab.device, "cores_in_use", lambda: load if now is None else now)
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)

    return set_machine


def test_busy_cpu_with_several_threads_gets_one_line_of_advice(machine):
    machine(load=1.9, cores=2, threads=2)
    hint = oversubscription_hint()
    assert hint and "\n" not in hint and "OMP_NUM_THREADS=1" in hint and "load 1.9 on 2 cores" in hint
    machine(load=5.0, cores=8, threads=8)
    assert "OMP_NUM_THREADS=3" in oversubscription_hint()


@pytest.mark.parametrize("load, cores, threads", [(0.1, 2, 2), (1.9, 2, 1), (3.0, 16, 8), (0.0, 1, 1)])
def test_idle_cpu_or_one_thread_gets_no_advice(machine, load, cores, threads):
    machine(load, cores, threads)
    assert oversubscription_hint() is None


def test_a_load_average_left_by_a_run_that_ended_gets_no_advice(machine):
    """The 1-minute average still counts the run before this one; the cores in use now say the CPU is idle."""
    machine(load=0.8, cores=2, threads=2, now=0.05)
    assert oversubscription_hint() is None and advised_threads() is None
    machine(load=1.9, cores=2, threads=2, now=1.0)  # busy now too: one core free
    assert advised_threads() == 1 and "load 1.0 on 2 cores" in oversubscription_hint()


def test_cores_in_use_counts_a_busy_process(tmp_path):
    """The real /proc/stat: a process spinning on one core shows as about one core in use."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat (not Linux)")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert 0.7 <= cnnlab.device.cores_in_use(0.3) <= (os.cpu_count() or 1)
    finally:
        spinner.kill()
        spinner.wait()


def test_the_advised_thread_count_is_the_one_the_hint_names(machine):
    machine(load=1.9, cores=2, threads=2)
    assert advised_threads() == 1 and "OMP_NUM_THREADS=1 " in oversubscription_hint()
    machine(load=5.0, cores=8, threads=8)
    assert advised_threads() == 3 and "OMP_NUM_THREADS=3 " in oversubscription_hint()
    for load, cores, threads in [(0.1, 2, 2), (1.9, 2, 1), (3.0, 16, 8)]:
        machine(load, cores, threads)
        assert advised_threads() is None and oversubscription_hint() is None


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_train_follows_the_thread_advice(tmp_path):
    """`make train` printed the advice and trained with torch's own thread count anyway (5x slower on a shared CPU).
    A stand-in venv: its python answers the advice, its cnnlab says what it was started with."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text('#!/bin/sh\necho "$ADVICE"\n')
    (venv / "bin" / "cnnlab").write_text('#!/bin/sh\necho "cnnlab $* OMP_NUM_THREADS=${OMP_NUM_THREADS-unset}"\n')
    for exe in (venv / "bin").iterdir():
        exe.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: `make setup` has nothing to do

    def make_train(advice: str, **env: str) -> str:
        shell = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        proc = subprocess.run(["make", "-s", "-C", str(Path(__file__).resolve().parents[1]), "train",
                               f"VENV={venv}"], env={**shell, "ADVICE": advice, **env}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()[-1]

    assert make_train("1") == "cnnlab train lenet OMP_NUM_THREADS=1"
    assert make_train("") == "cnnlab train lenet OMP_NUM_THREADS=unset"  # an idle CPU: torch's own count
    assert make_train("1", OMP_NUM_THREADS="3") == "cnnlab train lenet OMP_NUM_THREADS=3"  # the user's count wins
    # The Makefile's question, asked of the real library: a count, or nothing.
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    threads = make_train("").rsplit("=", 1)[1]
    assert threads == "unset" or int(threads) >= 1


def test_hint_never_changes_the_thread_count(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    before = torch.get_num_threads()
    oversubscription_hint()
    assert torch.get_num_threads() == before


def test_no_load_average_no_advice(monkeypatch):
    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert oversubscription_hint() is None


@pytest.mark.slow
def test_training_needs_neither_the_export_nor_the_tb_extra(tmp_path, data_dir):
    """onnx, onnxscript, onnxruntime and tensorboard are extras: a run without them still trains and reports."""
    import subprocess
    import sys

    script = ("import sys\n"
              "for name in ('onnx', 'onnxruntime', 'onnxscript', 'tensorboard'):\n"
              "    sys.modules[name] = None  # as if not installed: importing it raises ModuleNotFoundError\n"
              "from cnnlab.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    env = {**os.environ, "CNNLAB_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script, "train", "lenet-relu", "--epochs", "1",
                          "--limit-train-batches", "2", "--limit-val-batches", "1", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (out / "result.json").is_file() and (out / "report.html").is_file() and not (out / "tb").exists()
    run = subprocess.run([sys.executable, "-c", script, "export", str(out / "best.pt"), "--output",
                          str(tmp_path / "m.onnx")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "pip install 'cnnlab[export]'" in run.stderr


def test_help_and_argument_errors_answer_without_loading_torch():
    """`cnnlab --help`, every command's --help and an argument error only parse flags: loading torch (and the
    report's matplotlib) for them made each take about 2 s. A command that runs still loads what it needs."""
    script = ("import sys\n"
              "from cnnlab import cli\n"
              "commands = cli.build_parser()._subparsers._group_actions[0].choices\n"
              "for argv in [['--help'], ['train', '--epochs', 'x']] + [[name, '--help'] for name in commands]:\n"
              "    try:\n"
              "        cli.main(argv)\n"
              "    except SystemExit as e:\n"
              "        assert e.code in (0, 2), (argv, e.code)\n"
              "    loaded = [name for name in ('torch', 'matplotlib', 'numpy') if name in sys.modules]\n"
              "    print(' '.join(argv), loaded, file=sys.stderr)\n"
              "print('=', len(commands), 'torch' in sys.modules)\n"
              "cli.main(['datasets'])\n"
              "print('=', 'torch' in sys.modules)\n")
    run = fresh_python(script)
    verdicts = [line for line in run.stdout.splitlines() if line.startswith("= ")]
    assert verdicts == ["= 14 False", "= True"], run.stderr  # all fourteen asked, torch loaded for `datasets` only
    assert "fashion-mnist" in run.stdout


def test_a_command_that_runs_no_network_starts_without_torchs_compiler():
    """torch._dynamo is a large import; `cnnlab models`, `--help` and the checkpoint reader's look at an archive
    need none of it (only torch.export's file-name constants, which torch._C holds)."""
    script = ("import sys, torch\n"
              "before = 'torch._dynamo' in sys.modules\n"
              "from cnnlab import cli\n"
              "from cnnlab.models.state_dict import zip_kind\n"
              "import cnnlab.pt2_check\n"
              "code = cli.main(['models'])\n"
              "zip_kind(sys.argv[1])\n"
              "print('dynamo', before, 'torch._dynamo' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", script, __file__], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "dynamo False False"


@pytest.mark.parametrize("command, flags", [
    ("train", ["--config", "--force", "--step-size", "--milestones", "--gamma", "rmsprop", "multistep"]),
    ("train", ["folder:PATH for your own images", "labelled by PATH/labels.csv", "folder:PATH/NAME.csv"]),
    ("lr-find", ["--start-lr", "--end-lr", "--steps", "--out", "--optimizer", "--dataset"]),
    ("predict", ["folders"]),
    ("export", [f"checked on random inputs to {TOLERANCE:.0e} + {RELATIVE_TOLERANCE:.0e} x the largest logit"
                .replace("e-0", "e-")]),  # export's own bound, as 1e-4 + 1e-5
])
def test_help_tells_the_new_flags(command, flags, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, and breaks "1e-5" at its hyphen
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in flags:
        assert flag in text, flag
