"""Where a model runs: the device a name stands for, and this process's place in a torchrun job.

Both training and prediction choose a device the same way, so the rule lives here, below both:
``pick_device("auto")`` is CUDA when available, else the CPU, and under torchrun "cuda" means
this process's own GPU. Joining the process group itself is training's business
(:mod:`pixelwise.engine.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    """This process's rank among ``world_size`` torchrun processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistInfo()


def pick_device(name: str | torch.device, dist_info: DistInfo = SINGLE_PROCESS) -> torch.device:
    """The device ``name`` names: "auto" is CUDA when available, else the CPU; under torchrun
    "cuda" is this process's own GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info.enabled:
        name = f"cuda:{dist_info.local_rank}"
    return torch.device(name)
