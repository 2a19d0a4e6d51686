"""``--test-split 0`` without ``--val-split``: a final refit on every labelled image, nothing held out (a contest's last
run, Keras' ``fit`` without validation data). Nothing is evaluated, best.pt is the last epoch's, what would judge a
held-out figure is refused, and every command that reads the run says it held out nothing rather than failing."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

import test_explore_browser
from browser_support import wait
from cli_support import run_with_output
from cnnlab.compare import compare, curves_overlay, load_run
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.explore import BackgroundServer
from cnnlab.explore.runs import summarize_run
from cnnlab.explore.session import Session
from cnnlab.export import verify_export
from cnnlab.io import read_metrics_csv
from cnnlab.runs import load_checkpoint
from cnnlab.study import run_study
from cnnlab.sweep.space import SweepSpec
from cnnlab.train import build_trainer, make_config
from cnnlab.train import trainer as trainer_module
from data_support import write_classes
from test_report import needs_chromium

driver = test_explore_browser.driver  # a shared fixture
COUNTS = {"cat": 30, "dog": 24, "fox": 18}
IMAGES = sum(COUNTS.values())


@pytest.fixture
def pets(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_classes(tmp_path / "pets", COUNTS, size=(14, 14), mode="RGB")
    return tmp_path / "pets"


def _train(pets, out, capsys, *flags):
    code, lines, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--test-split", "0",
                                        "--epochs", "2", "--batch-size", "16", "--out", str(out), *flags], capsys)
    assert code == 0, err
    return lines


def test_a_run_that_holds_out_nothing_trains_on_every_image_and_evaluates_nothing(pets, tmp_path, capsys):
    run = tmp_path / "run"
    lines = _train(pets, run, capsys, "--no-report")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and not any("val_" in line or "nan" in line for line in epochs), epochs
    assert "train_loss" in epochs[0] and "train_acc" in epochs[0]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished" and result["nothing_held_out"] is True
    assert result["train_images"] == IMAGES
    for key in ("test_acc", "test_loss", "test_bal_acc", "test_samples", "val_acc", "val_bal_acc", "best_val_acc",
                "best_val_bal_acc", "per_class", "macro_f1"):
        assert result[key] is None, key
    metrics = read_metrics_csv(run / "metrics.csv")
    assert result["train_acc"] == pytest.approx(metrics[-1]["train_acc"], abs=1e-6)
    assert result["best_epoch"] == 2
    assert all(row["val_acc"] != row["val_acc"] and row["val_loss"] != row["val_loss"] for row in metrics)  # empty
    assert (run / "metrics.csv").read_text().splitlines()[1].split(",")[3:6] == ["", "", ""]
    done = lines[-1]
    assert done.startswith(f"done: lenet held out none of its {IMAGES} images, train accuracy "
                           f"{result['train_acc']:.4f}")
    assert "; best.pt is the last epoch's;" in done and "nan" not in done
    # the mean over the last epoch's batches as they trained, not a figure of the model it ended with
    assert "(measured as the last epoch trained, epoch 2)" in done and "last epoch's model" not in done, done
    best, last = (torch.load(run / name, map_location="cpu", weights_only=True)["model"] for name in
                  ("best.pt", "last.pt"))
    assert all(torch.equal(best[k], last[k]) for k in last)


class _SignalAfterEpoch:
    """An observer that stands for a Ctrl-C arriving as epoch ``epoch`` ends: the run stops at the next step, in the
    epoch after it, with a mid-epoch last.pt (as a signal's stop writes one)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch(self, trainer, row, is_best):
        if row["epoch"] == self.epoch:
            trainer._on_signal(signal.SIGINT)


def _stopped_in_epoch_2(pets, run):
    """A run that holds out nothing, stopped by a signal one step into its second epoch (of 3)."""
    config = make_config("lenet", dataset=f"folder:{pets}", test_split=0, epochs=3, batch_size=16, out=str(run))
    trainer = build_trainer(config, quiet=True, report=False)
    trainer.observers.append(_SignalAfterEpoch(1))
    with pytest.raises(Interrupted):
        trainer.fit()


def test_each_epoch_writes_its_checkpoint_once_and_last_pt_is_that_file(pets, tmp_path, capsys, monkeypatch):
    # best.pt and last.pt were written one after the other at every epoch's end: the same checkpoint's bytes twice
    written = []
    save = trainer_module.save_checkpoint
    monkeypatch.setattr(trainer_module, "save_checkpoint", lambda state, path: (written.append(path.name),
                                                                                save(state, path)))
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    assert written == ["best.pt", "best.pt"]
    assert os.path.samefile(run / "best.pt", run / "last.pt")
    code, _, err = run_with_output(["train", "--resume", str(run), "--epochs", "3"], capsys)  # and resumes from it
    assert code == 0, err
    assert load_checkpoint(run / "best.pt")["epoch"] == 3 and os.path.samefile(run / "best.pt", run / "last.pt")


def test_a_run_stopped_mid_epoch_keeps_the_last_whole_epochs_best_pt(pets, tmp_path, capsys):
    # The stop's last.pt replaces that name alone: best.pt stays the last whole epoch's, for every reader
    run = tmp_path / "run"
    _stopped_in_epoch_2(pets, run)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert not os.path.samefile(run / "best.pt", run / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 1 and last["step"] > best["step"]
    code, out, err = run_with_output(["predict", str(run / "best.pt"), str(next((pets / "cat").iterdir()))], capsys)
    assert code == 0, err
    code, _, err = run_with_output(["train", "--resume", str(run)], capsys)
    assert code == 0, err
    assert load_checkpoint(run / "best.pt")["epoch"] == 3


def test_the_report_of_an_unfinished_run_shows_its_last_whole_epochs_training_figures(pets, tmp_path, capsys):
    # Its headline was three dashes: result.json's final figures, which a run that has not ended lacks
    run = tmp_path / "run"
    _stopped_in_epoch_2(pets, run)
    code, _, err = run_with_output(["report", str(run)], capsys)
    assert code == 0, err
    page = (run / "report.html").read_text()
    [row] = read_metrics_csv(run / "metrics.csv")
    assert f"{row['train_acc']:.2%}" in page and "training accuracy of epoch 1, the last the run finished" in page
    assert "it has not finished, so it has no final figure" in page
    assert f"{row['images_per_s']:,.0f}" in page and "training images / s (epoch 1)" in page
    assert "final training accuracy" not in page and "Nothing held out" in page


def test_its_last_line_claims_no_image_it_did_not_train_on(pets, tmp_path, capsys):
    # One batch of 16 trained, and the line said "trained on all 72 images" (so did a time budget cut in epoch 1)
    lines = _train(pets, tmp_path / "run", capsys, "--limit-train-batches", "1", "--epochs", "1", "--no-report")
    done = lines[-1]
    assert done.startswith(f"done: lenet held out none of its {IMAGES} images") and "trained on all" not in done


@pytest.mark.parametrize(("flags", "named"), [
    (["--early-stop", "2"], "--early-stop 2"),
    (["--target-acc", "0.5"], "--target-acc 0.5"),
    (["--best-by", "balanced-accuracy"], "--best-by balanced-accuracy"),
    (["--balance", "loss", "--best-by", "accuracy"], "--best-by accuracy"),
])
def test_what_judges_a_held_out_figure_is_refused_in_one_line(pets, tmp_path, capsys, flags, named):
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--test-split", "0",
                                    "--epochs", "1", "--out", str(tmp_path / "run"), *flags], capsys)
    assert code == 2 and len(err) == 1 and named in err[0] and "holds out no image" in err[0], err
    assert "expected --val-split" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_limit_on_the_evaluation_is_refused_as_there_is_none(pets, tmp_path, capsys):
    # A flag typed that the run would not use is refused (check_given_flags_apply): it was ignored without a word
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--test-split", "0", "--epochs",
                                    "1", "--limit-val-batches", "2", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(err) == 1 and "--limit-val-batches" in err[0] and "holds out no image" in err[0], err
    assert not (tmp_path / "run").exists()
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--test-split", "0", "--val-split",
                                    "0.2", "--epochs", "1", "--limit-val-batches", "1", "--batch-size", "16", "--out",
                                    str(tmp_path / "held"), "--no-report"], capsys)
    assert code == 0, err


def test_the_default_best_by_of_a_balanced_run_is_accepted(pets, tmp_path, capsys):
    lines = _train(pets, tmp_path / "run", capsys, "--balance", "loss", "--no-report")  # best_by balanced-accuracy
    assert "held out none" in lines[-1]


def test_a_sweep_is_refused_as_it_ranks_trials_by_a_held_out_figure():
    spec = SweepSpec(model="lenet", params=["lr=loguniform:0.01:0.1"], trials=1, allow_test_objective=True,
                     overrides={"test_split": 0, "epochs": 1})
    with pytest.raises(CnnlabError, match="a sweep ranks its runs by a validation figure") as info:
        spec.check()
    assert "\n" not in str(info.value)


def test_a_study_is_refused_as_it_ranks_variants_by_a_held_out_figure(pets, tmp_path):
    with pytest.raises(CnnlabError, match="a study ranks its runs by a validation figure") as info:
        run_study("lenet-activation-pooling", out=tmp_path / "study", quiet=True,
                  overrides={"dataset": f"folder:{pets}", "test_split": 0, "epochs": 1})
    assert "\n" not in str(info.value) and not (tmp_path / "study").exists()


def test_its_time_budget_reserves_no_time_for_an_evaluation(pets, tmp_path, capsys):
    config = make_config("lenet", dataset=f"folder:{pets}", test_split=0, time_budget=1.0, batch_size=16,
                         out=str(tmp_path / "run"))
    trainer = build_trainer(config, quiet=True, report=False)
    assert trainer.budget.eval_images == 0 and trainer.budget.final_images == 0
    trainer.fit()
    result = trainer.result
    assert result["time_budget_s"] == 1.0 and result["budget_steps"] == result["steps"] > 0
    assert result["nothing_held_out"] and result["test_acc"] is None
    assert (tmp_path / "run" / "best.pt").exists()


def test_it_resumes(pets, tmp_path, capsys):
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    code, lines, err = run_with_output(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert code == 0, err
    assert len(read_metrics_csv(run / "metrics.csv")) == 3
    result = json.loads((run / "result.json").read_text())
    assert result["epochs"] == 3 and result["best_epoch"] == 3 and result["nothing_held_out"]
    assert "held out none of its" in lines[-1] and "best.pt is the last epoch's" in lines[-1]


def test_lr_find_takes_it_as_it_only_trains(pets, tmp_path, capsys):
    code, _, err = run_with_output(["lr-find", "lenet", "--dataset", f"folder:{pets}", "--test-split", "0",
                                    "--batch-size", "8", "--steps", "20", "--out", str(tmp_path / "lr.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "lr.png").exists()


def test_its_tensorboard_scalars_are_the_training_figures(pets, tmp_path, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    events = event_accumulator.EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "train_acc", "lr"} <= tags and not tags & {"val_loss", "val_acc", "val_bal_acc"}


def test_its_report_draws_the_training_curves_and_says_why_it_shows_no_held_out_figure(pets, tmp_path, capsys):
    run = tmp_path / "run"
    _train(pets, run, capsys)
    for _ in range(2):  # written at the end of training, and again by `cnnlab report`
        page = (run / "report.html").read_text()
        assert "Nothing held out: the run trained on every labelled image" in page
        assert "confusion matrix" not in page and "misclassified" not in page.lower() and "Feature maps" not in page
        assert "final training accuracy" in page and "Training curves" in page and "val acc" not in page
        assert "measured as it trained on them" in page and "last epoch's model" not in page
        code, _, err = run_with_output(["report", str(run)], capsys)
        assert code == 0, err


def test_its_report_reads_no_image_of_its_folder_which_may_have_moved_or_grown(pets, tmp_path, capsys):
    # The page shows nothing of the data, and `cnnlab report` asked for --data-dir where the folder had moved, and
    # refused a folder that had gained an image, naming a validation split the run never drew
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    pets.rename(tmp_path / "moved")
    code, _, err = run_with_output(["report", str(run)], capsys)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert f"every labelled image of folder:{pets}" in page and "final training accuracy" in page
    (tmp_path / "moved").rename(pets)
    (pets / "cat" / "000.png").rename(pets / "cat" / "new.png")
    shutil.copy(pets / "cat" / "001.png", pets / "cat" / "002-copy.png")
    (run / "report.html").unlink()
    code, _, err = run_with_output(["report", str(run)], capsys)
    assert code == 0, err
    assert "Nothing held out" in (run / "report.html").read_text()
    # another folder named: the sentence names the folder the run trained on, not the one read
    other = tmp_path / "other"
    write_classes(other, {"cat": 3, "dog": 3, "fox": 3}, size=(14, 14), mode="RGB", seed=7)
    code, _, err = run_with_output(["report", str(run), "--data-dir", str(other)], capsys)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert f"every labelled image of folder:{pets}" in page and f"image of folder:{other}" not in page


def test_a_folder_that_changed_since_is_shown_as_holding_out_nothing_and_refused_for_a_resume(pets, tmp_path,
                                                                                              capsys):
    # Held to the files a validation split would be drawn from, which a run that held out nothing never drew: the
    # explorer's gallery was an error card about that split, and a resume was refused in its words
    _train(pets, tmp_path / "runs" / "run", capsys, "--no-report")
    shutil.copy(pets / "cat" / "001.png", pets / "cat" / "002-copy.png")
    assert "Nothing held out" in Session(tmp_path / "runs").gallery("run")["note"]
    pets.rename(tmp_path / "moved")  # nor is it read: a folder moved since is no error card either
    assert "Nothing held out" in Session(tmp_path / "runs").gallery("run")["note"]
    (tmp_path / "moved").rename(pets)
    code, _, err = run_with_output(["train", "--resume", str(tmp_path / "runs" / "run"), "--epochs", "3"], capsys)
    assert code == 2 and len(err) == 1 and "the training images of" in err[0] and "validation" not in err[0], err


def test_eval_refuses_its_own_folder_and_scores_another(pets, tmp_path, capsys):
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    code, _, err = run_with_output(["eval", str(run / "best.pt")], capsys)
    assert code == 2 and len(err) == 1 and "every image of it trained" in err[0] and "folder:OTHER" in err[0], err
    other = tmp_path / "other"
    write_classes(other, {"cat": 3, "dog": 3, "fox": 3}, size=(14, 14), mode="RGB", seed=7)
    code, out, err = run_with_output(["eval", str(run / "best.pt"), "--dataset", f"folder:{other}"], capsys)
    assert code == 0 and "all 9 images of" in out[1], (out, err)


def test_the_explorer_says_it_held_out_nothing_and_still_analyses_an_upload(pets, tmp_path, capsys):
    _train(pets, tmp_path / "runs" / "run", capsys, "--no-report")
    row = summarize_run(tmp_path / "runs", "run")
    assert row["nothing_held_out"] is True and row["test_acc"] is None and row["train_acc"] is not None
    gallery = Session(tmp_path / "runs").gallery("run")
    assert gallery["split"] is None and gallery["of"] == 0 and not gallery["mistakes"]
    assert "Nothing held out" in gallery["note"] and all(not c["images"] for c in gallery["by_class"])
    with BackgroundServer(tmp_path / "runs") as server:
        base = server.url.rstrip("/")
        with urllib.request.urlopen(f"{base}/api/gallery?run=run", timeout=60) as answer:
            assert "Nothing held out" in json.loads(answer.read())["note"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # a gallery image: there is none
            urllib.request.urlopen(f"{base}/api/analyze?run=run&index=0", timeout=60)
        assert "Nothing held out" in json.loads(refused.value.read())["error"]
        picture = io.BytesIO()
        Image.new("RGB", (14, 14), (200, 40, 40)).save(picture, format="PNG")
        upload = urllib.request.Request(f"{base}/api/analyze?run=run", data=picture.getvalue(), method="POST",
                                        headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(upload, timeout=60) as answer:
            analysed = json.loads(answer.read())
        assert {t["class"] for t in analysed["top"]} == set(COUNTS), analysed


def test_export_verify_compares_on_training_images_and_says_so(pets, tmp_path, capsys):
    run = tmp_path / "run"
    _train(pets, run, capsys, "--no-report")
    onnx = tmp_path / "run.onnx"
    code, out, err = run_with_output(["export", str(run / "best.pt"), "--output", str(onnx), "--verify", "5"], capsys)
    assert code == 0 and any("/5 training images" in line for line in out), (out, err)
    assert "/5 training images" in str(verify_export(run / "best.pt", onnx, images=5))


def test_compare_names_the_runs_that_held_out_nothing_and_their_training_accuracy(pets, tmp_path, capsys):
    _train(pets, tmp_path / "refit", capsys, "--no-report")
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1", "--batch-size",
                                    "16", "--out", str(tmp_path / "held"), "--no-report"], capsys)
    assert code == 0, err
    rows = json.loads(compare([str(tmp_path / "refit"), str(tmp_path / "held")], fmt="json"))
    refit, held = rows
    assert refit["nothing_held_out"] is True and held["nothing_held_out"] is False
    result = json.loads((tmp_path / "refit" / "result.json").read_text())
    assert refit["final_train_acc"] == pytest.approx(result["train_acc"], abs=1e-6)
    assert refit["test_acc"] is None and refit["final_val_acc"] is None and held["test_acc"] is not None
    # a table of runs that all held out something has neither column
    assert "nothing_held_out" not in compare([str(tmp_path / "held")])


def test_a_balanced_run_records_that_no_figure_picked_its_best_pt_and_compare_shows_none(pets, tmp_path, capsys):
    # Under --balance its best_by resolved to the balanced accuracy, recorded in result.json as what picked best.pt:
    # compare added the balanced columns for it, empty, and judged the curves by a figure it never measured
    _train(pets, tmp_path / "refit", capsys, "--balance", "loss", "--no-report")
    result = json.loads((tmp_path / "refit" / "result.json").read_text())
    assert result["best_by"] is None and result["best_epoch"] == 2
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1", "--batch-size",
                                    "16", "--out", str(tmp_path / "held"), "--no-report"], capsys)
    assert code == 0, err
    rows = json.loads(compare([str(tmp_path / "refit"), str(tmp_path / "held")], fmt="json"))
    assert [row["best_by"] for row in rows] == [None, "accuracy"]
    assert not any("bal_acc" in column for column in rows[0]), rows[0]
    fig = curves_overlay([load_run(tmp_path / "held"), load_run(tmp_path / "refit")], ["held", "refit"])
    assert [ax.get_title() for ax in fig.axes] == ["validation accuracy", "training loss"]


def test_the_compare_plot_names_a_run_that_held_out_nothing(pets, tmp_path, capsys):
    # It draws no validation curve, and the legend was on the validation panel: its training loss went unnamed
    _train(pets, tmp_path / "refit", capsys, "--no-report")
    code, _, err = run_with_output(["train", "lenet", "--dataset", f"folder:{pets}", "--epochs", "1", "--batch-size",
                                    "16", "--out", str(tmp_path / "held"), "--no-report"], capsys)
    assert code == 0, err
    fig = curves_overlay([load_run(tmp_path / "held"), load_run(tmp_path / "refit")], ["held", "refit"])
    accuracy, loss = fig.axes
    assert len(accuracy.lines) == 1 and len(loss.lines) == 2
    legends = [ax.get_legend() for ax in fig.axes]
    assert [[t.get_text() for t in legend.get_texts()] for legend in legends if legend] == [["held", "refit"]]


@pytest.mark.slow
@needs_chromium
def test_the_explorers_page_names_its_training_accuracy_and_says_why_it_shows_no_image(pets, tmp_path, capsys,
                                                                                         driver):
    _train(pets, tmp_path / "runs" / "refit", capsys, "--no-report")
    picture = tmp_path / "upload.png"
    Image.new("RGB", (14, 14), (200, 40, 40)).save(picture)
    with BackgroundServer(tmp_path / "runs") as server:
        driver.get(server.url)
        wait(driver, "document.body.dataset.ready", what="the runs table")
        assert "nothing held out" in driver.find_element("id", "runs-table").text
        driver.execute_script("document.querySelector(\"a.run-link[data-run='refit']\").click()")
        wait(driver, "document.querySelector('#gallery p')", what="the gallery's note")
        assert "Nothing held out" in driver.find_element("id", "gallery").text
        assert "training accuracy (nothing held out)" in driver.find_element("id", "run-stats").text
        driver.find_element("id", "upload").send_keys(str(picture))
        wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the upload's answer")
        assert [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
