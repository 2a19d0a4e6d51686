"""Unbalanced classes: --balance sampler|loss, and per-class precision/recall/F1 judged by scikit-learn."""

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, classification_report, f1_score, precision_recall_fscore_support
from sklearn.utils.class_weight import compute_class_weight
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.compare import compare_runs
from cnnlab.data import DeviceLoader, ImageDataset, balanced_class_weights
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import EvalResult, class_scores, confusion_matrix, format_eval
from cnnlab.explore.runs import summarize_run
from cnnlab.io import read_metrics_csv, write_json, write_text
from cnnlab.report import write_report
from cnnlab.runs import Run, RunFolder, load_checkpoint, read_json, save_checkpoint
from cnnlab.train import Trainer, build_run, build_trainer, make_config, resume, train
from data_support import noise_dataset
from test_dataset_runs import write_folder


def test_class_weights_are_scikit_learns_balanced_weights():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 20 + [3] * 1)
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels.numpy())
    torch.testing.assert_close(balanced_class_weights(labels, 4), torch.from_numpy(expected))


def test_an_empty_class_is_refused_by_name():
    with pytest.raises(CnnlabError, match="got none of class 'cat'") as info:
        balanced_class_weights(torch.tensor([0, 0, 2]), 3, ("dog", "cat", "bird"))
    assert "\n" not in str(info.value)


def _unbalanced(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.cat([torch.zeros(n - n // 20, dtype=torch.long), torch.ones(n // 20, dtype=torch.long)])
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8), labels


def test_balanced_sampling_evens_the_classes_and_is_a_function_of_seed_and_epoch():
    images, labels = _unbalanced()
    make = lambda: DeviceLoader(images, labels, 50, shuffle=True, seed=3, balance=True)  # noqa: E731
    loader = make()
    loader.set_epoch(1)
    drawn = torch.cat([y for _, y in loader])
    assert len(drawn) == len(labels)
    assert 0.4 < drawn.float().mean() < 0.6  # 5% of the images, about half the draws
    again = make()
    again.load_state_dict({"epoch": 1, "batch": 2})
    again.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in again]), drawn[100:])
    loader.set_epoch(2)
    assert not torch.equal(torch.cat([y for _, y in loader]), drawn)


def _tiny_dataset(labels: torch.Tensor, classes=("a", "b", "c")) -> ImageDataset:
    return noise_dataset(labels, classes)


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_balance_on_a_dataset_with_an_empty_class_is_one_line(balance):
    data = _tiny_dataset(torch.tensor([0, 1] * 20))  # class "c" has no image
    with pytest.raises(CnnlabError, match="got none of class 'c'") as info:
        build_run(make_config("lenet", balance=balance, device="cpu"), dataset=data, quiet=True)
    assert "\n" not in str(info.value)


def test_balance_loss_weights_the_training_loss():
    labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 4)
    parts = build_run(make_config("lenet", balance="loss", device="cpu"), dataset=_tiny_dataset(labels), quiet=True)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    torch.testing.assert_close(parts.class_weights, torch.from_numpy(expected).float())
    assert build_run(make_config("lenet", device="cpu"), dataset=_tiny_dataset(labels), quiet=True).class_weights \
        is None
    sampler = build_run(make_config("lenet", balance="sampler", device="cpu"), dataset=_tiny_dataset(labels),
                        quiet=True)
    assert sampler.train_loader.balance and sampler.class_weights is None


def test_bad_balance_name():
    with pytest.raises(CnnlabError, match="balance must be one of none, sampler, loss; got 'weights'"):
        make_config("lenet", balance="weights")


# ------------------------------------------------------------------------------------------ per-class figures
def test_class_scores_match_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (300,), generator=gen)
    pred = torch.where(torch.rand(300, generator=gen) < 0.6, labels, torch.randint(0, 5, (300,), generator=gen))
    pred[pred == 4] = 3  # class 4 is never predicted: precision 0 by scikit-learn's zero_division=0
    scores = class_scores(confusion_matrix(pred, labels, 5))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=range(5), zero_division=0)
    for ours, theirs in ((scores["precision"], p), (scores["recall"], r), (scores["f1"], f)):
        assert ours == pytest.approx(theirs.tolist())
    assert scores["support"] == s.tolist()
    report = classification_report(labels, pred, labels=range(5), zero_division=0, output_dict=True)
    assert scores["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])


def test_a_class_with_no_test_images_has_no_recall_and_is_not_a_failure_in_macro_f1():
    # Classes 3 and 4 have no test images (a folder whose test/ lacks them); 4 is predicted once, 3 never.
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 2, 4])
    result = EvalResult.from_logits(torch.nn.functional.one_hot(pred, 5).float(), labels, ("a", "b", "c", "d", "e"))
    assert result.recall[3] is None and result.recall[4] is None and result.per_class[3] is None
    assert result.f1[3] is None and result.f1[4] == 0.0  # predicted without being there: a failure
    p, r, f, _ = precision_recall_fscore_support(labels, pred, zero_division=0)  # over the labels present: 0-2, 4
    assert [v for v in result.f1 if v is not None] == pytest.approx(f.tolist())
    assert result.macro_f1 == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
    assert [result.recall[i] for i in (0, 1, 2)] == pytest.approx(r[:3].tolist())
    text = format_eval(result)
    assert "macro-F1 leaves such a class out" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("3 "))  # the table's, before the matrix
    assert row.split()[2:5] == ["–", "0.0000", "–"]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["recall"]["d"] is None and data["per_class"]["d"] is None


def test_eval_result_carries_them():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 2, 0, 2]), 3).float()
    result = EvalResult.from_logits(logits, labels, ("x", "y", "z"))
    p, r, f, _ = precision_recall_fscore_support(labels, logits.argmax(1), zero_division=0)
    assert result.precision == pytest.approx(p.tolist()) and result.recall == pytest.approx(r.tolist())
    assert result.f1 == pytest.approx(f.tolist()) and result.macro_f1 == pytest.approx(f.mean())
    data = json.loads(json.dumps(result.to_dict()))
    assert data["f1"]["z"] == pytest.approx(f[2]) and data["macro_f1"] == pytest.approx(f.mean())
    assert f"macro-F1 {f.mean():.4f}" in format_eval(result)


def test_result_json_and_report_hold_per_class_figures(tmp_path, data_dir):
    cfg = make_config("lenet-relu", epochs=1, limit_train_batches=2, limit_val_batches=2, batch_size=64,
                      balance="loss", out=str(tmp_path / "r"))
    trainer = build_trainer(cfg, quiet=True)
    trainer.fit()
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    labels = trainer.dataset.test_labels[:128]
    pred = trainer.test_logits.argmax(1)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=range(10), zero_division=0)
    classes = trainer.dataset.classes
    assert [result["per_class"][c]["f1"] for c in classes] == pytest.approx(f.tolist())
    assert [result["per_class"][c]["precision"] for c in classes] == pytest.approx(p.tolist())
    assert [result["per_class"][c]["support"] for c in classes] == s.tolist()
    assert result["macro_f1"] == pytest.approx(f.mean())
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"macro-F1 {f.mean():.4f}" in page and "<th>precision</th>" in page


# ------------------------------------------------------------------------------------------ the best epoch
def _unbalanced_split(val_labels: list[int], train_per_class: int = 6) -> ImageDataset:
    """Seeded noise images whose validation ones (the test split) carry their label and their place among their
    class's images in their first two pixels, for :class:`Scripted` to read."""
    k = max(val_labels) + 1
    train_labels = torch.arange(k).repeat(train_per_class)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (len(train_labels), 1, 28, 28), dtype=torch.uint8, generator=gen)
    val = torch.randint(0, 256, (len(val_labels), 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.tensor(val_labels)
    for i, label in enumerate(val_labels):
        val[i, 0, 0, :2] = torch.tensor([label, int((labels[:i] == label).sum())])
    return ImageDataset("tiny", train, train_labels, val, labels, tuple("abc"[:k]), (0.5,), (0.25,), flip=False)


class Scripted(torch.nn.Module):
    """A network whose predictions in its n-th evaluation are ``plans[n - 1](label, place)`` for each validation
    image (read from its first two pixels: inputs are pixels / 255 without --normalize); in training its logits are
    a learnable constant, so the loop steps as usual."""

    def __init__(self, plans, classes: int = 3):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(classes))
        self.plans, self.evaluations = plans, 0

    def train(self, mode: bool = True):
        self.evaluations += not mode
        return super().train(mode)

    def forward(self, x):
        if self.training:
            return self.bias.expand(len(x), -1)
        plan = self.plans[min(self.evaluations, len(self.plans)) - 1]
        codes = (x[:, 0, 0, :2] * 255).round().long().tolist()
        predicted = torch.tensor([plan(label, place) for label, place in codes])
        return torch.nn.functional.one_hot(predicted, len(self.bias)).float() + 0 * self.bias


# 16, 2 and 2 validation images. Epoch 1 names the largest class for every image (accuracy 0.80, balanced accuracy
# 0.33), epoch 2 finds both small classes at the cost of 5 large-class images (0.75 / 0.90), epoch 3 loses a small
# class again (0.90 / 0.67): accuracy picks epoch 3, the balanced accuracy epoch 2.
VAL_LABELS = [0] * 16 + [1] * 2 + [2] * 2
PLANS = [lambda label, place: 0,
         lambda label, place: label if label or place < 11 else 1,
         lambda label, place: label if label < 2 else 0]


def _scripted_trainer(tmp_path, data: ImageDataset, model: Scripted, **overrides) -> Trainer:
    """A Trainer of ``model`` on ``data`` that writes the run folder tmp_path/run (all but the report)."""
    out = tmp_path / "run"
    out.mkdir()
    parts = build_run(make_config("lenet", device="cpu", out=str(out), **overrides), dataset=data, model=model,
                      quiet=True)
    return Trainer(parts, run_dir=out, observers=[RunFolder(out)])


def _fit(tmp_path, plans=PLANS, **overrides):
    trainer = _scripted_trainer(tmp_path, _unbalanced_split(VAL_LABELS), Scripted(plans),
                                **{"epochs": 3, "batch_size": 6, **overrides})
    trainer.fit()
    return trainer, json.loads((tmp_path / "run" / "result.json").read_text())


def test_the_recorded_balanced_accuracy_is_scikit_learns(tmp_path):
    # Four classes, the last without validation images but named for some: scikit-learn averages the recalls of the
    # classes in the true labels only.
    labels = [0] * 20 + [1] * 6 + [2] * 3
    data = _unbalanced_split([*labels, 3])  # class 3 gets its training images, and its one validation image goes
    data = dataclasses.replace(data, test_images=data.test_images[:-1], test_labels=data.test_labels[:-1],
                               classes=("a", "b", "c", "d"))
    plan = lambda label, place: (label + place) % 4 if place % 3 else label  # noqa: E731
    trainer = _scripted_trainer(tmp_path, data, Scripted([plan], 4), epochs=2, batch_size=8, balance="loss")
    history = trainer.fit()
    predicted = trainer.test_logits.argmax(1)
    assert 3 in predicted.tolist()
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(labels, predicted)
    assert expected != pytest.approx(history[-1]["val_acc"])  # the two figures differ here
    assert history[-1]["val_bal_acc"] == pytest.approx(expected, abs=1e-12)
    assert read_metrics_csv(tmp_path / "run" / "metrics.csv")[-1]["val_bal_acc"] == pytest.approx(expected, abs=1e-6)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test_bal_acc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("balance, best_by, judged, epoch", [
    ("loss", None, "balanced-accuracy", 2), ("sampler", None, "balanced-accuracy", 2), ("none", None, "accuracy", 3),
    ("loss", "accuracy", "accuracy", 3), ("none", "balanced-accuracy", "balanced-accuracy", 2)])
def test_best_pt_is_the_epoch_of_the_figure_best_by_names(tmp_path, capsys, balance, best_by, judged, epoch):
    """With --balance loss on 200/20/5 images best.pt was the epoch of the best accuracy, which named the largest
    class far more often than the last one: the model the balancing worked against."""
    trainer, result = _fit(tmp_path, balance=balance, best_by=best_by)
    assert trainer.config.best_by == judged
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == epoch
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["best_by"] == judged
    row = trainer.state.history[epoch - 1]
    assert result["best_by"] == judged and result["best_epoch"] == epoch
    assert result["best_val_acc"] == row["val_acc"] and result["best_val_bal_acc"] == row["val_bal_acc"]
    name = "balanced accuracy" if judged == "balanced-accuracy" else "accuracy"
    figure = row["val_bal_acc" if judged == "balanced-accuracy" else "val_acc"]
    accuracy = "" if judged == "accuracy" else f", test accuracy {row['val_acc']:.4f}"  # beside test_acc's figure
    assert f"(the last epoch's model, epoch 3); best.pt: epoch {epoch}, test {name} {figure:.4f}{accuracy}; in " in \
        capsys.readouterr().out


@pytest.mark.parametrize("balance, shown", [("loss", True), ("none", False)])
def test_compare_shows_the_balanced_accuracy_where_a_run_judges_it(tmp_path, balance, shown):
    # A study ranks its variants by the figure they judge: the table it shows must hold that figure, best.pt's
    # epoch's as result.json's best_* are (under --balance none that is the epoch of the best accuracy)
    trainer, result = _fit(tmp_path, balance=balance)
    columns, [row] = compare_runs([Run.open(tmp_path / "run")])
    figures = [r["val_bal_acc"] for r in trainer.state.history]
    assert row["best_by"] == trainer.config.best_by
    for key in ("best_val_bal_acc", "best_val_acc"):
        assert row[key] == pytest.approx(result[key], abs=1e-6)  # metrics.csv's six decimals
    assert row["final_val_bal_acc"] == pytest.approx(figures[-1], abs=1e-6)
    balanced = ["best_val_bal_acc", "final_val_bal_acc"]
    at = columns.index("final_val_acc") + 1
    assert (columns[at:at + 2] == balanced) == shown and (set(balanced) <= set(columns)) == shown


def test_a_failed_runs_result_names_the_best_epoch_as_best_pt_holds_it(tmp_path):
    class Crash:
        def on_epoch(self, trainer, row, is_best):
            if row["epoch"] == 3:
                raise RuntimeError("crash")

    trainer = _scripted_trainer(tmp_path, _unbalanced_split(VAL_LABELS), Scripted(PLANS), epochs=3, batch_size=6,
                                balance="loss")
    trainer.observers.append(Crash())
    with pytest.raises(RuntimeError):
        trainer.fit()
    result = read_json(tmp_path / "run" / "result.json")
    assert result["status"] == "failed" and result["best_by"] == "balanced-accuracy" and result["best_epoch"] == 2
    assert result["best_val_acc"] == 0.75  # best.pt's epoch's accuracy, not epoch 3's higher one
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2


@pytest.mark.parametrize("best_by, stopped", [("balanced-accuracy", 4), ("accuracy", 5)])
def test_early_stop_judges_the_figure_best_by_names(tmp_path, capsys, best_by, stopped):
    # Epochs 4-6 as epoch 3: two epochs after the best one, epoch 2 by balanced accuracy and 3 by accuracy
    _, result = _fit(tmp_path, plans=[*PLANS, *[PLANS[2]] * 3], epochs=6, early_stop=2, balance="loss",
                     best_by=best_by)
    assert result["epochs"] == stopped and result["stopped_early_epoch"] == stopped
    name = "balanced accuracy" if best_by == "balanced-accuracy" else "accuracy"
    assert f"no better test {name} for 2 epochs: stopping early" in capsys.readouterr().out


@pytest.mark.parametrize("best_by, reached", [("balanced-accuracy", 2), ("accuracy", 3)])
def test_target_acc_is_of_the_figure_best_by_names(tmp_path, capsys, best_by, reached):
    _, result = _fit(tmp_path, target_acc=0.85, balance="loss", best_by=best_by)
    assert result["target_epoch"] == reached and result["epochs"] == reached
    name = "balanced accuracy" if best_by == "balanced-accuracy" else "accuracy"
    assert f"test {name} 0.{'8958' if reached == 2 else '9000'} reached the target 0.85" in capsys.readouterr().out


def _folder_run(tmp_path, monkeypatch, **overrides) -> Path:
    """One epoch of lenet-relu on a small image folder (3 classes), in tmp_path/run."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(6, 3))
    out = tmp_path / "run"
    train("lenet-relu", dataset=f"folder:{data}", image_size=16, epochs=1, batch_size=6, out=str(out), quiet=True,
          report=False, **overrides)
    return out


@pytest.mark.parametrize("balance, best_by", [("loss", "accuracy"), ("none", "balanced-accuracy")])
def test_a_resume_judges_the_best_epoch_as_the_run_began(tmp_path, monkeypatch, balance, best_by):
    out = _folder_run(tmp_path, monkeypatch, balance=balance, best_by=best_by)
    resume(out, epochs=2, quiet=True, report=False)
    assert read_json(out / "config.json")["config"]["best_by"] == best_by
    assert load_checkpoint(out / "last.pt")["config"]["best_by"] == best_by
    result, rows = read_json(out / "result.json"), read_metrics_csv(out / "metrics.csv")
    key = "val_bal_acc" if best_by == "balanced-accuracy" else "val_acc"
    figures = [r[key] for r in rows]
    assert result["best_by"] == best_by and result["best_epoch"] == 1 + figures.index(max(figures))
    name = "balanced accuracy" if best_by == "balanced-accuracy" else "accuracy"
    page = write_report(out).read_text()  # the report says which figure picked best.pt, and its epoch
    assert f"best epoch&#39;s test {name} (epoch {result['best_epoch']}, best.pt)" in page


@pytest.mark.parametrize("balance, note", [("loss", "class-weighted"), ("sampler", "on class-balanced batches"),
                                           ("none", None)])
def test_the_curves_say_what_the_training_loss_is_under_balance(tmp_path, monkeypatch, balance, note):
    # Under --balance loss the training loss is class-weighted and the validation loss is not; the curves drew them
    # on one axis as "train_loss" and "val_loss", as if one measure
    import cnnlab.report.curves

    drawn = []

    def spy(*args, **kwargs):
        drawn.append(cnnlab.report.curves.curves_figure(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr("cnnlab.report.observer.curves_figure", spy)  # curves.png, as the run ends
    monkeypatch.setattr("cnnlab.report.html.curves_figure", spy)  # report.html's curves
    out = _folder_run(tmp_path, monkeypatch, balance=balance)
    page = write_report(out).read_text()
    label = f"train_loss ({note})" if note else "train_loss"
    assert len(drawn) == 2
    for figure in drawn:
        legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
        assert legend[:2] == [label, "val_loss"]
    assert f'<th class="num">{label.replace("_", " ")}</th>' in page  # the metrics table's header says it too
    # and TensorBoard's text beside its scalars
    events = EventAccumulator(str(out / "tb"), size_guidance={"tensors": 0}).Reload()
    notes = [t.tensor_proto.string_val[0].decode() for t in events.Tensors("train_loss/text_summary")] \
        if "train_loss/text_summary" in events.Tags()["tensors"] else []
    assert notes == ([f"train_loss is {note} (--balance {balance}); val_loss is not"] if note else [])
    assert "train_loss" in events.Tags()["scalars"]  # the scalars' tags are as they were


def _as_before_best_by(out) -> None:
    """Make a run folder what cnnlab wrote before best_by and the balanced accuracy were recorded."""
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(out / name)
        state["config"].pop("best_by", None)
        for row in state["history"]:
            row.pop("val_bal_acc", None)
        save_checkpoint(state, out / name)
    record = read_json(out / "config.json")
    record["config"].pop("best_by", None)
    write_json(out / "config.json", record)
    result = read_json(out / "result.json")
    write_json(out / "result.json", {k: v for k, v in result.items() if "bal_acc" not in k and "best_" not in k or
                                     k == "best_val_acc"})
    old = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    write_text(out / "metrics.csv", "\n".join([",".join(old), *(",".join(r[k] for k in old) for r in rows)]) + "\n")


def test_a_run_from_before_the_balanced_accuracy_is_read_and_resumes_judging_accuracy(tmp_path, monkeypatch):
    # --balance loss now picks its best epoch by the balanced accuracy; a run that began judging accuracy goes on so.
    out = _folder_run(tmp_path, monkeypatch, balance="loss")
    _as_before_best_by(out)
    assert "val_bal_acc" not in (out / "metrics.csv").read_text()

    def read_everywhere() -> list[dict]:
        """The run as report, compare and the explorer read it (each would raise on what it cannot read)."""
        write_report(out)
        compare_runs([Run.open(out)])
        json.dumps(summarize_run(tmp_path, "run", detail=True))
        return Run.open(out).metrics

    assert math.isnan(read_everywhere()[0]["val_bal_acc"])
    assert "val bal acc" not in (out / "report.html").read_text()  # no column of empty cells
    # Beside a run that records judging accuracy it judged the same: no best_by column in the comparison
    shutil.copytree(out, tmp_path / "new")
    record = read_json(tmp_path / "new" / "config.json")
    write_json(tmp_path / "new" / "config.json", {**record, "config": {**record["config"], "best_by": "accuracy"}})
    assert "best_by" not in compare_runs([Run.open(out), Run.open(tmp_path / "new")])[0]
    resume(out, epochs=2, quiet=True, report=False)
    assert read_json(out / "config.json")["config"]["best_by"] == "accuracy"
    result = read_json(out / "result.json")
    assert result["best_by"] == "accuracy" and result["status"] == "finished"
    rows = read_everywhere()
    assert [r["epoch"] for r in rows] == [1, 2] and math.isnan(rows[0]["val_bal_acc"])
    assert 0 <= rows[1]["val_bal_acc"] <= 1
    assert "val bal acc" in (out / "report.html").read_text()


def test_eval_gives_the_balanced_accuracy_the_runs_result_and_report_give(tmp_path, monkeypatch, capsys):
    # A run on unbalanced photos with --balance loss: result.json and report.html lead with its test balanced
    # accuracy, best.pt is judged by it, and `cnnlab eval` of the same model printed accuracy and macro-F1 alone
    from cnnlab.cli import main

    out = _folder_run(tmp_path, monkeypatch, balance="loss")
    result = read_json(out / "result.json")
    assert main(["eval", str(out / "last.pt"), "--device", "cpu"]) == 0  # the last epoch's model, as result.json's
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(f", balanced accuracy {result['test_bal_acc']:.4f}")
    assert main(["eval", str(out / "last.pt"), "--device", "cpu", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    truth = [i for i, row in enumerate(said["confusion"]) for _ in range(sum(row))]
    predicted = [j for row in said["confusion"] for j, n in enumerate(row) for _ in range(n)]
    assert said["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted), abs=1e-12)
    assert said["balanced_accuracy"] == pytest.approx(result["test_bal_acc"], abs=1e-12)
