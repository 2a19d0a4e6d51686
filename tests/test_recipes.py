"""Every recipe and optional training feature runs on the CPU and does what it says (correctness, not speed)."""

import json

import pytest
import torch
from torch import nn

from cnnlab.train import build_trainer, make_config
from cnnlab.train.build import averaged_model
from cnnlab.train.config import RECIPES

# The speedrun recipe is made for a GPU: without CUDA, --device auto refuses it and an explicit cpu runs it.
SPEEDRUN_DEVICE = {} if torch.cuda.is_available() else {"device": "cpu"}


def _fit(tmp_path, model="lenet-bn-relu", recipe="book", **overrides):
    overrides = {**dict(epochs=1, limit_train_batches=3, limit_val_batches=2, batch_size=32,
                        out=str(tmp_path / "run")), **overrides}
    trainer = build_trainer(make_config(model, recipe, **overrides), quiet=True, report=False)
    return trainer, trainer.fit()


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_on_cpu(tmp_path, data_dir, recipe):
    extra = SPEEDRUN_DEVICE if recipe == "speedrun" else {}
    if recipe == "finetune":  # it starts from trained weights: a short run's
        _fit(tmp_path / "source")
        extra = {"init_from": str(tmp_path / "source" / "run" / "last.pt")}
    trainer, history = _fit(tmp_path, recipe=recipe, **extra)
    assert len(history) == 1 and 0 <= history[0]["val_acc"] <= 1
    for p in trainer.model.parameters():
        assert torch.isfinite(p).all()


def test_ema_weights_are_what_gets_evaluated_and_saved(tmp_path, data_dir):
    trainer, _ = _fit(tmp_path, ema=0.9)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ema, raw = ckpt["ema"], ckpt["model"]
    assert ckpt["ema_n"] == 3
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())
    for k, v in trainer.ema.module.state_dict().items():
        assert torch.equal(ema[k], v)


def test_the_weight_average_warms_up_and_leaves_the_initialisation_behind():
    # A fixed decay of 0.999 left 79% of the initial weights in the average after a 235-step epoch: the best
    # recipe's ResNet-18 evaluated at chance for its first three epochs. The decay now warms up to its value.
    one = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        one.weight.zero_()
        ema = averaged_model(one, 0.999)
        ema.update_parameters(one)  # the first update copies
        one.weight.fill_(1.0)
        ema.update_parameters(one)  # the update after 1: decay 2/11
        torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 1 - 2 / 11, dtype=torch.float64))
        ema.n_averaged.fill_(20_000)  # warmed up: the decay itself
        one.weight.zero_()
        ema.update_parameters(one)
        torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 0.999 * (1 - 2 / 11), dtype=torch.float64))

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = averaged_model(model, 0.999)
    ema.update_parameters(model)  # the first update copies
    for _ in range(1, 235):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model(torch.randn(4, 3))  # the batch norm counts a batch
        ema.update_parameters(model)
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)
    trained = model[0].weight.detach()
    # the weights moved by 1 a step: the average lags 23.5 steps behind them (208.5 with a fixed decay, which also
    # kept 79% of the initial weights)
    assert (trained - ema.module[0].weight).abs().max() < 30


def test_tta_averages_the_mirror(tmp_path, data_dir):
    trainer, _ = _fit(tmp_path)
    x, y = trainer.val_loader.batch(0)
    model = trainer.parts.step_model.eval()
    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(-1))
    trainer.parts.tta = True  # what config.tta turns on for data a flip keeps (Fashion-MNIST's)
    got = trainer.evaluate()
    expected_acc = (((plain + mirrored) / 2).argmax(1) == y).float()
    x2, y2 = trainer.val_loader.batch(1)
    with torch.no_grad():
        expected_acc = torch.cat((expected_acc, (((model(x2) + model(x2.flip(-1))) / 2).argmax(1) == y2).float()))
    assert got["acc"] == pytest.approx(expected_acc.mean().item())


def test_amp_and_channels_last_run_on_cpu(tmp_path, data_dir):
    trainer, history = _fit(tmp_path, amp=True, channels_last=True)
    assert trainer.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert history[0]["train_loss"] > 0


def test_grad_clip_and_weight_decay_groups(tmp_path, data_dir):
    trainer, _ = _fit(tmp_path, grad_clip=0.5, weight_decay=1e-3, optimizer="adamw")
    decayed, plain = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 1e-3 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])


def test_scratch_ops_train_the_same_model(tmp_path, data_dir):
    trainer, history = _fit(tmp_path, model="lenet-bn-relu", ops="scratch")
    assert type(trainer.model.features[0]).__module__ == "cnnlab.layers"
    assert history[0]["train_loss"] > 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["params"] == 44878


@pytest.mark.slow
def test_compile_trains(tmp_path, data_dir):
    pytest.importorskip("torch._inductor")
    _, history = _fit(tmp_path, model="lenet-relu", compile=True, limit_train_batches=2)
    assert history[0]["train_loss"] > 0


def test_speedrun_compiles_and_the_compiled_model_matches_eager(tmp_path, data_dir):
    trainer, _ = _fit(tmp_path, recipe="speedrun", epochs=1, limit_train_batches=2, limit_val_batches=1,
                      **SPEEDRUN_DEVICE)
    assert trainer.config.compile and isinstance(trainer.parts.step_model, torch._dynamo.eval_frame.OptimizedModule)
    x, _ = trainer.val_loader.batch(0)
    x = x.contiguous(memory_format=trainer.parts.memory_format)
    trainer.model.eval()
    with torch.no_grad(), torch.autocast(**trainer.parts.autocast):
        compiled, eager = trainer.parts.step_model(x).float(), trainer.model(x).float()
    torch.testing.assert_close(compiled, eager, rtol=0.05, atol=0.05)  # bf16: both round to 8 bits of mantissa


def test_target_accuracy_stops_the_run_and_records_when(tmp_path, data_dir):
    trainer, history = _fit(tmp_path, epochs=3, target_acc=1e-6)  # any trained model gets one test image right
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(history) == 1 and result["epochs"] == 1 and result["target_epoch"] == 1
    assert 0 < result["time_to_target_s"] <= result["wall_s"]
    assert result["target_acc"] == 1e-6
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["target_reached"]["epoch"] == 1


def test_an_unreached_target_trains_every_epoch_and_says_so(tmp_path, data_dir):
    _, history = _fit(tmp_path, epochs=2, target_acc=1.0)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(history) == 2 and result["time_to_target_s"] is None and result["target_epoch"] is None


def test_resuming_a_run_that_reached_its_target_trains_no_further(tmp_path, data_dir):
    from cnnlab.train import resume

    _fit(tmp_path, epochs=3, target_acc=1e-6)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert resume(tmp_path / "run", quiet=True, report=False) is None  # finished: nothing trained or written
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("bad", [0, -0.5, 1.01, float("nan"), True, "0.9"])
def test_target_accuracy_must_be_an_accuracy(bad):
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="target-acc must be an accuracy in \\(0, 1\\]"):
        make_config("lenet", target_acc=bad)
