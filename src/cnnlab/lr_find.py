"""The learning-rate range test (``cnnlab lr-find MODEL``): which peak lr to train at, in a hundred steps.

The method of Smith 2017 ("Cyclical Learning Rates for Training Neural Networks", sec. 3.3) as fastai's
``lr_find`` and Lightning's ``Tuner.lr_find`` run it: train a fresh copy of the model for ~100 mini-batches while
the learning rate grows exponentially from ``start_lr`` to ``end_lr``, smooth the loss with a bias-corrected
exponential moving average, stop once it diverges (above ``diverge`` times its best), and suggest an lr from the
curve. The model, data, preprocessing, optimizer and loss (class-weighted, or on class-balanced batches, under
``--balance``) are the ones ``cnnlab train`` would build from the same TrainConfig (:func:`cnnlab.train.make_config`),
so the suggestion is for that run's ``--lr``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.checks import FLOAT32_MAX, LR_EXPECTED, int_at_least, number
from cnnlab.errors import CnnlabError
from cnnlab.io import check_output_file, save_figure, train_loss_under

if TYPE_CHECKING:  # torch and matplotlib load when a range test runs, not when the CLI reads this module
    from matplotlib.figure import Figure
    from torch import nn

# The first steps of the sweep are dominated by the random init and the smoothing's warm-up, and the very last one
# is where the loss shot up: Lightning's suggestion skips the same ends (skip_begin=10, skip_end=1).
SKIP_BEGIN, SKIP_END = 10, 1
# Below this relative fall of the smoothed loss the "steepest descent" is the noise of a flat curve (the book's
# sigmoid LeNet sits on its 2.3 plateau for the whole of a 100-step sweep), not a descent.
MIN_DROP = 0.10
# The TrainConfig fields the sweep reads (the CLI's lr-find flags); lr, epochs and schedules play no part. The
# starting weights count: a fine-tuning run's sweep starts where that run starts, from --pretrained or --init-from,
# with the body frozen as its first epoch has it (--freeze, or the finetune recipe's --freeze-epochs), as fastai's
# lr_find runs on a freshly made, frozen pretrained learner. So does the loss: --balance loss weighs it by class, and
# --balance sampler draws the batches class-balanced, as the run's training steps are; and both, and the steps, go by
# the training part alone where --val-split holds some images out, as the run's do.
CONFIG_FIELDS = ("recipe", "dataset", "data_dir", "image_size", "channels", "skip_bad_images", "val_split",
                 "test_split", "batch_size", "optimizer", "momentum", "weight_decay", "label_smoothing", "balance",
                 "resize", "normalize", "augment", "init", "ops", "seed", "device", "pretrained", "init_from", "freeze",
                 "freeze_epochs")


@dataclass
class LRFindResult:
    """The sweep and its suggestion.

    Attributes:
        lrs: learning rate of each step taken.
        losses: training loss of each step.
        smoothed: bias-corrected exponential moving average of ``losses``.
        suggestion: the suggested peak learning rate.
        method: ``"steepest"`` (the lr where the smoothed loss falls fastest per log-lr) or ``"min/10"`` (a tenth
            of the lr at the smoothed loss's minimum).
        reason: one sentence saying why that method was chosen.
        steepest_lr, min_lr: both candidates (``steepest_lr`` is None when the curve was too short).
        diverged: whether the sweep stopped early because the loss diverged.
        model, dataset: what was swept.
        input_size, normalize: the model's input side and normalisation, as ``cnnlab train`` builds them for the same
            settings (:func:`cnnlab.train.build_run`).
        balance: the sweep's ``--balance`` (``loss``: the loss is class-weighted; ``sampler``: on class-balanced
            batches), which the plot's loss axis says, as a run's curves do; None or ``none``: the plain loss.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    method: str
    reason: str
    steepest_lr: float | None
    min_lr: float
    diverged: bool
    model: str = ""
    dataset: str = ""
    input_size: int | None = None
    normalize: list[list[float]] | None = None
    balance: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the suggested lr, which method and why."""
        return f"suggested lr {self.suggestion:.2e} ({self.method}): {self.reason}"


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """``steps`` learning rates spaced evenly in log scale from ``start_lr`` to ``end_lr`` (both included)."""
    if steps < 2:
        return [start_lr]
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction (Adam's, Kingma & Ba 2015, sec. 3): a constant stays itself."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest_lr(lrs: list[float], smoothed: list[float]) -> tuple[float, str, str, float | None, float]:
    """Pick the lr to suggest from a sweep: ``(lr, method, reason, steepest_lr, min_lr)``.

    The steepest descent of the smoothed loss against log lr is Lightning's default suggestion: the lr at which the
    loss still falls fastest, safely below where it blows up. It needs enough points past the noisy start and a
    real descent (the smoothed loss falling by at least ``MIN_DROP``, steepest before its minimum); otherwise
    fastai's older rule is used: a tenth of the lr at the minimum, one order of magnitude before the divergence.
    """
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    min_lr = lrs[best]
    usable = range(SKIP_BEGIN, len(smoothed) - SKIP_END)
    steepest_lr, drop = None, 0.0
    if len(usable) >= 3:
        drop = 1 - smoothed[best] / smoothed[usable.start] if smoothed[usable.start] > 0 else 0.0
        logs = [math.log(lr) for lr in lrs]
        # central differences, as numpy.gradient (Lightning's suggestion uses it over the loss array)
        slope = {i: (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in usable}
        steep = min(slope, key=slope.__getitem__)
        if slope[steep] < 0:
            steepest_lr = lrs[steep]
            if steep <= best and drop >= MIN_DROP:
                return (steepest_lr, "steepest", "where the smoothed loss falls fastest, before its minimum at "
                        f"{min_lr:.2e} (Lightning's default)", steepest_lr, min_lr)
    if len(usable) < 3:
        why = "the sweep was too short to locate the steepest descent"
    elif best < usable.start:  # it rose from the start: "fell by" would have measured from past the lowest point
        why = (f"the smoothed loss did not fall over the sweep (it is lowest at its start, {min_lr:.2e}; a smaller "
               "--start-lr sweeps where it falls)")
    elif drop < MIN_DROP:
        why = f"the smoothed loss fell only {drop:.0%} (no clear descent; more --steps may find one)"
    else:
        why = "the smoothed loss falls fastest only after its minimum (no clear descent)"
    below = ", below the range swept" if min_lr / 10 < lrs[0] else ""
    return (min_lr / 10, "min/10", f"{why}, so a tenth of the lr at the minimum {min_lr:.2e} (fastai's rule){below}",
            steepest_lr, min_lr)


def lr_find(model: str | nn.Module, recipe: str = "book", *, start_lr: float = 1e-6, end_lr: float = 10.0,
            steps: int = 100, beta: float = 0.98, diverge: float = 4.0, **overrides: Any) -> LRFindResult:
    """Run the learning-rate range test for a model as ``cnnlab train`` would set it up.

    Args:
        model: a registered model name, or a module to sweep a deep copy of (it is left untouched; pass the
            registered name as ``model_name=`` for its input size and defaults).
        recipe: the recipe whose optimizer, batch size and preprocessing the sweep uses.
        start_lr, end_lr: the range, swept exponentially.
        steps: mini-batches in the sweep (the data is cycled if it has fewer).
        beta: smoothing of the loss (0.98 as fastai and Lightning).
        diverge: stop once the smoothed loss exceeds this multiple of its best so far (4 as fastai and Lightning).
        **overrides: TrainConfig fields (``dataset``, ``batch_size``, ``optimizer``, ``momentum``, ``device``,
            ``data_dir``, ``seed``, ...), as for :func:`cnnlab.train.train`; ``lr`` and schedules are ignored.

    Raises:
        CnnlabError: a bad range, step count or TrainConfig value (one line).

    Example:
        >>> result = lr_find("lenet-relu", steps=60)  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
        suggested lr 1.30e-01 (steepest): where the smoothed loss falls fastest, ...
    """
    # torch loads when a range test runs, not when the CLI builds its flags from this module
    import torch
    import torch.nn.functional as F
    from torch import nn

    from cnnlab.device import torch_switches_restored
    from cnnlab.train import build_run, make_config
    from cnnlab.train.state import rng_state, set_rng_state

    number(start_lr, "start-lr", low=0, high=FLOAT32_MAX, low_open=True, expected=LR_EXPECTED)
    number(end_lr, "end-lr", low=0, high=FLOAT32_MAX, low_open=True, expected=LR_EXPECTED)
    if not start_lr < end_lr:
        raise CnnlabError(f"start-lr must be below end-lr, got {start_lr:g} and {end_lr:g}")
    int_at_least(steps, "steps", 2)
    if not (isinstance(diverge, (int, float)) and diverge > 1) or not 0 <= beta < 1:
        raise CnnlabError(f"diverge must be > 1 and beta in [0, 1), got diverge={diverge!r}, beta={beta!r}")

    given = model if isinstance(model, nn.Module) else None
    name = overrides.pop("model_name", None) if given is not None else model
    if name is None:
        raise CnnlabError("a module to sweep needs model_name=NAME too: the registered model whose input size and "
                          "defaults apply, got none")
    # The run train would build, but with a constant lr (the sweep sets each step's own) and no compile or EMA
    # wrapper (a hundred plain steps).
    cfg = make_config(name, recipe, **{**overrides, "lr": start_lr, "schedule": "constant", "warmup": 0.0,
                                       "compile": False, "ema": 0.0, "out": None})
    saved = rng_state()  # the caller's random streams are not advanced by the sweep
    with torch_switches_restored():  # and its process-wide kernel switches (--deterministic) not kept
        try:
            run = build_run(cfg, model=copy.deepcopy(given) if given is not None else None, quiet=True)
            net, loader, optimizer = run.model, run.train_loader, run.optimizer
            net.train()
            lrs, losses, smoothed, diverged = [], [], [], False
            batches, epoch = iter(()), 0
            for lr in lr_schedule(start_lr, end_lr, steps):
                try:
                    x, y = next(batches)
                except StopIteration:
                    loader.set_epoch(epoch)
                    batches, epoch = iter(loader), epoch + 1
                    x, y = next(batches)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = x.contiguous(memory_format=run.memory_format)
                with torch.autocast(**run.autocast):
                    loss = F.cross_entropy(net(x), y, weight=run.class_weights, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lrs.append(lr)
                losses.append(loss.item())  # one host sync a step: a hundred steps, and the stop test needs it
                smoothed = smooth(losses, beta)  # recomputed whole: a hundred points, and one definition of it
                if not math.isfinite(smoothed[-1]) or smoothed[-1] > diverge * min(smoothed):
                    diverged = True
                    break
        finally:
            set_rng_state(saved)
    if diverged and len(lrs) <= SKIP_BEGIN:  # within the noisy start: the sweep never saw the loss fall
        raise CnnlabError(f"the loss diverged after {len(lrs)} step(s), at lr {lrs[-1]:.2e}, before the sweep could "
                          f"see it fall; expected a --start-lr low enough to train (got {start_lr:.2e}; try "
                          f"{start_lr / 1000:.0e})")
    if diverged:  # the diverged point would dominate the plot and the minimum search
        lrs, losses, smoothed = lrs[:-1], losses[:-1], smoothed[:-1]
    suggestion, method, reason, steepest_lr, min_lr = suggest_lr(lrs, smoothed)
    return LRFindResult(lrs, losses, smoothed, suggestion, method, reason, steepest_lr, min_lr, diverged,
                        model=name, dataset=run.dataset.name, input_size=run.input_size, normalize=run.normalize,
                        balance=cfg.balance)


def lr_find_figure(result: LRFindResult) -> Figure:
    """The loss against the learning rate (log scale), raw and smoothed, with the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"suggested {result.suggestion:.1e} "
                                                                   f"({result.method})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    under = train_loss_under(result.balance)  # another loss than the plain one: the axis says which, as curves do
    ax.set_ylabel(f"training loss ({under})" if under else "training loss")
    # Up to the smoothed curve's top: the raw loss's last spikes would squash the part that matters.
    ax.set_ylim(min(min(result.losses), min(result.smoothed)) * 0.95, max(result.smoothed) * 1.1)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    title = " on ".join(p for p in (result.model, result.dataset) if p)
    ax.set_title(f"learning-rate range test: {title}" if title else "learning-rate range test")
    return fig


def check_plot_path(path: str | Path, force: bool = False) -> Path:
    """Refuse a plot path that is not ``.png``, or that :func:`cnnlab.io.check_output_file` refuses (a folder, an
    existing file without ``force``, a missing or unwritable folder)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CnnlabError(f"the plot must be a .png file, got {str(path)!r}")
    return check_output_file(path, force)


def write_lr_find_plot(result: LRFindResult, path: str | Path, force: bool = False) -> Path:
    """Save :func:`lr_find_figure` as a PNG (atomically); an existing file is replaced only with ``force``."""
    path = check_plot_path(path, force)
    save_figure(lr_find_figure(result), path, overwrite=force)
    return path
