"""Where a model runs: the device a name stands for, and this process's place in a torchrun job.

Both training and prediction choose a device the same way, so the rule lives here, below both:
``pick_device("auto")`` is CUDA when available, else the CPU, and under torchrun "cuda" means
this process's own GPU. Joining the process group itself is training's business
(:mod:`pixelwise.engine.distributed`).

``bf16_supported(device)`` says whether a device computes bfloat16 natively: training's autocast
and the "torch-bf16" inference backend both ask it, and both then measure whether it pays.
"""

from __future__ import annotations

import functools
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


@functools.cache
def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") runs bfloat16 natively, checked once a process.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, true for AVX512-BF16 and AMX, false for
    AVX2-only CPUs, where bf16 is emulated and slower than fp32), verified by running a small
    convolution under bf16 autocast and comparing it with fp32. Fast or not is a separate
    question, answered by measuring (``pixelwise.inference.backends.choose_backend``, training's
    ``autocast_dtype``).
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 16, 16, generator=generator)
    weight = torch.randn(8, 8, 3, 3, generator=generator) / 8
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.nn.functional.conv2d(x, weight, padding=1)
    except RuntimeError:
        return False
    exact = torch.nn.functional.conv2d(x, weight, padding=1)
    return low.dtype == torch.bfloat16 and torch.allclose(low.float(), exact, atol=0.1, rtol=0.05)
