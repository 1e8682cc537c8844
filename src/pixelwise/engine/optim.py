"""Optimisers and learning-rate schedules named in :class:`~pixelwise.config.OptimConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from pixelwise.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the FCN and U-Net papers) or AdamW, with weight decay on every weight."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total_steps: int, config: OptimConfig,
              budget_used: float | None = None) -> float:
    """Multiplier of the base learning rate before optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup_steps``, then ``constant``, ``linear`` (1 - t), ``poly``
    ((1 - t) ** power, as in DeepLab and most FCN re-implementations) or ``cosine`` decay, with
    ``t`` going from 0 to 1 over the steps after the warm-up, or, under a budget, ``t =
    budget_used``, the fraction of ``train.time_budget`` / ``train.max_steps`` used so far
    (Li, Yumer, Ramanan, "Budgeted Training", ICLR 2020: decay to zero over the budget).
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if budget_used is None:
        span = max(total_steps - config.warmup_steps, 1)
        t = min((step - config.warmup_steps) / span, 1.0)
    else:
        t = min(budget_used, 1.0)
    if config.schedule == "linear":
        return 1.0 - t
    if config.schedule == "poly":
        return (1.0 - t) ** config.poly_power
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig,
    budget_used: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimiser-step scheduler following :func:`lr_factor`.

    ``total_steps`` is read each time, so a resumed run with more epochs stretches the decay over
    the new total from where it stopped. ``budget_used`` (under a time or step budget) returns
    the fraction of the budget used when the scheduler steps; the decay follows it instead.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config,
                                          budget_used() if budget_used else None)
    )
