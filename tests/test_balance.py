"""Unbalanced classes: --balance sampler|loss, and per-class precision/recall/F1 judged by scikit-learn."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report, f1_score, precision_recall_fscore_support
from sklearn.utils.class_weight import compute_class_weight

from cnnlab.data import DeviceLoader, ImageDataset, balanced_class_weights
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import EvalResult, class_scores, confusion_matrix, format_eval
from cnnlab.train import build_run, build_trainer, make_config
from data_support import noise_dataset


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
