"""cnnlab.evaluate: logits in batches, the confusion matrix, and a checkpoint's test-set numbers."""

from __future__ import annotations

import json
import re

import pytest
import torch

import report_fixtures
from cnnlab.data import CLASSES, Preprocess, load_fashion_mnist
from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.evaluate import EvalResult, confusion_matrix, evaluate_checkpoint, format_eval
from cnnlab.inference import BATCH_VALUES, load_trained, predict_logits
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint

trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy  # shared fixtures


def test_confusion_matrix_counts_each_pair():
    g = torch.Generator().manual_seed(0)
    pred, true = torch.randint(0, 4, (500,), generator=g), torch.randint(0, 4, (500,), generator=g)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for p, t in zip(pred.tolist(), true.tolist(), strict=True):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(pred, true, 4), expected)


def test_eval_result_from_logits():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(300, 10, generator=g), torch.randint(0, 10, (300,), generator=g)
    r = EvalResult.from_logits(logits, labels, CLASSES, model="m")
    pred = logits.argmax(1)
    assert r.n == 300 and r.accuracy == pytest.approx((pred == labels).double().mean().item())
    for c in range(10):
        mask = labels == c
        assert r.per_class[c] == pytest.approx((pred[mask] == c).double().mean().item())
    assert r.confusion.sum(1).tolist() == torch.bincount(labels, minlength=10).tolist()
    json.dumps(r.to_dict())  # JSON-ready for `cnnlab eval --json`
    with pytest.raises(CnnlabError, match="one label per image"):
        EvalResult.from_logits(logits, labels[:5], CLASSES)


def test_predict_logits_equals_the_plain_forward_and_ignores_batching():
    torch.manual_seed(0)
    model, pre = create_model("lenet-relu").train(), Preprocess(28, mean=0.3, std=0.4)
    images = torch.randint(0, 256, (37, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected = model.eval()(pre(images.unsqueeze(1).float() / 255))
    model.train()
    a = predict_logits(model, pre, images, batch_size=8)
    b = predict_logits(model, pre, images.unsqueeze(1).float() / 255, batch_size=512)  # float input in [0, 1]
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(b, expected)
    assert model.training, "predict_logits must restore the caller's mode"
    with torch.no_grad():
        flipped = model.eval()(pre(images.unsqueeze(1).float().flip(-1) / 255))
    torch.testing.assert_close(predict_logits(model, pre, images, tta=True), (expected + flipped) / 2)


def test_predict_logits_takes_fewer_large_pictures_a_pass():
    # 512 images a pass whatever their size: eval of a 224-px ResNet-50 checkpoint held 5.6 GB of activations
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 5))
    passes = []
    model.register_forward_pre_hook(lambda module, args: passes.append(args[0].shape[0]))
    small = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    logits = predict_logits(model, Preprocess(16), small)
    assert passes == [40]  # small pictures: as many as batch_size says
    passes.clear()
    large = torch.nn.functional.interpolate(small.float(), size=256).to(torch.uint8)  # stored at 256 px
    at_input = predict_logits(model, Preprocess(512), large)  # and read at 512: the larger counts
    assert max(passes) == BATCH_VALUES // (3 * 512 * 512) and sum(passes) == 40
    with torch.no_grad():
        whole = model(Preprocess(512)(large.float() / 255))
    torch.testing.assert_close(at_input, whole)
    assert logits.shape == (40, 5)


@pytest.mark.parametrize("bad, match", [(torch.zeros(2, 2, 2, 28, 28), "N x H x W"), (torch.zeros(0, 28, 28), "none")])
def test_predict_logits_rejects_bad_input(bad, match):
    with pytest.raises(CnnlabError, match=match):
        predict_logits(create_model("lenet"), Preprocess(28), bad)
    with pytest.raises(CnnlabError, match="batch_size"):
        predict_logits(create_model("lenet"), Preprocess(28), torch.zeros(1, 28, 28), batch_size=0)


def test_evaluate_checkpoint_on_the_real_test_set(trained_run):
    result = evaluate_checkpoint(trained_run / "last.pt", device="cpu")
    data = load_fashion_mnist()
    _t = load_trained(trained_run / "last.pt")
    model, pre, _ = _t.model, _t.preprocess, _t.checkpoint
    with torch.no_grad():  # oracle: one plain forward pass over all 10,000 images
        pred = model(pre(data.test_images.unsqueeze(1).float() / 255)).argmax(1)
    assert result.n == 10_000 and int(result.confusion.sum()) == 10_000
    assert result.accuracy == pytest.approx((pred == data.test_labels).double().mean().item())
    assert result.accuracy > 0.5, "the trained fixture should be far above chance (0.1)"
    assert result.model == "lenet-relu" and result.tta is False and result.classes == CLASSES
    text = format_eval(result)
    assert f"test accuracy {result.accuracy:.4f}" in text
    assert all(name in text for name in CLASSES)
    assert text.count("\n") >= 25  # accuracy line, class table, 10-row confusion table


def test_the_text_of_many_classes_gives_the_most_frequent_confusions_not_the_whole_matrix():
    # 1,000 classes printed a confusion matrix of 2,000 lines up to 5,000 characters wide: 5 MB of text
    k = 40
    labels = torch.arange(10 * k) % k
    logits = torch.randn(10 * k, k, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(10 * k), labels] += 2
    result = EvalResult.from_logits(logits, labels, [f"class {i}" for i in range(k)])
    lines = format_eval(result).splitlines()
    assert max(map(len, lines)) < 120 and len(lines) < k + 40
    heading = lines.index("the 20 most frequent confusions of 40 classes (the whole 40 x 40 confusion matrix: --json)")
    off = result.confusion - torch.diag(result.confusion.diag())
    shown = [(int(a.split()[0]), int(b.split()[0]), int(n)) for a, b, n in
             (re.split(r"\s{2,}", line.strip()) for line in lines[heading + 3:heading + 23])]
    assert [n for _, _, n in shown] == sorted(off.flatten().tolist(), reverse=True)[:20]
    assert all(int(off[i, j]) == n for i, j, n in shown) and len(set(shown)) == 20
    few = EvalResult.from_logits(logits[:, :30], labels % 30, [str(i) for i in range(30)])
    assert "confusion matrix (rows: true class, columns: predicted class)" in format_eval(few)  # up to 30: whole


@pytest.mark.slow
def test_evaluate_checkpoint_follows_the_runs_tta(run_copy):
    state = load_checkpoint(run_copy / "last.pt")
    state["config"]["tta"] = True
    save_checkpoint(state, run_copy / "last.pt")
    with_tta = evaluate_checkpoint(run_copy / "last.pt", device="cpu")
    assert with_tta.tta
    data = load_fashion_mnist()
    _t = load_trained(run_copy / "last.pt")
    model, pre, _ = _t.model, _t.preprocess, _t.checkpoint
    x = pre(data.test_images.unsqueeze(1).float() / 255)
    with torch.no_grad():
        pred = ((model(x) + model(x.flip(-1))) / 2).argmax(1)
    assert with_tta.accuracy == pytest.approx((pred == data.test_labels).double().mean().item())


def test_evaluate_checkpoint_missing_or_corrupt_is_one_line(tmp_path):
    with pytest.raises(CheckpointError) as e:
        evaluate_checkpoint(tmp_path / "nope.pt", device="cpu")
    assert "\n" not in str(e.value) and "nope.pt" in str(e.value)
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.pt"):
        evaluate_checkpoint(tmp_path / "bad.pt", device="cpu")


def test_a_run_trained_with_a_relative_data_dir_is_evaluated_from_any_folder(tmp_path, monkeypatch, data_dir,
                                                                               capsys):
    # config.json kept "data/fm" as typed: eval, report and resume from another folder said the folder did not
    # exist "(from --data-dir)", a flag nobody had given them.
    from cnnlab.cli import main

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "fm").symlink_to(data_dir)
    monkeypatch.chdir(project)
    assert main(["train", "lenet", "--data-dir", "data/fm", "--epochs", "1", "--limit-train-batches", "2",
                 "--limit-val-batches", "1", "--no-report", "--quiet", "--out", "run"]) == 0
    config = json.loads((project / "run" / "config.json").read_text())
    assert config["config"]["data_dir"] == str(project / "data" / "fm")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(project / "run" / "last.pt")]) == 0
    # a run from before, with the folder as typed: one line saying whose folder it is and what to pass
    state = load_checkpoint(project / "run" / "last.pt")
    state["config"]["data_dir"] = "data/fm"
    save_checkpoint(state, project / "run" / "last.pt")
    capsys.readouterr()
    assert main(["eval", str(project / "run" / "last.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        "cnnlab eval: error: the run's data folder data/fm (its config's data_dir, relative to the folder the run "
        "trained in) is not a folder here; expected --data-dir with the folder its files are in now")
    assert main(["eval", str(project / "run" / "last.pt"), "--data-dir", str(data_dir)]) == 0
