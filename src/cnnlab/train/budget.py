"""A run's length as wall-clock seconds: the schedule is shaped by the time the run has, on whatever machine.

An epoch count fits one machine: the VM lands on hosts twice as fast as each other, so a recipe's epochs either
overrun its time or leave half of it unused (docs/benchmarks.md). airbench's lesson is that a recipe is a budget.
:class:`TimeBudget` turns ``--time-budget SECONDS`` into a number of optimizer steps:

1. Until the speed is known the schedule runs over the recipe's own epoch count (a provisional length).
2. At the first epoch's end (or once a tenth of the budget is gone, whichever comes first) it measures the
   seconds per training step and what an epoch's end costs (evaluation, checkpoints, observers), and plans the
   steps that fit: the schedule's length becomes that count, so one-cycle and cosine end where the time does.
3. At every later epoch's end it plans again from the figures measured so far (a host that slows down, or an
   evaluation dearer than estimated, shortens the rest instead of overrunning).
4. Training stops at the planned step, mid-epoch if need be; the final evaluation (and, with a validation split,
   the test pass) is inside the budget. Should a step take far longer than planned, it stops when only the final
   evaluation's time is left, wherever the schedule is (``budget_cut`` in result.json).

The budget covers the fit (``wall_s`` in result.json), as the recipes' targets always have: process start-up,
reading the dataset and the report written afterwards are outside it. Only the planned step count depends on
timing; a run with the same seed on the same host is identical up to the first plan, and two runs whose plans
agree are identical throughout. A resumed run continues with what is left: the fitting seconds before the
interruption count (the checkpoint holds them), the work lost since the last checkpoint is redone inside the rest.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import Any

import torch

from cnnlab.train.distributed import DistEnv, reduce_int
from cnnlab.train.state import TrainState

# The first steps of a process set up kernels (oneDNN primitives, compiled graphs): not the speed of the rest.
WARMUP_STEPS = 3
# Plan before the first epoch's end when that epoch is long: after this fraction of the budget.
EARLY_PLAN = 0.1
# Kept free at the end besides the final evaluation's estimate: the last writes, and timing noise.
MARGIN = 0.01
# The final evaluation is reserved at this multiple of the last epoch end's measured cost: a machine that slows
# down (another process waking up) slows the evaluation too, and running over is worse than a few steps fewer.
FINAL_SAFETY = 1.5
# An evaluation image costs about a third of a training image (forward only); half, to err on the safe side
# until an epoch's end has been timed (and twice that with flip-TTA's second forward pass).
EVAL_COST = 0.5
# The pace the cut judges by: the median of the last few steps, so that one step the OS delayed does not end a run
# a few steps before its plan, while a lasting slowdown is seen within a few steps.
RECENT_STEPS = 5


class TimeBudget:
    """Plans and ends a run by wall-clock time; the Trainer calls it after each step and each epoch's end.

    Args:
        seconds: the budget for the fit.
        state: the run's TrainState; ``budget_steps`` (the planned count of steps, i.e. batches as ``state.step``
            counts them; None until planned) lives there so that it is checkpointed with the other counters.
        schedule: the learning-rate factor (:class:`cnnlab.train.schedule.LRFactor`, in optimizer steps), whose
            length is set to the plan.
        batches_per_epoch, batch_size: batches an epoch and images a batch (this process); ``accumulate``:
            batches an optimizer step (its last one closes at the epoch's end).
        eval_images: images of an epoch's evaluation; ``final_images``: of the evaluation(s) after the last step
            (the validation split and the test set with ``--val-split``).
        tta: flip-TTA doubles an evaluation's forward passes.
        dist, device: under torchrun every decision is taken together (ranks time differently), at the log
            interval's sync points, every ``log_every`` steps.
    """

    def __init__(self, seconds: float, state: TrainState, schedule: Any, *, batches_per_epoch: int, batch_size: int,
                 accumulate: int, eval_images: int, final_images: int, tta: bool, dist: DistEnv,
                 device: torch.device, log_every: int = 1):
        self.seconds, self.state, self.schedule = float(seconds), state, schedule
        self.batches_per_epoch, self.batch_size, self.accumulate = max(1, batches_per_epoch), batch_size, accumulate
        self.eval_images, self.final_images = eval_images, final_images
        self.eval_factor = EVAL_COST * (2 if tta else 1)
        self.dist, self.device = dist, device
        self.check_every = log_every if dist.enabled else 1  # steps until the next chance to stop
        self.start = 0.0  # the fit's clock origin, set by begin()
        self.cut = False  # stopped before the planned step because time ran out
        self.planned_before_cut: int | None = None
        self._train_seconds, self._seen_steps = 0.0, 0  # training seconds of this process's steps past the warm-up
        self._last = 0.0  # when the last step (or the last epoch's end, or the fit's start) ended
        self._recent: deque[float] = deque(maxlen=RECENT_STEPS)  # how long the last steps took
        self._epoch_end: float | None = None  # measured cost of an epoch's end (evaluation, checkpoints, observers)

    def begin(self, start: float) -> None:
        """The fit starts; ``start`` is its clock origin (earlier by the seconds a resumed run already spent)."""
        self.start, self._last = start, time.perf_counter()

    def used(self) -> float:
        """Seconds of the budget used so far."""
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        """Whether the run has reached its planned step count (or been cut short)."""
        return self.state.budget_steps is not None and self.state.step >= self.state.budget_steps

    # ------------------------------------------------------------------------------------------ the Trainer's calls
    def epoch_ended(self) -> None:
        """After an epoch's end (its evaluation, checkpoints and observers): time it, and plan the rest again."""
        now = time.perf_counter()
        if self._seen_steps:
            self._epoch_end = now - self._last
            if not self.spent():  # a finished plan stays: the time left over is the margin's, not more steps'
                self._plan(now)
        self._last = now

    def step_done(self, at_sync: bool, closes: bool) -> bool:
        """After each batch; True when training must stop now, which is only after an optimizer step (``closes``).
        Under torchrun it decides only at the log interval's sync points (``at_sync``, the same on every rank),
        together."""
        now = time.perf_counter()
        self._seen_steps += 1
        self._recent.append(now - self._last)
        if self._seen_steps > WARMUP_STEPS:
            self._train_seconds += self._recent[-1]
        self._last = now
        if not closes:
            return False
        if self.dist.enabled and not at_sync:  # the plan is the same on every rank: reaching it needs no collective
            return self.spent()
        # Late: the steps until the next chance to stop, at the recent pace, would eat into the final evaluation.
        pace = statistics.median(self._recent) if self._recent else 0.0
        late = now - self.start + self.check_every * pace + self._final_seconds() > self.seconds
        early_plan = self.state.budget_steps is None and now - self.start >= EARLY_PLAN * self.seconds
        both = reduce_int(2 * late + early_plan, self.dist, self.device)  # one collective for the two decisions
        late, early_plan = both >= 2, both == 1
        if late and not self.spent():
            self.planned_before_cut = self.state.budget_steps
            self.state.budget_steps, self.cut = self.state.step, True
        elif early_plan and self.state.budget_steps is None:
            self._plan(now)
        return self.spent()

    def record(self) -> dict[str, Any]:
        """result.json's figures of the budget."""
        return {"time_budget_s": self.seconds, "budget_steps": self.state.budget_steps, "budget_cut": self.cut,
                "budget_planned_before_cut": self.planned_before_cut}

    # ------------------------------------------------------------------------------------------ planning
    def _step_seconds(self) -> float | None:
        timed = self._seen_steps - WARMUP_STEPS
        return self._train_seconds / timed if timed > 0 else None

    def _epoch_end_seconds(self) -> float:
        if self._epoch_end is not None:
            return self._epoch_end
        step = self._step_seconds() or 0.0
        return self.eval_factor * step / self.batch_size * self.eval_images

    def _final_seconds(self) -> float:
        """The final evaluation(s) after the last step: an epoch's end, plus the test pass with a validation split."""
        end = self._epoch_end_seconds()
        return FINAL_SAFETY * end * self.final_images / max(1, self.eval_images) + MARGIN * self.seconds

    def _plan(self, now: float) -> None:
        """Set the step count that fits what is left: steps plus the epoch ends they cross plus the final one."""
        step_s = self._step_seconds()
        if step_s is None:
            return
        left = self.seconds - (now - self.start) - self._final_seconds()
        step, bpe, end = self.state.step, self.batches_per_epoch, self._epoch_end_seconds()

        def cost(more: int) -> float:  # the steps, and the epoch ends they cross before the last (the final one)
            last = step + more
            ends = last // bpe - step // bpe - (1 if more and last % bpe == 0 else 0)
            return more * step_s + max(0, ends) * end

        low, high = 0, max(0, int(left / step_s)) + 1  # cost(low) fits (or nothing does), cost(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if cost(mid) <= left else (low, mid)
        more = low
        total = reduce_int(step + more, self.dist, self.device, op="min")
        self.state.budget_steps = total
        # in optimizer steps: each full epoch has ceil(batches / accumulate), the last one what it reaches
        full, rest = divmod(total, bpe)
        self.schedule.set_total(full * math.ceil(bpe / self.accumulate) + math.ceil(rest / self.accumulate))
