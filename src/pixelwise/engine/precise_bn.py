"""Precise batch-norm statistics: recompute the running mean/var before a validation.

Batch norm normalises with the batch's own statistics while training and with running averages
(``running = 0.9 running + 0.1 batch``, PyTorch's momentum 0.1) in evaluation. The averages start
at mean 0 / variance 1 and follow weights that change every step, so after a few dozen steps
they are far from the statistics the current weights produce: a short run on tiny data
validates far below its training accuracy (docs/training.md, "Batch norm in short runs":
mean IoU 16 % in eval mode against 87 % with recomputed statistics after 8 steps). Recomputing
them as a plain average over training batches with the weights frozen fixes this ("precise BN",
Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", §3).
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

# Time constants of the running average (1 / momentum updates each) after which it counts as
# settled for "auto": 20 of them leave e^-20 of the initial values and dwarf the average's lag
# behind the weights. PyTorch's default momentum 0.1 settles after 200 training batches;
# torchvision's MobileNetV3 uses 0.01, so 2,000: a 250-step CamVid run of the CPU recipe scored
# 0.077 val mean IoU with its running averages and 0.422 with recomputed ones (docs/training.md).
SETTLED_TIME_CONSTANTS = 20
BATCHES = 20  # training batches averaged (fewer when the loader has fewer)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def settled_after(model: nn.Module) -> float | None:
    """Training batches after which every batch norm of ``model`` counts as settled:
    :data:`SETTLED_TIME_CONSTANTS` / momentum for the slowest average (None: no batch norm;
    a layer with ``momentum=None`` keeps a cumulative average, which never settles)."""
    layers = batch_norms(model)
    if not layers:
        return None
    if any(layer.momentum is None for layer in layers):
        return math.inf
    return math.ceil(SETTLED_TIME_CONSTANTS / min(layer.momentum for layer in layers))


def needs_recompute(setting: str, model: nn.Module, updates: int) -> bool:
    """Whether to recompute: ``train.precise_bn`` is "always", or "auto" and the model has batch
    norm that has seen fewer than :func:`settled_after` training batches."""
    settled = settled_after(model)
    if setting == "never" or settled is None:
        return False
    return setting == "always" or updates < settled


@torch.no_grad()
def recompute_statistics(model: nn.Module, loader: DataLoader, device: torch.device,
                         memory_format: torch.memory_format = torch.contiguous_format,
                         batches: int = BATCHES) -> int:
    """Replace the running mean/var of every batch norm of ``model`` by their average over the
    first ``batches`` batches of ``loader`` (images only; weights untouched); return how many
    batches were used.

    The random state of Python, NumPy and torch is restored afterwards, so the training that
    follows draws the same augmentation as without this pass (exact resume is unaffected).
    """
    layers = batch_norms(model)
    saved = [(layer.momentum, layer.num_batches_tracked.clone()) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative (plain) average over the batches seen
    was_training = model.training
    model.train()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    used = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for image, _ in itertools.islice(loader, batches):
            model(image.to(device, non_blocking=True, memory_format=memory_format))
            used += 1
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    for layer, (momentum, tracked) in zip(layers, saved, strict=True):
        layer.momentum = momentum
        layer.num_batches_tracked.copy_(tracked)
    model.train(was_training)
    return used
