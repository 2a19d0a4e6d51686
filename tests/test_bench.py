"""`cnnlab bench` (issue 6): the plumbing, and a smoke run on CI's budget so the benchmarks cannot rot.

No timing is asserted anywhere: the figures are recorded in docs/benchmarks.md, not tested.
"""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.bench import BENCHMARKS, D2L_PYTHON, QUICK, Bench, Budget, format_table, run_benchmarks
from cnnlab.cli import main
from cnnlab.errors import CnnlabError

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
    # `cnnlab bench` itself stays small: it imports no torch before its programs run.
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


def test_ratio_is_the_median_of_paired_repeats(bench):
    from cnnlab.bench import Run

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
        {"figure": "P2", "value": 0.9123, "unit": "accuracy",
         "detail": {"test_acc": [0.91, 0.9146], "wall_s": [58.0, 61.5], "within_60s": False, "target": ">= 0.91"}},
        {"figure": "P3 (GPU)", "value": None, "unit": "", "detail": {"note": "not measured: needs a GPU"}},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0] == "| figure | value | unit | runs / note |"
    assert lines[2] == "| speed | 12,346 | images/s | runs: 1.2e+04, 1.235e+04 |"
    assert lines[3].startswith("| P2 | 0.9123 | accuracy | runs: 0.91, 0.9146; wall s: 58, 61.5; all within 60 s: NO")
    assert lines[4] == "| P3 (GPU) | — |  | not measured: needs a GPU |"


def test_bad_requests_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(CnnlabError, match="--only takes some of lenet, p2, p5, gpu; got p9"):
        run_benchmarks(only=("p9",))
    with pytest.raises(CnnlabError, match=f"expected the four Fashion-MNIST .gz files in {tmp_path}"):
        run_benchmarks(only=("gpu",), data_dir=str(tmp_path))
    assert main(["bench", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "cnnlab bench: error: --epochs must be a positive integer, got 0"


@pytest.mark.slow
def test_quick_bench_writes_every_figure(data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    # No d2l virtualenv on purpose: its rows must then say why they are missing instead of failing the run.
    code = main(["bench", "--quick", "--out", str(out), "--data-dir", str(data_dir),
                 "--d2l-python", str(tmp_path / "none" / "python")])
    assert code == 0
    rows = json.loads(out.read_text())
    assert all(ROW_KEYS <= set(row) for row in rows)
    by_name = {row["figure"]: row for row in rows}
    figures = list(by_name)
    for prefix in ("P1:", "issue 3:", "issue 5:", "P2:", "P5:", "P3", "P4"):
        assert any(f.startswith(prefix) for f in figures), prefix
    issue3 = next(row for row in rows if row["figure"].startswith("issue 3:"))
    assert issue3["value"] > 0 and issue3["unit"] == "x"
    for row in rows:
        if row["figure"].startswith(("P1:", "issue 5:", "lenet book: seed cell on d2l")):
            assert row["value"] is None and row["detail"]["note"].startswith("not measured: no d2l 1.0.3")
        if row["unit"] == "accuracy" and not row["figure"].startswith("P4"):  # P4's is None without CUDA
            assert 0 <= row["value"] <= 1
        if row["unit"] == "MiB":
            assert row["value"] > 50
    trained = by_name["lenet book: cnnlab train images/s"]
    assert trained["command"].startswith("cnnlab train lenet --recipe book --epochs 1 --limit-train-batches 2 ")
    assert trained["cpu_count"] >= 1 and trained["versions"]["torch"]
    table = capsys.readouterr().out
    assert "| P1: cnnlab train vs d2l 1.0.3 Trainer, LeNet book recipe | — | x | not measured" in table
    if not torch.cuda.is_available():  # the GPU rows ran their commands as a CPU smoke run and carry no figure
        p3 = by_name["P3: resnet18 --recipe speedrun, seconds to 94.0% test accuracy"]
        p4 = by_name["P4: resnet18 --recipe best, test accuracy"]
        assert p3["command"].startswith("cnnlab train resnet18 --recipe speedrun --seed S --target-acc 0.94 "
                                        "--epochs 1 ")
        assert p4["command"].startswith("cnnlab train resnet18 --recipe best --seed S ")
        for row in (p3, p4):
            assert row["value"] is None and row["detail"]["note"].startswith("not measured: no CUDA device (a CPU")
        assert len(p3["detail"]["time_to_target_s"]) == 1 and 0 <= p3["detail"]["test_acc"][0] <= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would train for real")
def test_gpu_rows_without_cuda_say_not_measured(bench):
    bench.gpu()
    assert [(r["figure"][:3], r["value"], r["detail"]["note"]) for r in bench.rows] == [
        ("P3:", None, "not measured: no CUDA device on this machine"),
        ("P4:", None, "not measured: no CUDA device on this machine")]
    assert [r["detail"]["target"] for r in bench.rows] == ["<= 5 s (H100)", ">= 0.955"]


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
