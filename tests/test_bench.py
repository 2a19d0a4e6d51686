"""benchmarks/bench.py, the benchmark driver: its plumbing, and a smoke run on CI's budget so that the
benchmarks cannot rot.

The driver lives in benchmarks/ (it runs the scripts beside it and is not shipped in the package), so it is loaded
from its file. No timing is asserted anywhere: the figures are recorded in docs/benchmarks.md, not tested.
"""

import ast
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.errors import CnnlabError

DRIVER = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _load_driver():
    spec = importlib.util.spec_from_file_location("cnnlab_bench_driver", DRIVER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


driver = _load_driver()
BENCHMARKS, D2L_PYTHON, QUICK, Bench, Budget, Run = (driver.BENCHMARKS, driver.D2L_PYTHON, driver.QUICK,
                                                     driver.Bench, driver.Budget, driver.Run)

ROW_KEYS = {"figure", "value", "unit", "machine", "cpu_count", "versions", "commit", "date", "command"}


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(Budget(), tmp_path / "data", tmp_path / "no-d2l" / "python", tmp_path)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_peak_rss_is_each_childs_own(bench):
    # getrusage(RUSAGE_CHILDREN) would report the big child's peak again for the small one; wait4 does not.
    # Linux carries the spawning process's peak resident size into a child's at exec (exec_mmap keeps the old
    # mm's high-water mark), so the big child must outgrow this (pytest) process's peak to be told apart.
    # The driver itself stays small: it imports no torch before its programs run.
    size = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 300  # Linux reports KiB
    big = bench.run("big", _python(f"b = b'x' * ({size} * 2**20)"), result=None)
    small = bench.run("small", _python("pass"), result=None)
    assert big.max_rss_mib >= size
    assert small.max_rss_mib < big.max_rss_mib - 200


def test_failing_program_is_one_line_naming_its_log(bench, tmp_path):
    with pytest.raises(CnnlabError, match=r"benchmark program boom failed \(exit 3\): last words \(log: ") as info:
        bench.run("boom", _python("import sys; print('first'); print('last words'); sys.exit(3)"), result=None)
    assert "\n" not in str(info.value)
    assert (tmp_path / "boom.log").read_text().splitlines() == ["first", "last words"]


def test_program_result_is_read_from_its_json(bench, tmp_path):
    out = tmp_path / "r.json"
    run = bench.run("ok", _python(f"import json; json.dump({{'images_per_s': 5}}, open({str(out)!r}, 'w'))"),
                    result=out)
    assert run.result == {"images_per_s": 5}


def test_commands_are_recorded_as_a_person_types_them(bench, tmp_path):
    argv = [sys.executable, "-m", "cnnlab", "train", "lenet", "--out", str(tmp_path / "runs" / "a b")]
    assert bench.command(argv) == "cnnlab train lenet --out '$TMP/runs/a b'"
    script = [sys.executable, str(BENCHMARKS / "seed_lenet.py"), "--d2l", "cnnlab"]
    assert bench.command(script, {"OMP_NUM_THREADS": "2"}) == \
        "OMP_NUM_THREADS=2 python benchmarks/seed_lenet.py --d2l cnnlab"


def test_launched_commands_read_as_torchrun(bench, tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab",
            "train", "lenet", "--out", str(tmp_path / "runs" / "x")]
    assert bench.command(argv, {"OMP_NUM_THREADS": "1"}) == \
        "OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m cnnlab train lenet --out $TMP/runs/x"


def test_run_records_its_wall_time_and_the_load_at_its_start(bench):
    run = bench.run("nap", _python("import time; time.sleep(0.3)"), result=None)
    assert run.seconds >= 0.3
    assert run.load_at_start >= 0


def test_ratio_is_the_median_of_paired_repeats(bench):
    def runs(*speeds):
        return [Run({"images_per_s": s, "test_acc": 0.9}, 0.0, "cmd") for s in speeds]

    bench.ratio("r", {"a": runs(100, 300, 500), "b": runs(10, 100, 50)}, "a", "b", missing={})
    row = bench.rows[-1]
    assert row["detail"]["ratios"] == [10, 3, 10]
    assert row["value"] == 10 and row["unit"] == "x"
    bench.ratio("s", {"a": runs(1)}, "a", "b", missing={"b": "not measured: no venv"})
    assert bench.rows[-1]["value"] is None and bench.rows[-1]["detail"]["note"] == "not measured: no venv"


def test_table_shows_values_runs_and_missing_figures():
    rows = [
        {"figure": "speed", "value": 12345.6, "unit": "images/s", "detail": {"images_per_s": [12000.0, 12345.6]}},
        {"figure": "fast", "value": 0.9123, "unit": "accuracy",
         "detail": {"test_acc": [0.91, 0.9146], "wall_s": [58.0, 61.5], "limit_s": 60, "within_limit": False,
                    "target": ">= 0.91"}},
        {"figure": "speedrun (GPU)", "value": None, "unit": "", "detail": {"note": "not measured: needs a GPU"}},
    ]
    lines = driver.format_table(rows).splitlines()
    assert lines[0] == "| figure | value | unit | runs / note |"
    assert lines[2] == "| speed | 12,346 | images/s | runs: 1.2e+04, 1.235e+04 |"
    assert lines[3].startswith("| fast | 0.9123 | accuracy | runs: 0.91, 0.9146; wall s: 58, 61.5; all within 60 s: NO")
    assert lines[4] == "| speedrun (GPU) | — |  | not measured: needs a GPU |"


def test_bad_requests_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(CnnlabError, match=f"--only takes some of {', '.join(driver.GROUPS)}; got p9"):
        driver.run_benchmarks(only=("p9",))
    with pytest.raises(CnnlabError, match=f"expected the four Fashion-MNIST .gz files in {tmp_path}"):
        driver.run_benchmarks(only=("gpu",), data_dir=str(tmp_path))
    assert driver.main(["--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "bench.py: error: --epochs must be a positive integer, got 0"
    assert driver.main(["--only", "data-parallel", "--procs", "3"]) == 2
    assert capsys.readouterr().err.strip() == "bench.py: error: --procs must divide the book's batch of 128, got 3"


def test_the_package_ships_no_benchmark_driver():
    # The driver runs the scripts in benchmarks/, which exist only in a source checkout.
    assert importlib.util.find_spec("cnnlab.bench") is None
    from cnnlab.cli import build_parser

    assert "bench" not in build_parser()._subparsers._group_actions[0].choices


def test_every_cnnlab_name_a_benchmark_imports_exists():
    # Most scripts here run only when a figure is measured again, not in CI: an import of a name that moved inside
    # cnnlab (explore_latency.py's open_model once) would fail only then. Function-local imports are read too.
    missing = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cnnlab"):
                module = importlib.import_module(node.module)
                missing += [f"{script.name}:{node.lineno} {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name)
                            and importlib.util.find_spec(f"{node.module}.{alias.name}") is None]
    assert not missing


@pytest.mark.slow
def test_quick_bench_writes_every_figure(data_dir, tmp_path):
    out = tmp_path / "bench.json"
    # The script as a person runs it. No d2l or peers virtualenv on purpose: their rows must then say why they are
    # missing instead of failing the run (test_quick_bench_measures_the_peers runs the peers).
    done = subprocess.run([sys.executable, str(DRIVER), "--quick", "--only", *driver.GROUPS, "--out", str(out),
                           "--data-dir", str(data_dir), "--d2l-python", str(tmp_path / "none" / "python"),
                           "--peers-python", str(tmp_path / "none" / "python")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert all(ROW_KEYS <= set(row) for row in rows)
    by_name = {row["figure"]: row for row in rows}
    for name in ("book LeNet recipe, images/s: cnnlab train / d2l 1.0.3 Trainer",
                 "book LeNet recipe, images/s: cnnlab train / DataLoader + torchvision transforms",
                 "seed cell, images/s: cnnlab.d2l / d2l 1.0.3",
                 "lenet-bn-relu --recipe fast: test accuracy within 60 s on 2 cores (mean of 1 seeds)",
                 "compact --recipe cpu10: test accuracy within 10 minutes on 2 cores (mean of 1 seeds)",
                 "peak RSS, cnnlab train vgg-small 224 batch 8",
                 "resnet18 --recipe speedrun: seconds to 94.0% test accuracy", "resnet18 --recipe best: test accuracy",
                 "data-parallel lenet book, images/s: 2 processes / 1 process"):
        assert name in by_name, name
    against_loader = by_name["book LeNet recipe, images/s: cnnlab train / DataLoader + torchvision transforms"]
    assert against_loader["value"] > 0 and against_loader["unit"] == "x"
    for row in rows:
        if "d2l 1.0.3" in row["figure"]:
            assert row["value"] is None and row["detail"]["note"].startswith("not measured: no d2l 1.0.3")
        if row["figure"].startswith("peers"):
            assert row["value"] is None and row["detail"]["note"].startswith("not measured: no peers virtualenv")
        elif row["unit"] == "accuracy" and "--recipe best" not in row["figure"]:  # best's is None without CUDA
            assert 0 <= row["value"] <= 1
        if row["unit"] == "MiB":
            assert row["value"] > 50
    trained = by_name["lenet book: cnnlab train images/s"]
    assert trained["command"].startswith("cnnlab train lenet --recipe book --epochs 1 --limit-train-batches 2 ")
    assert trained["cpu_count"] >= 1 and trained["versions"]["torch"]
    assert "| book LeNet recipe, images/s: cnnlab train / d2l 1.0.3 Trainer | — | x | not measured" in done.stdout
    # two batches cannot reach 92%: the row says so instead of a figure
    to_target = by_name["compact --recipe cpu10 --epochs 1: seconds to 92% test accuracy on 2 cores "
                        "(median of 1 seeds)"]
    assert to_target["value"] is None and to_target["detail"]["note"] == "not reached by every seed: [None]"
    assert to_target["command"].startswith("OMP_NUM_THREADS=2 cnnlab train compact --recipe cpu10 --seed S --epochs 1 "
                                           "--target-acc 0.92 ")
    launched = by_name["data-parallel lenet book: torchrun, 2 processes x 1 thread, batch 64 each, images/s"]
    assert launched["command"].startswith("OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m cnnlab "
                                          "train lenet --recipe book --epochs 1 --limit-train-batches 2 ")
    assert launched["detail"]["world_size"] == 2 and len(launched["detail"]["command_s"]) == 1
    # Same global batch, same samples per step: the two set-ups train the same network up to float rounding.
    single = by_name["data-parallel lenet book: cnnlab train, 1 process, images/s"]
    assert launched["detail"]["test_acc"] == pytest.approx(single["detail"]["test_acc"], abs=0.01)
    # The GPU rows ran their commands as a smoke run (on the CPU without CUDA) and carry no figure.
    speedrun = by_name["resnet18 --recipe speedrun: seconds to 94.0% test accuracy"]
    best = by_name["resnet18 --recipe best: test accuracy"]
    assert speedrun["command"].startswith("cnnlab train resnet18 --recipe speedrun --seed S --target-acc 0.94 "
                                          "--epochs 1 --limit-train-batches 2 ")
    assert best["command"].startswith("cnnlab train resnet18 --recipe best --seed S --epochs 1 "
                                      "--limit-train-batches 2 ")
    smoke = "the smoke budget (a CUDA" if torch.cuda.is_available() else "no CUDA device (a CPU"
    for row in (speedrun, best):
        assert row["value"] is None and row["detail"]["note"].startswith(f"not measured: {smoke} smoke run")
    assert len(speedrun["detail"]["time_to_target_s"]) == 1 and 0 <= speedrun["detail"]["test_acc"][0] <= 1

@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would train for real")
def test_gpu_rows_without_cuda_say_not_measured(bench):
    bench.gpu()
    none = "not measured: no CUDA device on this machine"
    assert [(r["figure"], r["value"], r["detail"]["note"]) for r in bench.rows] == [
        ("resnet18 --recipe speedrun: seconds to 94.0% test accuracy", None, none),
        ("resnet18 --recipe best: test accuracy", None, none)]
    assert [r["detail"]["target"] for r in bench.rows] == ["<= 5 s (H100)", ">= 0.955"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would train for real")
def test_gpu_seeds_choose_the_runs_and_none_leaves_a_figure_out(data_dir, tmp_path, capsys):
    # A GPU lease too short for both figures measures one at a time; the seeds given are the runs made.
    out = tmp_path / "rows.json"
    assert driver.main(["--quick", "--only", "gpu", "--speedrun-seeds", "--best-seeds", "3", "--data-dir",
                        str(data_dir), "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["figure"] == "resnet18 --recipe best: test accuracy" and row["detail"]["seeds"] == [3]
    assert len(row["detail"]["test_acc"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(not D2L_PYTHON.is_file(), reason="no d2l 1.0.3 virtualenv (benchmarks/setup_d2l_venv.sh)")
def test_seed_cell_runs_on_the_real_d2l(data_dir, tmp_path):
    out = tmp_path / "d2l.json"
    subprocess.run([str(D2L_PYTHON), str(BENCHMARKS / "seed_lenet.py"), "--d2l", "book", "--epochs", "1",
                    "--limit", str(QUICK.limit), "--source", str(data_dir), "--workdir", str(tmp_path / "w"),
                    "--json-out", str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["version"] == "1.0.3"
    assert result["train_images"] == result["test_samples"] == QUICK.limit * 128
    assert result["images_per_s"] > 0 and 0 <= result["test_acc"] <= 1
    raw = tmp_path / "w" / "data" / "FashionMNIST" / "raw"
    assert len(list(raw.glob("*-ubyte"))) == 4  # torchvision extracted the scratch copy, not the shared folder


def test_ab_train_runs_both_trees_alternately_and_reports_the_ratio(tmp_path, data_dir):
    """benchmarks/ab_train.py on CI's budget: the committed HEAD against this checkout, one round of 2 batches."""
    out = tmp_path / "ab.json"
    env = {**os.environ, "CNNLAB_DATA": str(data_dir)}
    subprocess.run([sys.executable, str(BENCHMARKS / "ab_train.py"), "--before", "HEAD", "--rounds", "2", "--out",
                    str(out), "--", "lenet", "--epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "2"],
                   check=True, env=env, capture_output=True, cwd=tmp_path)
    summary = json.loads(out.read_text())
    assert [(r["round"], r["side"]) for r in summary["rows"]] == [(0, "before"), (0, "after"), (1, "after"),
                                                                 (1, "before")]
    assert len(summary["ratios"]) == 2 and summary["median_ratio_after_before"] > 0
    assert summary["command"].startswith("cnnlab train lenet") and "(" in summary["environment"]["machine"]


def test_collective_wait_counts_both_kinds_of_pass_on_two_ranks(tmp_path):
    """benchmarks/collective_wait.py on CI's budget: two gloo ranks, a pass with the wait and one without."""
    out = tmp_path / "wait.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "collective_wait.py"), "--calls", "20", "--passes", "1",
                           "--out", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "pass 1 with the wait" in proc.stdout and "pass 1 without the wait: 0 sleeps" in proc.stdout
    ranks = json.loads(out.read_text())["ranks"]
    assert [[(r["wait"], r["calls"]) for r in rank] for rank in ranks] == [[(True, 20), (False, 20)]] * 2


def test_pt2_check_torchvision_records_each_models_result(tmp_path):
    """benchmarks/pt2_check_torchvision.py on one small model: exported, checked, recorded."""
    out = tmp_path / "pt2.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "pt2_check_torchvision.py"), "--only", "squeezenet1_0",
                           "--out", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.stdout.strip().endswith("1 passed, 0 refused [], 0 not exportable by torch.export")
    assert [(m["model"], m["result"]) for m in json.loads(out.read_text())["models"]] == [("squeezenet1_0", "passed")]


# ------------------------------------------------------------------------------------------------------------ peers
# The peers group: the book's LeNet recipe in PyTorch Lightning, fastai and Keras 3, run by
# benchmarks/peer_*.py in the virtualenv benchmarks/setup_peers_venv.sh makes.
PEERS_PYTHON, PEERS = driver.PEERS_PYTHON, driver.PEERS
NO_PEERS_VENV = f"no peers virtualenv at {PEERS_PYTHON} (make one with bash benchmarks/setup_peers_venv.sh)"


def test_peers_rows_without_their_virtualenv_say_not_measured(bench, tmp_path):
    bench.peers_python = tmp_path / "none" / "python"
    bench.peers()  # runs nothing: not even cnnlab train, whose figures the lenet group has
    note = f"not measured: no peers virtualenv at {bench.peers_python} (make one with benchmarks/setup_peers_venv.sh)"
    assert {(r["value"], r["detail"]["note"], r["command"]) for r in bench.rows} == {(None, note, "")}
    assert [r["figure"] for r in bench.rows] == [figure for name in PEERS for figure in (
        f"peers, lenet book: {name} images/s", f"peers, book LeNet recipe, images/s: cnnlab train / {name}",
        f"peers, test accuracy in the fast recipe's wall time: {name} (its best recipe)")]
    assert "| peers, book LeNet recipe, images/s: cnnlab train / fastai | — | x | not measured: no peers" in \
        driver.format_table(bench.rows)


def test_peers_get_the_epochs_that_fit_the_fast_runs_wall_time():
    # The first epoch as the calibration run took it (warm-up included), each further one as its second did.
    assert driver._epochs_within(35.0, [5.0, 8.0]) == 11  # 5 + 10 x 3 = 35
    assert driver._epochs_within(34.9, [5.0, 8.0]) == 10
    assert driver._epochs_within(3.0, [5.0, 8.0]) == 1  # never none
    assert driver._epochs_within(35.0, [5.0, 8.0], cap=1) == 1  # the smoke budget's cap
    assert driver._epochs_within(35.0, [5.0, 5.0]) >= 10**6  # a zero-length second epoch does not divide by zero


def test_peers_python_is_a_driver_flag():
    assert driver.build_parser().parse_args(["--only", "peers", "--peers-python", "p/python"]).peers_python == \
        "p/python"
    assert "peers" in driver.GROUPS and "peers" not in driver.DEFAULT_GROUPS  # asked for by name, as cpu10


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason=NO_PEERS_VENV)
@pytest.mark.parametrize("name", list(PEERS))
def test_peers_program_runs_the_book_recipe(name, data_dir, tmp_path):
    out, work = tmp_path / "peer.json", tmp_path / "w"
    subprocess.run([str(PEERS_PYTHON), str(BENCHMARKS / PEERS[name]), "--epochs", "1", "--limit", str(QUICK.limit),
                    "--source", str(data_dir), "--workdir", str(work), "--json-out", str(out)],
                   check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["recipe"] == "book" and result["batch_size"] == 128 and result["version"]
    assert result["train_images"] == result["test_samples"] == QUICK.limit * 128
    assert result["images_per_s"] > 0 and 0 <= result["test_acc"] <= 1
    assert len(result["epoch_end_s"]) == 1 and 0 < result["epoch_end_s"][0] <= result["wall_s"]
    assert len(list((work / "data" / "FashionMNIST" / "raw").glob("*.gz"))) == 4  # the scratch copy it read


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason=NO_PEERS_VENV)
def test_quick_bench_measures_the_peers(data_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(DRIVER), "--quick", "--only", "peers", "--out", str(out),
                           "--data-dir", str(data_dir), "--peers-python", str(PEERS_PYTHON)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert all(ROW_KEYS <= set(row) for row in rows)
    by_name = {row["figure"]: row for row in rows}
    fast = "peers, test accuracy in the fast recipe's wall time: cnnlab train lenet-bn-relu --recipe fast"
    assert by_name[fast]["command"].startswith("OMP_NUM_THREADS=2 cnnlab train lenet-bn-relu --recipe fast --seed S")
    for name, script in PEERS.items():
        ratio = by_name[f"peers, book LeNet recipe, images/s: cnnlab train / {name}"]
        assert ratio["value"] > 0 and ratio["detail"]["ratios"] == [ratio["value"]]
        book = by_name[f"peers, lenet book: {name} images/s"]
        assert f"benchmarks/{script} --recipe book --epochs 1 --seed 0 " in book["command"]
        assert book["detail"]["version"] and book["value"] > 0
        best = by_name[f"peers, test accuracy in the fast recipe's wall time: {name} (its best recipe)"]
        assert f"benchmarks/{script} --recipe best --epochs 1 --seed S " in best["command"]
        assert best["detail"]["epochs"] == [1] and 0 <= best["value"] <= 1  # the smoke budget's cap: 1 epoch
        assert best["detail"]["budget_s"] == by_name[fast]["detail"]["wall_s"]
