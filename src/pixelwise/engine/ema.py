"""An exponential moving average of the weights (``train.ema``): the model a run publishes.

After every optimiser step the averaged copy moves towards the trained weights,
``ema = decay_n ema + (1 - decay_n) weights``, batch-norm running statistics included. The
decay warms up, ``decay_n = min(train.ema, (1 + n) / (10 + n))`` after ``n`` updates (the
``num_updates`` rule of TensorFlow's ``ExponentialMovingAverage``), so the average never
carries the random initial weights and in a run shorter than ``1 / (1 - train.ema)`` steps it
spans roughly the last tenth of the steps, whatever the run's length. Averaging the last
iterates of SGD smooths out the noise of the final steps (Polyak & Juditsky 1992; Izmailov et
al. 2018, "Averaging Weights Leads to Wider Optima"); timm and torchvision's reference scripts
offer it as ``--model-ema``. The averaging itself is PyTorch's ``AveragedModel``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WARMUP = 10  # the decay is (1 + n) / (WARMUP + n) until that exceeds train.ema


def decay_after(updates: int, decay: float) -> float:
    """The decay of update ``updates + 1`` (0-based count of those before it)."""
    return min(decay, (1 + updates) / (WARMUP + updates))


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An averaged copy of ``model`` (parameters and buffers) that
    :func:`update` moves towards it; None when ``decay`` is None (no averaging)."""
    if decay is None:
        return None

    @torch.no_grad()
    def average(averaged: list[torch.Tensor], current: list[torch.Tensor],
                updates: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):  # counters such as num_batches_tracked
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1.0 - decay_after(int(updates), decay))

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


def update(ema: AveragedModel | None, model: nn.Module) -> None:
    """Move the average towards ``model``'s current weights (the first update copies them)."""
    if ema is not None:
        ema.update_parameters(model)


def updates(ema: AveragedModel) -> int:
    """How many updates the average has had."""
    return int(ema.n_averaged)


def set_updates(ema: AveragedModel, count: int) -> None:
    """Restore the update count of a resumed average (its weights are loaded separately)."""
    ema.n_averaged.fill_(count)
