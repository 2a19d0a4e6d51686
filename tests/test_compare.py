"""`cnnlab compare`: one table and one plot of run folders of different models and recipes."""

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from cli_support import file_appears_while_saving, strict_json
from cnnlab.cli import main
from cnnlab.compare import LEGEND_RUNS, compare, compare_runs, curves_overlay, find_runs, format_table, load_run
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, summary
from cnnlab.report import plots
from cnnlab.report.plots import figure_png
from cnnlab.train import train

TINY = dict(epochs=2, limit_train_batches=2, limit_val_batches=1, batch_size=32, quiet=True, report=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """Two finished runs (book LeNet; fast-recipe BN-LeNet-ReLU on a validation split) and one still 'training'."""
    root = tmp_path_factory.mktemp("runs")
    train("lenet", "book", out=str(root / "a-lenet"), data_dir=str(data_dir), **TINY)
    train("lenet-bn-relu", "fast", out=str(root / "b-bn"), data_dir=str(data_dir), val_split=500, **TINY)
    shutil.copytree(root / "a-lenet", root / "c-running")
    (root / "c-running" / "result.json").unlink()  # what a run still training looks like
    return root


def _metrics(path):
    with open(path / "metrics.csv", newline="") as f:
        return [float(r["val_acc"]) for r in csv.DictReader(f)]


def test_table_rows_hold_each_runs_own_figures(runs):
    folders = [runs / "a-lenet", runs / "b-bn", runs / "c-running"]
    columns, rows = compare_runs([load_run(p) for p in folders])
    assert [r["run"] for r in rows] == ["a-lenet", "b-bn", "c-running"]
    assert [r["model"] for r in rows] == ["lenet", "lenet-bn-relu", "lenet"]
    assert [r["recipe"] for r in rows] == ["book", "fast", "book"]
    for folder, row in zip(folders, rows, strict=True):
        val = _metrics(folder)
        assert row["best_val_acc"] == pytest.approx(max(val), abs=1e-6)
        assert row["final_val_acc"] == pytest.approx(val[-1], abs=1e-6)
        assert row["epochs_done"] == len(val) == 2
        config = json.loads((folder / "config.json").read_text())
        assert row["params"] == config["params"]
    for folder, row in zip(folders[:2], rows[:2], strict=True):
        result = json.loads((folder / "result.json").read_text())
        assert row["test_acc"] == result["test_acc"] and row["wall_s"] == result["wall_s"]
        assert row["status"] == "finished"
    assert rows[2]["status"] == "incomplete" and rows[2]["test_acc"] is None


def test_the_epochs_a_run_was_set_for_and_the_epochs_it_trained_are_two_columns(runs, tmp_path):
    # A run set for 200 epochs and stopped after 2: its "epochs" setting once showed 2, and the CSV had two
    # "epochs" columns, the JSON one key.
    long = tmp_path / "long"
    shutil.copytree(runs / "a-lenet", long)
    record = json.loads((long / "config.json").read_text())
    record["config"]["epochs"] = 200
    (long / "config.json").write_text(json.dumps(record))
    columns, rows = compare_runs([load_run(runs / "a-lenet"), load_run(long)])
    assert len(set(columns)) == len(columns) and {"epochs", "epochs_done"} <= set(columns)
    assert [(r["epochs"], r["epochs_done"]) for r in rows] == [(2, 2), (200, 2)]
    assert next(csv.reader(io.StringIO(format_table(columns, rows, "csv")))) == columns


def test_the_current_folder_is_named_and_a_run_given_twice_is_one_row(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs / "b-bn")
    columns, rows = compare_runs([load_run(p) for p in find_runs([".", "../a-lenet", "../b-bn/../a-lenet"])])
    assert [r["run"] for r in rows] == ["b-bn", "a-lenet"]  # "." was a blank name, and had no line in the plot
    assert compare([".", "../a-lenet"], plot=str(tmp_path / "c.png")) and (tmp_path / "c.png").is_file()
    with pytest.raises(CnnlabError, match=r"plot file expected an image file ending in one of .*\.png.*, got "
                                          r"'c.xyz'"):
        compare(["."], plot="c.xyz")  # matplotlib's own error, an internal error, came after the table's work


def test_only_the_config_keys_that_differ_get_columns(runs):
    columns, _ = compare_runs([load_run(runs / "a-lenet"), load_run(runs / "b-bn")])
    a = json.loads((runs / "a-lenet" / "config.json").read_text())["config"]
    b = json.loads((runs / "b-bn" / "config.json").read_text())["config"]
    differ = {k for k in a if a[k] != b.get(k)} - {"out", "model", "recipe", "data_dir", "dataset"}
    assert {"optimizer", "val_split", "label_smoothing"} <= differ  # the fast recipe and the split
    assert differ <= set(columns)
    assert "seed" not in columns and "epochs" not in columns  # same seed, same epochs set
    assert "epochs_done" in columns  # a figure column of its own
    same_runs, _ = compare_runs([load_run(runs / "a-lenet"), load_run(runs / "c-running")])
    assert "optimizer" not in same_runs


def test_macs_match_torchs_flop_counter_on_the_whole_model(runs):
    _, rows = compare_runs([load_run(runs / "a-lenet"), load_run(runs / "b-bn")])
    for row in rows:
        model = create_model(row["model"]).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
        assert row["macs"] == counter.get_total_flops() // 2 > 0


def test_a_models_macs_are_counted_once_for_all_its_runs(runs, tmp_path, monkeypatch):
    # each run's model was built and traced for its MACs: 300 runs of one LeNet took 14 s, of a ResNet-50 90 s
    for i in range(4):
        shutil.copytree(runs / "a-lenet", tmp_path / f"lenet-{i}")
    built = []
    monkeypatch.setattr(summary, "create_model", lambda *a, **k: built.append(a[0]) or create_model(*a, **k))
    runs_of = [load_run(tmp_path / f"lenet-{i}") for i in range(4)] + [load_run(runs / "b-bn")]
    _, rows = compare_runs(runs_of)
    assert sorted(built) == ["lenet", "lenet-bn-relu"]
    assert len({r["macs"] for r in rows[:4]}) == 1 and rows[0]["macs"] > 0 and rows[4]["macs"] != rows[0]["macs"]


def test_formats_round_trip(runs):
    columns, rows = compare_runs([load_run(runs / "a-lenet"), load_run(runs / "b-bn")])
    parsed = list(csv.DictReader(io.StringIO(format_table(columns, rows, "csv"))))
    assert [r["model"] for r in parsed] == ["lenet", "lenet-bn-relu"]
    assert float(parsed[1]["best_val_acc"]) == pytest.approx(rows[1]["best_val_acc"])
    assert json.loads(format_table(columns, rows, "json")) == [{c: r[c] for c in columns} for r in rows]
    md = format_table(columns, rows, "md").splitlines()
    assert len(md) == 4 and md[0].startswith("| run | model |") and f"{rows[0]['best_val_acc']:.4f}" in md[2]
    with pytest.raises(CnnlabError, match="format must be one of md, csv, json"):
        format_table(columns, rows, "xml")


def test_globs_and_folders_of_runs_expand(runs):
    assert find_runs([str(runs / "*-lenet"), str(runs / "b-*")]) == [runs / "a-lenet", runs / "b-bn"]
    assert find_runs([str(runs)]) == [runs / "a-lenet", runs / "b-bn", runs / "c-running"]  # a study/sweep folder
    with pytest.raises(CnnlabError, match="names no run folder"):
        find_runs([str(runs / "nothing-*")])


def test_plot_is_written_once_and_not_overwritten_silently(runs, tmp_path):
    plot = tmp_path / "cmp.png"
    compare([str(runs / "a-lenet"), str(runs / "b-bn")], plot=plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = plot.read_bytes()
    with pytest.raises(CnnlabError, match="already exists; pass --force"):
        compare([str(runs / "a-lenet")], plot=plot)
    assert plot.read_bytes() == before
    compare([str(runs / "a-lenet")], plot=plot, force=True)
    assert plot.read_bytes() != before


def test_an_older_runs_augment_switch_reads_as_its_preset(runs, tmp_path):
    # config.json of runs from before the presets holds "augment": false; beside today's "none" it made a column
    older = shutil.copytree(runs / "a-lenet", tmp_path / "older")
    record = json.loads((older / "config.json").read_text())
    assert record["config"]["augment"] == "none"
    record["config"]["augment"] = False
    (older / "config.json").write_text(json.dumps(record))
    keys, rows = compare_runs([load_run(runs / "a-lenet"), load_run(older)])
    assert "augment" not in keys
    record["config"]["augment"] = True  # the old switch on: crop-flip, which differs
    (older / "config.json").write_text(json.dumps(record))
    keys, rows = compare_runs([load_run(runs / "a-lenet"), load_run(older)])
    assert [row["augment"] for row in rows] == ["none", "crop-flip"]


def test_settings_an_older_run_lacks_read_as_todays_defaults(runs, tmp_path):
    # a run from before --mixup and --time-budget made a "differing" column of each, "-" beside 0 and beside "-"
    older = shutil.copytree(runs / "a-lenet", tmp_path / "older")
    record = json.loads((older / "config.json").read_text())
    assert record["config"]["mixup"] == 0 and record["config"]["time_budget"] is None
    for key in ("mixup", "time_budget"):
        del record["config"][key]
    (older / "config.json").write_text(json.dumps(record))
    keys, rows = compare_runs([load_run(runs / "a-lenet"), load_run(older)])
    assert "mixup" not in keys and "time_budget" not in keys


def test_a_plot_of_runs_without_an_epoch_warns_of_nothing(runs, tmp_path):
    empty = shutil.copytree(runs / "a-lenet", tmp_path / "no-epoch")
    header = (empty / "metrics.csv").read_text().splitlines()[0]
    (empty / "metrics.csv").write_text(header + "\n")  # stopped before its first epoch ended
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found" reached the user's stderr
        compare([str(empty)], plot=tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_cli(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(runs / "a-lenet"), str(runs / "b-bn"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in out] == ["lenet", "lenet-bn-relu"]
    assert (tmp_path / "compare.png").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab compare: error:") and "names no run folder" in err and "\n" not in err


def test_json_writes_a_run_folder_name_that_is_not_utf8_as_text_any_reader_takes(runs, tmp_path, capsys,
                                                                                     monkeypatch):
    """--format json wrote a run folder's name that is not UTF-8 (Linux allows any bytes) as "r\\udce9sultat", a lone
    surrogate that strict JSON readers refuse: it is written with U+FFFD for the byte, as predict --json writes it."""
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/r\xe9sultat"))
    shutil.copytree(runs / "a-lenet", odd)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(odd), str(runs / "b-bn"), "--format", "json"]) == 0
    rows = strict_json(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["r\ufffdsultat", "b-bn"]


def _edit(path, config=(), **values):
    """Change a run's JSON file as another cnnlab would have written it: ``config`` updates its settings."""
    record = json.loads(path.read_text())
    record.update(values)
    record.get("config", {}).update(config)
    path.write_text(json.dumps(record))


def test_the_processes_a_run_trained_with_and_so_its_global_batch_and_test_images_are_columns(runs, tmp_path):
    # A torchrun run of two processes: twice the global batch, tested on twice the images; compare showed no column
    # that differed, beside figures that did.
    ddp = shutil.copytree(runs / "a-lenet", tmp_path / "ddp")
    one = json.loads((runs / "a-lenet" / "result.json").read_text())
    _edit(ddp / "config.json", world_size=2)
    _edit(ddp / "result.json", world_size=2, global_batch_size=64, test_samples=2 * one["test_samples"])
    columns, rows = compare_runs([load_run(runs / "a-lenet"), load_run(ddp)])
    assert [(r["processes"], r["global_batch"], r["test_samples"]) for r in rows] == \
        [(1, 32, one["test_samples"]), (2, 64, 2 * one["test_samples"])]
    assert columns.index("test_samples") == columns.index("test_acc") + 1  # beside the figure it counts
    assert "| 2 | 64 |" in format_table(columns, rows, "md")
    # Runs of one process: a batch_size column says it all; a run still training has no test images yet
    bigger = shutil.copytree(runs / "a-lenet", tmp_path / "bigger")
    _edit(bigger / "config.json", config={"batch_size": 64})
    columns, _ = compare_runs([load_run(runs / "a-lenet"), load_run(bigger), load_run(runs / "c-running")])
    assert "batch_size" in columns and not {"processes", "global_batch", "test_samples"} & set(columns)


def test_a_time_budgeted_run_shows_its_budget_and_the_epochs_it_trained(runs, tmp_path):
    # A budget cut the second epoch: metrics.csv has two rows, result.json 1.37 epochs. The row showed the unused
    # epochs setting (10) and 2 epochs done.
    budget = shutil.copytree(runs / "a-lenet", tmp_path / "budget")
    _edit(budget / "config.json", config={"epochs": 10, "time_budget": 6.0})
    _edit(budget / "result.json", time_budget_s=6.0, epochs_trained=1.37)
    columns, rows = compare_runs([load_run(runs / "a-lenet"), load_run(budget)])
    assert {"epochs", "time_budget"} <= set(columns)
    assert [(r["epochs"], r["time_budget"], r["epochs_done"]) for r in rows] == [(2, None, 2), (None, 6.0, 1.37)]
    assert "| - | 6 |" in format_table(columns, rows, "md") and "| 1.37 |" in format_table(columns, rows, "md")
    other = shutil.copytree(budget, tmp_path / "other")  # two budgets alike: no epochs column of two unused 10s
    assert "epochs" not in compare_runs([load_run(budget), load_run(other)])[0]


def test_run_names_are_escaped_in_the_markdown_table(runs, tmp_path):
    # A line break in a folder's name split its row; <i> and & were HTML to a markdown renderer
    names = ["two\nlines", "<i>x & y|z"]
    folders = [shutil.copytree(runs / "a-lenet", tmp_path / name) for name in names]
    columns, rows = compare_runs([load_run(f) for f in folders])
    md = format_table(columns, rows, "md").splitlines()
    assert len(md) == 4
    assert md[2].startswith("| two lines |") and md[3].startswith("| &lt;i&gt;x &amp; y\\|z |")
    assert [r["run"] for r in json.loads(format_table(columns, rows, "json"))] == names  # data formats keep them


def test_a_plot_format_whose_program_is_missing_is_refused_before_the_work(runs, tmp_path, capsys, monkeypatch):
    # Matplotlib writes PGF by running LaTeX: "internal error: RuntimeError: 'xelatex' not found", exit 1, after
    # the table's work
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda program: None)
    assert main(["compare", str(runs / "a-lenet"), "--plot", "c.pgf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("got 'c.pgf' (.pgf needs xelatex, which is not installed)")
    assert ".png" in err and ".pgf" not in err.split("got")[0] and not (tmp_path / "c.pgf").exists()
    monkeypatch.setattr(shutil, "which", lambda program: f"/usr/bin/{program}")
    assert main(["compare", str(runs / "a-lenet"), "--plot", "c.pdf"]) == 0  # what needs no program is written
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"


def test_the_curves_of_hundreds_of_runs_leave_their_names_to_the_table(runs, tmp_path):
    # a legend of 300 runs (a sweep's trials) was a column of names 6,181 px tall beside two panels of 400 px
    run = load_run(runs / "a-lenet")
    for count in (20, 60):
        fig = curves_overlay([run] * count, [f"trial-{i}" for i in range(count)])
        height = Image.open(io.BytesIO(figure_png(fig))).size[1]
        assert len(fig.axes[0].lines) == count
        if count == 20:  # up to LEGEND_RUNS: each line named, as before
            assert len(fig.axes[0].get_legend().get_texts()) == 20
        else:
            assert all(ax.get_legend() is None for ax in fig.axes) and height < 600
            assert fig.axes[0].get_title() == "validation accuracy\n(60 runs: the table names them)"


def test_runs_of_one_group_share_a_colour_and_a_legend_entry(runs):
    """A study over seeds draws each variant's runs: 18 runs of 6 variants were 18 legend entries over the curves, and
    the colours came round again after 10, so two variants shared one."""
    run = load_run(runs / "a-lenet")
    variants = [f"v{k}" for k in range(6) for _ in range(3)]
    fig = curves_overlay([run] * 18, [f"{v}-seed{k % 3}" for k, v in enumerate(variants)], variants)
    accuracy, loss = fig.axes
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [f"v{k}" for k in range(6)]
    for ax in (accuracy, loss):
        colours = [line.get_color() for line in ax.lines]
        assert [len(set(colours[k:k + 3])) for k in range(0, 18, 3)] == [1] * 6  # a variant's seeds alike
        assert len(set(colours)) == 6  # and the variants apart
    ungrouped = curves_overlay([run] * 3, ["a", "b", "c"]).axes[0]  # without groups, as before: one per run
    assert [t.get_text() for t in ungrouped.get_legend().get_texts()] == ["a", "b", "c"]


def test_the_plot_draws_the_figure_the_runs_judge_and_names_it(runs, tmp_path):
    # Under --balance a run's best.pt judges the balanced accuracy (val_bal_acc), and the plot drew only val_acc
    judged = shutil.copytree(runs / "a-lenet", tmp_path / "balanced")
    _edit(judged / "config.json", config={"best_by": "balanced-accuracy"})
    plain, balanced = load_run(runs / "a-lenet"), load_run(judged)
    fig = curves_overlay([plain, balanced], ["plain", "balanced"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["validation balanced accuracy (judged)", "validation accuracy", "training loss"]
    judged_panel, accuracy_panel, _ = fig.axes
    assert [list(line.get_ydata()) for line in judged_panel.lines] == \
        [[r["val_bal_acc"] for r in run.metrics] for run in (plain, balanced)]
    assert [list(line.get_ydata()) for line in accuracy_panel.lines] == \
        [[r["val_acc"] for r in run.metrics] for run in (plain, balanced)]
    # runs that all judge accuracy keep the two panels they had
    assert [ax.get_title() for ax in curves_overlay([plain]).axes] == ["validation accuracy", "training loss"]


def test_a_run_judged_by_the_balanced_accuracy_shows_the_accuracy_of_the_epoch_its_best_pt_holds(runs, tmp_path):
    """Under --best-by balanced-accuracy best.pt holds the epoch of the highest balanced accuracy, and result.json's
    best_val_acc is that epoch's accuracy; compare's best_val_acc was the highest accuracy of any epoch, another
    epoch's where the two figures peak apart, so one column name showed two figures."""
    judged = shutil.copytree(runs / "a-lenet", tmp_path / "balanced")
    _edit(judged / "config.json", config={"best_by": "balanced-accuracy"})
    with open(judged / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0].update(val_acc="0.7", val_bal_acc="0.4")  # the accuracy peaks at epoch 1, the balanced accuracy at 2
    rows[1].update(val_acc="0.6", val_bal_acc="0.5")
    with open(judged / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (row,) = compare_runs([load_run(judged)])[1]
    assert row["best_val_bal_acc"] == pytest.approx(0.5) and row["best_val_acc"] == pytest.approx(0.6), row
    (plain,) = compare_runs([load_run(runs / "a-lenet")])[1]  # judged by the accuracy: its highest
    assert plain["best_val_acc"] == pytest.approx(max(_metrics(runs / "a-lenet")), abs=1e-6)


def test_the_loss_panel_says_what_each_runs_training_loss_is(runs, tmp_path):
    """Under --balance loss a run's training loss is class-weighted (higher than a plain run's on the same data): the
    panel drew the two as one quantity."""
    weighted = shutil.copytree(runs / "a-lenet", tmp_path / "weighted")
    _edit(weighted / "config.json", config={"balance": "loss"})
    plain, balanced = load_run(runs / "a-lenet"), load_run(weighted)
    assert curves_overlay([balanced]).axes[-1].get_title() == "training loss (class-weighted)"
    loss = curves_overlay([plain, balanced], ["plain", "weighted"]).axes[-1]
    assert loss.get_title() == "training loss"
    assert [text.get_text() for text in loss.get_legend().get_texts()] == ["plain", "weighted (class-weighted)"]
    _edit(weighted / "config.json", config={"balance": ["loss"]})  # hand-edited: read as no balancing, as elsewhere
    assert curves_overlay([load_run(weighted)]).axes[-1].get_title() == "training loss"


def test_a_file_that_appears_at_the_plot_while_it_is_drawn_is_kept_without_force(runs, tmp_path, monkeypatch):
    plot = tmp_path / "compare.png"
    file_appears_while_saving(monkeypatch, plot)
    with pytest.raises(CnnlabError, match="compare.png appeared while it was being written"):
        compare([str(runs / "a-lenet")], plot=str(plot))
    assert plot.read_text() == "another program's"
    compare([str(runs / "a-lenet")], plot=str(plot), force=True)
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_run_name_no_font_has_is_drawn_without_a_warning_and_compare_says_so_once(runs, tmp_path, capsys,
                                                                                     monkeypatch):
    """compare.png drew U+FFFD for the characters of a run folder's name that no font on the machine has (an emoji;
    Chinese where no CJK font is installed) and said nothing, where `cnnlab report` says so of class names: one note,
    in the report's words, names them; no raw matplotlib warning; the table keeps the names as written."""
    monkeypatch.setattr(plots, "CJK_FONTS", ())  # a machine without a CJK font, whatever this one has
    unicorn = shutil.copytree(runs / "a-lenet", tmp_path / "\N{UNICORN FACE}-lenet")
    cat = shutil.copytree(runs / "b-bn", tmp_path / "猫-bn")
    assert (plots.undrawable(unicorn.name), plots.undrawable(cat.name)) == ("\N{UNICORN FACE}", "猫")  # the oracle
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert main(["compare", str(unicorn), str(cat), "--format", "json"]) == 0
    assert [str(w.message) for w in warned if "missing from font" in str(w.message)] == []
    said = capsys.readouterr()
    assert [r["run"] for r in json.loads(said.out)] == [unicorn.name, cat.name]
    assert [line for line in said.err.splitlines() if "note:" in line] == [
        f"cnnlab: note: the plot draws \N{UNICORN FACE}猫 in the run names {unicorn.name}, {cat.name} as \ufffd: no "
        "font on this machine has them (the table shows every name as written)"]
    legend = curves_overlay([load_run(unicorn), load_run(cat)], [unicorn.name, cat.name]).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["\ufffd-lenet", "\ufffd-bn"]
    # past LEGEND_RUNS the lines go unnamed: no name is drawn otherwise, and none is said to be
    for k in range(LEGEND_RUNS + 1):
        shutil.copytree(unicorn, tmp_path / "many" / f"\N{UNICORN FACE}{k}", ignore=shutil.ignore_patterns("*.pt"))
    compare([str(tmp_path / "many")], plot=tmp_path / "many.png")
    assert "note:" not in capsys.readouterr().err
