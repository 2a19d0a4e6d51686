"""cnnlab.train.schedule: Adam, RMSprop and the step/multistep decays, judged against torch's own classes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.io import read_metrics_csv
from cnnlab.models import create_model
from cnnlab.train import make_config
from cnnlab.train.schedule import LRFactor, build_optimizer, build_scheduler, parse_milestones

STEPS_PER_EPOCH = 3


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("overrides, torch_scheduler", [
    (dict(schedule="step", step_size=2, gamma=0.5),
     lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)),
    (dict(schedule="multistep", milestones="2,5", gamma=0.1),
     lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5], gamma=0.1)),
])
def test_step_decays_match_torch_stepped_once_per_epoch(overrides, torch_scheduler):
    cfg = make_config("lenet", epochs=7, **overrides)
    model = create_model("lenet")
    ours_opt = build_optimizer(model, cfg)
    ours = _lrs(build_scheduler(ours_opt, cfg, STEPS_PER_EPOCH), ours_opt, cfg.epochs * STEPS_PER_EPOCH)
    ref_opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    ref_sched, expected = torch_scheduler(ref_opt), []
    for _ in range(cfg.epochs):  # torch's StepLR/MultiStepLR count epochs: one scheduler step per epoch
        expected += [ref_opt.param_groups[0]["lr"]] * STEPS_PER_EPOCH
        ref_opt.step()
        ref_sched.step()
    assert ours == pytest.approx(expected, rel=1e-12)
    assert len(set(ours)) > 2  # it really decayed more than once


def test_step_factor_survives_a_state_dict_round_trip():
    """A resumed run rebuilds the schedule and loads its state: the decay must continue where it was."""
    cfg = make_config("lenet", epochs=6, schedule="step", step_size=1, gamma=0.5)
    model = create_model("lenet")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, STEPS_PER_EPOCH)
    _lrs(sched, opt, 7)
    opt2 = build_optimizer(model, cfg)
    sched2 = build_scheduler(opt2, cfg, STEPS_PER_EPOCH)
    sched2.load_state_dict(copy.deepcopy(sched.state_dict()))
    opt2.load_state_dict(opt.state_dict())
    assert _lrs(sched2, opt2, 5) == _lrs(sched, opt, 5)


def test_warmup_then_step_decay():
    f = LRFactor("step", total_steps=40, warmup_steps=4, steps_per_epoch=4, step_size=2, gamma=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [f(s) for s in (4, 7, 8, 15, 16)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("name, reference", [
    ("adam", lambda params, lr: torch.optim.Adam(params, lr=lr)),
    ("rmsprop", lambda params, lr: torch.optim.RMSprop(params, lr=lr, momentum=0.5)),
])
def test_adam_and_rmsprop_take_the_same_steps_as_torch(name, reference):
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    ours_model = create_model("lenet-relu")
    ref_model = copy.deepcopy(ours_model)
    cfg = make_config("lenet-relu", optimizer=name, lr=0.01, momentum=0.5 if name == "rmsprop" else 0.0)
    ours_opt = build_optimizer(ours_model, cfg)
    assert type(ours_opt).__name__.lower() == name
    ref_opt = reference(ref_model.parameters(), 0.01)
    for _ in range(3):
        for model, opt in ((ours_model, ours_opt), (ref_model, ref_opt)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_decay_skips_biases_for_adam():
    cfg = make_config("lenet", optimizer="adam", lr=1e-3, weight_decay=1e-4)
    groups = build_optimizer(create_model("lenet"), cfg).param_groups
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])


@pytest.mark.parametrize("overrides, message", [
    (dict(schedule="step"), "schedule step needs --step-size"),
    (dict(schedule="step", step_size=0), "step-size must be a positive number of epochs, got 0"),
    (dict(schedule="multistep"), "schedule multistep needs --milestones"),
    (dict(schedule="multistep", milestones="5,3"), "strictly increasing positive epochs .* got '5,3'"),
    (dict(schedule="multistep", milestones="3,x"), "comma-separated epochs such as 30,60; got '3,x'"),
    (dict(schedule="multistep", milestones="0,2"), "strictly increasing positive"),
    (dict(gamma=0.0), r"gamma must be a decay factor in \(0, 1\], got 0.0"),
    (dict(gamma=1.5), "gamma must be a decay factor"),
    (dict(optimizer="adagrad"), "optimizer must be one of sgd, nesterov, adamw, adam, rmsprop; got 'adagrad'"),
])
def test_bad_schedule_settings_raise_one_line(overrides, message):
    with pytest.raises(CnnlabError, match=message) as e:
        make_config("lenet", **overrides)
    assert "\n" not in str(e.value)


def test_parse_milestones():
    assert parse_milestones("30,60") == (30, 60) and parse_milestones(" 4 ") == (4,)
    with pytest.raises(CnnlabError, match="got ''"):
        parse_milestones("")


def test_cli_trains_with_adam_and_a_step_decay(tmp_path, data_dir):
    from cnnlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "lenet-relu", "--optimizer", "adam", "--lr", "0.002", "--schedule", "step",
                 "--step-size", "1", "--gamma", "0.5", "--epochs", "2", "--limit-train-batches", "2",
                 "--limit-val-batches", "1", "--out", str(out), "--quiet", "--no-report"]) == 0
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(rows[0]["lr"] * 0.5)


def test_a_plan_shorter_than_the_frozen_phase_still_ends_annealed():
    """A time budget's plan (set_total) ending inside --freeze-epochs' first cycle: one cycle over the whole plan."""
    factor = LRFactor("onecycle", 100, 0, restart=50)
    factor.set_total(40)
    assert factor(39) < 0.05 and factor(40) == 0.0  # annealed at the plan's end, not mid-way up the first cycle
    kept = LRFactor("onecycle", 100, 0, restart=50)
    kept.set_total(80)  # past the frozen phase: the two cycles stay
    assert kept(49) < 0.05 and kept(50) == pytest.approx(0.5 * 0.04)
