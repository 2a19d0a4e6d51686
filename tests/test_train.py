"""The Trainer, its config and its run folder."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.inference import load_trained
from cnnlab.io import METRIC_COLUMNS, read_metrics_csv
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.train import build_trainer, make_config
from cnnlab.train.config import RECIPES, TrainConfig
from cnnlab.train.metrics import EpochMetrics
from cnnlab.train.schedule import LRFactor


def test_epoch_metrics_are_exact_over_uneven_batches():
    torch.manual_seed(0)
    logits, labels = torch.randn(1000, 10), torch.randint(0, 10, (1000,))
    metrics = EpochMetrics(torch.device("cpu"))
    for start, stop in [(0, 128), (128, 256), (256, 1000)]:  # batch means of unequal batches
        metrics.update(F.cross_entropy(logits[start:stop], labels[start:stop]), logits[start:stop], labels[start:stop])
    got = metrics.compute()
    assert got["count"] == 1000
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert got["acc"] == (logits.argmax(1) == labels).sum().item() / 1000  # exact: counts, not float means
    mean_of_means = (F.cross_entropy(logits[:128], labels[:128]) + F.cross_entropy(logits[128:256], labels[128:256])
                     + F.cross_entropy(logits[256:], labels[256:])) / 3
    assert abs(got["loss"] - mean_of_means.item()) > 1e-4  # the naive figure would differ


def test_epoch_metrics_state_round_trip():
    m = EpochMetrics(torch.device("cpu"))
    m.update(torch.tensor(2.0), torch.eye(3), torch.tensor([0, 1, 0]))
    n = EpochMetrics(torch.device("cpu"))
    n.load_state_dict(m.state_dict())
    assert n.compute() == m.compute() == {"loss": 2.0, "acc": 2 / 3, "count": 3}


def test_make_config_precedence():
    assert make_config("lenet").lr == 0.1  # the model's book lr
    assert make_config("lenet", lr=0.3).lr == 0.3  # explicit beats registry
    fast = make_config("lenet-relu", "fast")
    assert (fast.optimizer, fast.lr) == (RECIPES["fast"]["optimizer"], RECIPES["fast"]["lr"])
    assert make_config("lenet-relu", "fast", epochs=1, optimizer="adamw").optimizer == "adamw"
    assert make_config("lenet", batch_size=None).batch_size == 128  # None means "not given"


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=0), "batch-size must be a positive integer, got 0"),
    (dict(epochs=-1), "epochs must be a positive integer"),
    (dict(lr=0.0), "lr must be a number > 0"),
    (dict(optimizer="adagrad"), "optimizer must be one of sgd, nesterov, adamw, adam, rmsprop; got 'adagrad'"),
    (dict(optimizer="nesterov"), "nesterov needs momentum > 0"),
    (dict(label_smoothing=1.0), "label-smoothing must be below 1"),
    (dict(resize=0), "resize must be a positive integer"),
    (dict(bogus=1), "unknown key.s. bogus; expected TrainConfig fields"),
])
def test_bad_config_raises_one_line(overrides, message):
    with pytest.raises(CnnlabError, match=message) as info:
        make_config("lenet", **overrides)
    assert "\n" not in str(info.value)


def test_unknown_model_and_recipe():
    with pytest.raises(CnnlabError, match="unknown model 'lenet5'; expected one of: lenet, "):
        make_config("lenet5")
    with pytest.raises(CnnlabError, match="recipe must be one of book, fast"):
        make_config("lenet", "turbo")


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_schedules_start_peak_and_end(schedule):
    f = LRFactor(schedule, total_steps=100, warmup_steps=0)
    values = [f(s) for s in range(101)]
    assert max(values) == pytest.approx(1.0, abs=0.02)
    assert all(0 <= v <= 1 for v in values)
    if schedule == "constant":
        assert set(values) == {1.0}
    else:
        assert values[-1] == pytest.approx(0.0, abs=1e-9)
    if schedule == "onecycle":
        assert values[0] == pytest.approx(0.04) and values.index(max(values)) == 25


def test_warmup_ramps_linearly():
    f = LRFactor("cosine", total_steps=100, warmup_steps=10)
    assert [round(f(s), 2) for s in range(3)] == [0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("runs") / "lenet"
    cfg = make_config("lenet-relu", epochs=2, limit_train_batches=8, limit_val_batches=4, out=str(out),
                      data_dir=str(data_dir), lr=0.3)
    trainer = build_trainer(cfg, quiet=True, report=False)
    history = trainer.fit()
    return out, trainer, history


def test_run_folder_has_every_file(tiny_run):
    out, _, history = tiny_run
    for name in ("config.json", "metrics.csv", "result.json", "curves.png", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir()), "TensorBoard events"
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and set(rows[0]) == set(METRIC_COLUMNS)
    result = json.loads((out / "result.json").read_text())
    for key in ("model", "epochs", "test_acc", "best_val_acc", "images_per_s", "wall_s", "world_size", "device"):
        assert key in result, key
    assert result["test_acc"] == pytest.approx(history[-1]["val_acc"])
    assert result["test_samples"] == 4 * 128 and result["world_size"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["model"] == "lenet-relu" and config["environment"]["torch"] == torch.__version__


def test_epoch_counts_and_images_per_second_are_consistent(tiny_run):
    _, trainer, history = tiny_run
    for row in history:
        assert row["images_per_s"] * row["seconds"] == pytest.approx(8 * 128)
        assert 0 <= row["train_acc"] <= 1 and math.isfinite(row["train_loss"])
    assert trainer.state.step == 16


def test_checkpoints_rebuild_the_trained_model(tiny_run):
    out, trainer, _ = tiny_run
    _t = load_trained(out / "last.pt")
    model, ckpt = _t.model, _t.checkpoint
    assert ckpt["epoch"] == 2 and ckpt["step"] == 16 and ckpt["loader"] == {"epoch": 1, "batch": 8}
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu())
    assert load_checkpoint(out / "best.pt")["best_val_acc"] == trainer.state.best_val_acc


def test_same_seed_same_history(tmp_path, data_dir):
    def run(name):
        cfg = make_config("lenet", epochs=1, limit_train_batches=5, limit_val_batches=2, out=str(tmp_path / name))
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
                for r in build_trainer(cfg, quiet=True, report=False).fit()]

    assert run("a") == run("b")


def test_existing_run_folder_is_not_overwritten(tmp_path, data_dir):
    (tmp_path / "keep.txt").write_text("precious")
    cfg = make_config("lenet", epochs=1, limit_train_batches=1, limit_val_batches=1, out=str(tmp_path))
    with pytest.raises(CnnlabError, match="already holds files .*keep.txt.*--force"):
        build_trainer(cfg, quiet=True, report=False)
    build_trainer(cfg, quiet=True, report=False, force=True).fit()
    assert (tmp_path / "keep.txt").read_text() == "precious" and (tmp_path / "last.pt").exists()


def test_too_small_input_names_the_minimum(tmp_path, data_dir):
    cfg = make_config("alexnet", resize=28, out=str(tmp_path / "r"))
    with pytest.raises(CnnlabError, match=r"too small for alexnet: expected at least \d+"):
        build_trainer(cfg, quiet=True, report=False)


def test_train_config_fields_all_become_flags():
    from cnnlab.cli import build_parser

    args = build_parser().parse_args(["train", "lenet", "--batch-size", "64", "--no-augment", "--lr", "0.5"])
    assert (args.batch_size, args.augment, args.lr, args.epochs) == (64, False, 0.5, None)
    assert {f for f in TrainConfig.__dataclass_fields__} - {"model", "recipe"} <= set(vars(args))


def test_progress_loss_averages_only_this_intervals_steps(tmp_path, data_dir):
    # After a resume the loss window holds zeros in the slots of steps before it; they must not count.
    from cnnlab.train import build_trainer, make_config

    cfg = make_config("lenet-relu", epochs=1, log_every=4, limit_train_batches=1, limit_val_batches=1,
                      out=str(tmp_path / "run"))
    trainer = build_trainer(cfg, quiet=True, report=False)
    trainer.state.step = 10  # as if resumed at step 9 and one... two steps (9, 10) were taken since
    trainer._loss_window[9 % 4], trainer._loss_window[8 % 4] = 1.0, 3.0
    assert trainer._interval_loss(2) == 2.0
    trainer._loss_window.fill_(5.0)
    assert trainer._interval_loss(4) == 5.0


@pytest.mark.parametrize("field, value, message", [
    ("augment", "false", "augment must be true or false, got 'false'"),  # a JSON config's string: truthy
    ("normalize", "no", "normalize must be true or false, got 'no'"),
    ("tta", 1, "tta must be true or false, got 1"),
    ("dataset", 7, "dataset must be a string, got 7"),
    ("seed", True, "seed must be an integer in"),
])
def test_a_switch_must_be_a_bool_and_a_name_a_string(field, value, message):
    with pytest.raises(CnnlabError, match=re.escape(message)):
        make_config("lenet", **{field: value})


def test_amp_with_the_from_scratch_layers_is_refused():
    # autocast ran the scratch conv's matrix products in bfloat16, and the next layer refused bf16 input beside its
    # float32 weights: every model stopped at its first step
    with pytest.raises(CnnlabError, match="expected --ops torch with --amp, or --no-amp with --ops scratch"):
        make_config("lenet", ops="scratch", amp=True)
    assert make_config("lenet", ops="scratch").ops == "scratch" and make_config("lenet", amp=True).amp
