"""Optimizers and per-step learning-rate schedules named by TrainConfig."""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.train.config import TrainConfig, parse_milestones


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the book's), Nesterov SGD, AdamW, Adam or RMSprop at ``cfg.lr``.

    Weight decay applies to weights of rank >= 2 only: decaying biases and batch-norm scales only hurts
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 5.1). The book uses none, so its recipe is unchanged.
    Adam and RMSprop add it to the gradient (L2, as torch does); AdamW decouples it (Loshchilov & Hutter 2019).
    ``cfg.momentum`` is SGD's momentum and RMSprop's (d2l 12.8 describes RMSprop without it); Adam keeps its
    default betas (0.9, 0.999).
    """
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
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
    """

    def __init__(self, schedule: str, total_steps: int, warmup_steps: int, *, steps_per_epoch: int = 1,
                 step_size: int | None = None, gamma: float = 0.1, milestones: tuple[int, ...] = ()):
        self.schedule, self.total, self.warmup = schedule, max(1, total_steps), warmup_steps
        self.steps_per_epoch, self.step_size, self.gamma = max(1, steps_per_epoch), step_size, gamma
        self.milestones = tuple(milestones)

    def __call__(self, step: int) -> float:
        if self.schedule == "onecycle":
            # Linear up from 1/25 of the peak, then linear down to zero (the triangular one-cycle of
            # Smith & Topin 2018 that airbench uses; simpler and as good as OneCycleLR's cosine legs here).
            peak = self.warmup or max(1, round(0.25 * self.total))
            if step < peak:
                return 0.04 + 0.96 * step / peak
            return max(0.0, (self.total - step) / max(1, self.total - peak))
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step LambdaLR for ``cfg.schedule`` over ``cfg.epochs`` epochs."""
    total = cfg.epochs * steps_per_epoch
    factor = LRFactor(cfg.schedule, total, round(cfg.warmup * steps_per_epoch), steps_per_epoch=steps_per_epoch,
                      step_size=cfg.step_size, gamma=cfg.gamma,
                      milestones=parse_milestones(cfg.milestones) if cfg.milestones else ())
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
