"""--time-budget: the schedule planned by the measured speed, ending with the final evaluation inside the budget.

The runs here use a simulated clock: ``time.perf_counter`` advances only when the model computes, by a fixed cost
per training or evaluation image (exact binary fractions, so every sum is exact). The plans are then a function of
the simulated machine's speed alone, which lets the tests compare a slow and a fast machine, and an interrupted
run with an uninterrupted one, without measuring anything real.
"""

import json
import signal
import time

import pytest
import torch

from cli_support import assert_one_line, run
from cnnlab.data import ImageDataset
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.runs import RunFolder, load_checkpoint
from cnnlab.train import build_run, make_config
from cnnlab.train.budget import WARMUP_STEPS, TimeBudget
from cnnlab.train.distributed import DistEnv
from cnnlab.train.schedule import LRFactor
from cnnlab.train.state import TrainState
from cnnlab.train.trainer import Trainer
from data_support import noise_dataset

TRAIN_COST = 2.0**-7  # simulated seconds per training image (a batch of 32: 0.25 s)
EVAL_COST = 2.0**-9  # per evaluation image


class Clock:
    """A perf_counter that moves only when the model runs: ``cost`` seconds per image in training mode."""

    def __init__(self, train_cost: float = TRAIN_COST, eval_cost: float = EVAL_COST):
        self.now, self.train_cost, self.eval_cost = 1000.0, train_cost, eval_cost

    def __call__(self) -> float:
        return self.now

    def hook(self, module, inputs, output) -> None:
        self.now += (self.train_cost if module.training else self.eval_cost) * inputs[0].shape[0]


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    return clock


def _dataset() -> ImageDataset:
    return noise_dataset(torch.arange(320) % 4, "abcd", test=64)


def _trainer(clock: Clock, run_dir, dataset: ImageDataset, resume_state=None, quiet=True, **overrides) -> Trainer:
    settings = dict(recipe="fast", time_budget=10.0, batch_size=32, device="cpu", log_every=4, **overrides)
    config = make_config("lenet-bn-relu", **settings)
    parts = build_run(config, dataset=dataset, resume_state=resume_state, quiet=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts.model.register_forward_hook(clock.hook)
    return Trainer(parts, run_dir=run_dir, observers=[RunFolder(run_dir)], quiet=quiet)


def _fit(clock, run_dir, **overrides) -> Trainer:
    trainer = _trainer(clock, run_dir, _dataset(), **overrides)
    trainer.fit()
    return trainer


def test_the_fit_ends_within_the_budget_with_the_schedule_run_out(clock, tmp_path):
    trainer = _fit(clock, tmp_path / "run")
    result = trainer.result
    assert result["time_budget_s"] == 10.0 and not result["budget_cut"]
    assert result["steps"] == result["budget_steps"]
    assert 0.9 * 10.0 <= result["wall_s"] <= 10.0  # the final evaluation included, the budget used
    # 10 batches an epoch at 0.25 s: about 3.5 epochs fit; the run stopped inside an epoch and evaluated it.
    assert result["epochs"] == len(trainer.state.history) and result["epochs_trained"] == result["steps"] / 10
    assert 3 <= result["epochs_trained"] < 4
    assert result["stopped_early_epoch"] is None  # fewer epochs than the provisional 10: the budget, not early stop
    # The one-cycle was planned to end at the budget's last step: its learning rate there is zero.
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["budget_steps"] == result["budget_steps"] and saved["steps"] == result["steps"]


def test_a_budgeted_run_says_what_its_budget_bought(clock, tmp_path, capsys):
    trainer = _trainer(clock, tmp_path / "run", _dataset(), quiet=False)
    trainer.fit()
    done = capsys.readouterr().out.splitlines()[-1]
    steps = trainer.result["steps"]
    assert done.startswith("done: lenet-bn-relu test_acc ")
    assert done.endswith(f"img/s, {steps} steps ({steps / 10:.2f} epochs) in its 10s budget -> {tmp_path / 'run'}")


def test_a_slower_machine_gets_fewer_steps_in_the_same_budget(clock, tmp_path):
    fast = _fit(clock, tmp_path / "fast").result
    clock.train_cost, clock.eval_cost = 2 * TRAIN_COST, 2 * EVAL_COST
    slow = _fit(clock, tmp_path / "slow").result
    assert slow["wall_s"] <= 10.0 and fast["wall_s"] <= 10.0
    assert slow["steps"] < 0.6 * fast["steps"]  # half the speed: about half the steps (the evaluations cost too)


def test_a_step_far_slower_than_planned_cuts_the_run_before_the_budget(clock, tmp_path):
    dataset = _dataset()
    trainer = _trainer(clock, tmp_path / "run", dataset)

    def slow_down(trainer, row, is_best):  # from the second epoch on, training costs four times what was measured
        clock.train_cost = 4 * TRAIN_COST

    trainer.observers.append(type("SlowDown", (), {"on_epoch": staticmethod(slow_down)})())
    trainer.fit()
    assert trainer.result["budget_cut"] and trainer.result["wall_s"] <= 10.0


def test_the_same_seed_and_machine_give_the_same_run(clock, tmp_path):
    a, b = _fit(clock, tmp_path / "a"), _fit(clock, tmp_path / "b")
    assert a.result["budget_steps"] == b.result["budget_steps"]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_an_interrupted_budgeted_run_resumes_with_what_is_left(clock, tmp_path):
    whole = _fit(clock, tmp_path / "whole")
    dataset = _dataset()
    trainer = _trainer(clock, tmp_path / "cut", dataset)

    def stop_in_epoch_3(_, row, is_best):
        if row["epoch"] == 2:
            trainer._on_signal(signal.SIGINT)  # as Ctrl-C would: the next step checkpoints and stops

    trainer.observers.append(type("Stop", (), {"on_epoch": staticmethod(stop_in_epoch_3)})())
    with pytest.raises(Interrupted):
        trainer.fit()
    clock.now += 123.0  # the time between the interruption and the resume is not the run's
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert state["budget_steps"] is not None and state["elapsed"] > 0
    resumed = _trainer(clock, tmp_path / "cut", dataset, resume_state=state)
    resumed.fit()
    assert resumed.result["wall_s"] <= 10.0
    assert resumed.result["steps"] == whole.result["steps"]
    for (name, x), y in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_plan_counts_the_epoch_ends_it_crosses():
    """Planning alone: 0.1 s a step, 1 s an epoch's end, 10 steps an epoch, a 10 s budget."""
    state = TrainState(step=10)  # one epoch done
    factor = LRFactor("onecycle", 100, 0)
    budget = TimeBudget(10.0, state, factor, batches_per_epoch=10, batch_size=1, accumulate=1, eval_images=1,
                        final_images=1, tta=False, dist=DistEnv(), device=torch.device("cpu"))
    budget.start, budget._train_seconds, budget._epoch_end = 0.0, 1.0, 1.0
    budget._seen_steps = 10 + WARMUP_STEPS  # 10 timed steps in 1 s
    budget._plan(now=2.0)  # 2 s used; the final evaluation reserves 1.5 x 1 s + 1% of 10 s: 6.4 s left

    def cost(n):  # n steps from step 10, and the epoch ends strictly inside them (the last one is the final's)
        return n * 0.1 + sum(1.0 for b in range(11, 10 + n) if b % 10 == 0)

    planned = state.budget_steps - 10
    assert cost(planned) <= 6.4 + 1e-9 < cost(planned + 1)
    assert planned == 34  # 3.4 s of steps and the ends of epochs 2, 3 and 4; the 5th end at step 44 is the final
    assert factor.total == state.budget_steps


def test_recipes_are_budgets_and_an_epoch_count_replaces_the_budget():
    assert make_config("lenet-bn-relu", "fast").time_budget == 60.0
    assert make_config("compact", "cpu10").time_budget == 600.0
    assert make_config("lenet", "book").time_budget is None
    assert make_config("lenet-bn-relu", "fast", epochs=3).time_budget is None  # as every run before budgets
    assert make_config("lenet", "book", time_budget=30).time_budget == 30
    with pytest.raises(CnnlabError, match="--epochs and --time-budget both"):
        make_config("lenet", "book", epochs=3, time_budget=30)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_bad_time_budget_is_one_line_and_exit_2(value, capsys, tmp_path):
    assert_one_line(*run(["train", "lenet", f"--time-budget={value}", "--out", str(tmp_path / "r")], capsys),
                    "time-budget")
    assert not (tmp_path / "r").exists()


def test_resume_with_epochs_of_a_budgeted_run_is_refused(clock, tmp_path, capsys):
    _fit(clock, tmp_path / "run")
    assert_one_line(*run(["train", "--resume", str(tmp_path / "run"), "--epochs", "20"], capsys), "time budget of 10s")
