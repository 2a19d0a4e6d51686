"""Optimizers and per-step learning-rate schedules named by TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.train.config import TrainConfig, parse_milestones
from cnnlab.train.finetune import head_parameters

# With --freeze-epochs the body learns at this fraction of the head's learning rate once it is unfrozen: d2l 14.2
# trains the new output layer at 10x the pretrained layers' rate (fastai spreads slice(lr/100, lr) over its groups).
BODY_LR_FACTOR = 0.1
# fastai's fine_tune halves the base learning rate for the unfrozen phase's one-cycle.
UNFROZEN_PEAK = 0.5


def build_optimizer(model: nn.Module, cfg: TrainConfig, head: Sequence[str] = ()) -> torch.optim.Optimizer:
    """SGD (the book's), Nesterov SGD, AdamW, Adam or RMSprop at ``cfg.lr``.

    Weight decay applies to weights of rank >= 2 only: decaying biases and batch-norm scales only hurts
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 5.1). The book uses none, so its recipe is unchanged.
    Adam and RMSprop add it to the gradient (L2, as torch does); AdamW decouples it (Loshchilov & Hutter 2019).
    ``cfg.momentum`` is SGD's momentum and RMSprop's (d2l 12.8 describes RMSprop without it); Adam keeps its
    default betas (0.9, 0.999).

    With ``cfg.freeze_epochs`` (fine-tuning) the head (:func:`~cnnlab.train.finetune.head_parameters`: the
    classifier's last layer, or the layers ``head`` names) and the body are separate parameter groups, head first
    (so ``param_groups[0]["lr"]`` is the peak lr the run reports): the body's lr is ``BODY_LR_FACTOR`` x ``cfg.lr``.
    Frozen parameters get no gradient, and optimizers skip those, so the body's groups change nothing
    (not even momentum or weight decay) until the Trainer unfreezes it.
    """
    trained = {id(p) for p in head_parameters(model, head)} if cfg.freeze_epochs else set()
    groups = []
    for part, lr in (("head", cfg.lr), ("body", cfg.lr * BODY_LR_FACTOR)) if trained else (("all", cfg.lr),):
        params = [p for p in model.parameters() if part == "all" or (id(p) in trained) == (part == "head")]
        decay, rest = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
        groups += [{"params": decay, "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": rest, "weight_decay": 0.0, "lr": lr}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov")


class LRFactor:
    """The schedule as a picklable callable of the step (LambdaLR then keeps its state in state_dict).

    ``step`` and ``multistep`` decay by ``gamma`` at epoch boundaries, as torch's StepLR and MultiStepLR do when
    stepped once per epoch (the ResNet paper's "divided by 10" schedule, He et al. 2016, sec. 3.4): every
    ``step_size`` epochs, or at each epoch in ``milestones``.

    ``restart`` (fine-tuning's unfreeze, in steps; 0: none): the one-cycle starts again there over the remaining
    steps, peaking at ``UNFROZEN_PEAK`` (fastai's ``fine_tune``: one cycle for the head alone, then one for all).
    """

    def __init__(self, schedule: str, total_steps: int, warmup_steps: int, *, steps_per_epoch: int = 1,
                 step_size: int | None = None, gamma: float = 0.1, milestones: tuple[int, ...] = (),
                 restart: int = 0):
        self.schedule, self.total, self.warmup = schedule, max(1, total_steps), warmup_steps
        self.steps_per_epoch, self.step_size, self.gamma = max(1, steps_per_epoch), step_size, gamma
        self.milestones = tuple(milestones)
        self.restart = restart if schedule == "onecycle" and 0 < restart < total_steps else 0

    def set_total(self, total_steps: int) -> None:
        """Change the schedule's length from here on (a time budget's plan: cnnlab.train.budget). A plan that ends
        inside the frozen phase gets one cycle over all of it, so that the run still ends annealed."""
        self.total = max(1, total_steps)
        if self.restart >= self.total:
            self.restart = 0

    def __call__(self, step: int) -> float:
        if self.restart:  # two cycles: the frozen phase's, then the unfrozen phase's at a lower peak
            if step < self.restart:
                return self._onecycle(step, self.restart)
            return UNFROZEN_PEAK * self._onecycle(step - self.restart, self.total - self.restart)
        if self.schedule == "onecycle":
            return self._onecycle(step, self.total, self.warmup)
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "cosine":
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        epoch = step // self.steps_per_epoch  # epochs completed before this step
        if self.schedule == "step":
            return self.gamma ** (epoch // self.step_size)
        if self.schedule == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        return 1.0

    @staticmethod
    def _onecycle(step: int, total: int, warmup: int = 0) -> float:
        # Linear up from 1/25 of the peak (at ``warmup`` steps, or a quarter of ``total``), then linear down to zero
        # at ``total``: the triangular one-cycle of Smith & Topin 2018 that airbench uses (simpler and as good as
        # OneCycleLR's cosine legs here).
        peak = warmup or max(1, round(0.25 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        return max(0.0, (total - step) / max(1, total - peak))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step LambdaLR for ``cfg.schedule`` over ``cfg.epochs`` epochs (with ``--time-budget``, a provisional
    length until the budget's plan sets it)."""
    total = cfg.epochs * steps_per_epoch
    factor = LRFactor(cfg.schedule, total, round(cfg.warmup * steps_per_epoch), steps_per_epoch=steps_per_epoch,
                      step_size=cfg.step_size, gamma=cfg.gamma,
                      milestones=parse_milestones(cfg.milestones) if cfg.milestones else (),
                      restart=cfg.freeze_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
