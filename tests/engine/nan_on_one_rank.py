"""``pixelwise`` whose training loss is NaN on rank 1 only, from its second batch on:
``torchrun ... -m nan_on_one_rank train CONFIG ...`` (used by test_failures.py)."""

from __future__ import annotations

import os
import sys

import torch

import pixelwise.losses
from pixelwise.cli import main

real_build = pixelwise.losses.build_loss


class NanOnRankOne(torch.nn.Module):
    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss, self.calls = loss, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = self.loss(logits, target)
        return value * float("nan") if os.environ["RANK"] == "1" and self.calls >= 2 else value


pixelwise.losses.build_loss = lambda *args, **kwargs: NanOnRankOne(real_build(*args, **kwargs))
sys.exit(main(sys.argv[1:]))
