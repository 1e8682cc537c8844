"""Training for a time budget or a number of steps (``train.time_budget``, ``train.max_steps``).

Li, Yumer, Ramanan, "Budgeted Training: Rethinking Deep Neural Network Training Under Resource
Constraints" (ICLR 2020): under a fixed budget, decay the learning rate to zero over the budget
itself (linear or poly in the fraction used) instead of over a number of epochs guessed in
advance. :class:`Budget` measures that fraction; the schedule (:func:`~pixelwise.engine.optim.
lr_factor`) and the loop's stop read it.

What counts: the clock starts when :func:`pixelwise.train` is called, so the budget covers
everything the user waits for — set-up, data loading and augmentation, steps, checkpoints,
validations — and ``reserve`` keeps back the time of the final validation (estimated by the loop
before the first step, then the last full validation's measured time). Resumed runs continue the
accounting: the seconds used so far are saved in the training state (``spent_before``). Under
torchrun, rank 0's clock decides: the fraction is broadcast every step, so every rank uses the
same learning rate and stops at the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pixelwise.config import TrainConfig, budget_seconds
from pixelwise.device import SINGLE_PROCESS, DistInfo
from pixelwise.engine.distributed import broadcast_from_main


@dataclass
class Budget:
    """The part of a time and/or step budget used so far; no budget when both are off."""

    seconds: float | None = None  # train.time_budget in seconds; None: no time budget
    max_steps: int = 0  # train.max_steps; 0: no step budget
    clock: Callable[[], float] = time.perf_counter  # tests inject a fake one
    spent_before: float = 0.0  # seconds used by the earlier sessions of a resumed run
    reserve: float = 0.0  # seconds kept back for the final validation
    used: float = 0.0  # fraction of the budget used at the last update (rank 0's)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @classmethod
    def from_config(cls, config: TrainConfig,
                    clock: Callable[[], float] = time.perf_counter) -> Budget:
        return cls(budget_seconds(config.time_budget), config.max_steps, clock)

    @property
    def enabled(self) -> bool:
        return self.seconds is not None or self.max_steps > 0

    @property
    def spent(self) -> bool:
        """Whether training must stop (as of the last :meth:`update`)."""
        return self.enabled and self.used >= 1.0

    def elapsed(self) -> float:
        """Seconds used by this run, earlier sessions included."""
        return self.spent_before + self.clock() - self.started

    def update(self, step: int, dist_info: DistInfo = SINGLE_PROCESS) -> float:
        """The fraction used after ``step`` optimiser steps: the larger of steps / ``max_steps``
        and elapsed / (``seconds`` - ``reserve``); rank 0's value on every rank."""
        if not self.enabled:
            return 0.0
        used = step / self.max_steps if self.max_steps else 0.0
        if self.seconds is not None:
            used = max(used, self.elapsed() / max(self.seconds - self.reserve, 1e-9))
        self.used = broadcast_from_main(used, dist_info)
        return self.used

    def stopped_by(self, step: int) -> str | None:
        """``"max_steps"`` or ``"time_budget"`` when the budget is spent, else None."""
        if not self.spent:
            return None
        return "max_steps" if self.max_steps and step >= self.max_steps else "time_budget"
