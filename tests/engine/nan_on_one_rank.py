"""A training loss that turns NaN on rank 1 only, from its second batch on: ``nan_on_rank_one()``
run in each rank before ``pixelwise train`` (test_torchrun_jobs.py, through fork_ranks)."""

from __future__ import annotations

import os

import torch

import pixelwise.losses


class NanOnRankOne(torch.nn.Module):
    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss, self.calls = loss, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = self.loss(logits, target)
        return value * float("nan") if os.environ["RANK"] == "1" and self.calls >= 2 else value


def nan_on_rank_one() -> None:
    """Wrap every loss ``pixelwise.losses.build_loss`` builds from now on in `NanOnRankOne`."""
    real_build = pixelwise.losses.build_loss
    pixelwise.losses.build_loss = lambda *args, **kwargs: NanOnRankOne(real_build(*args, **kwargs))
