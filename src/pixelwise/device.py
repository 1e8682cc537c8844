"""Where a model runs: the device a name stands for, and this process's place in a torchrun job.

Both training and prediction choose a device the same way, so the rule lives here, below both:
``pick_device("auto")`` is CUDA when available, else the CPU, and under torchrun "cuda" means
this process's own GPU. A name that is no device, or a device this machine does not have, is a
one-line :class:`~pixelwise.errors.ConfigError` saying what was asked, what exists and what to
try. Joining the process group itself is training's business (:mod:`pixelwise.engine.distributed`).

``bf16_supported(device)`` says whether a device computes bfloat16 natively: training's autocast
and the "torch-bf16" inference backend both ask it, and both then measure whether it pays.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from pixelwise.errors import ConfigError

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")


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


def pick_device(name: str | torch.device, dist_info: DistInfo = SINGLE_PROCESS,
                spelling: str = "device={value}") -> torch.device:
    """The device ``name`` names: "auto" is CUDA when available, else the CPU; under torchrun
    "cuda" is this process's own GPU (``cuda:LOCAL_RANK``).

    ConfigError when ``name`` is no device name or names a device this machine lacks; the
    "try ..." is spelled as ``spelling`` (``"train.device={value}"``, ``"--device {value}"``)."""
    name = str(name)
    check_device_name(name, spelling)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info.enabled:
        name = f"cuda:{dist_info.local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        _check_gpu(device, spelling)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device 'mps' must be an Apple GPU of this machine, got none (devices "
                          f"here: {available_devices()}); try {spelling.format(value='cpu')}")
    return device


def check_device_name(name: str, spelling: str = "device={value}") -> None:
    """ConfigError unless ``name`` is one of :data:`DEVICE_NAMES` (N a GPU index); checks the
    spelling only, so a config can be checked on a machine without the device."""
    if name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", str(name)):
        return
    wanted_gpu = str(name).lower().startswith(("gpu", "cuda", "nvidia"))
    hint = spelling.format(value="cuda" if wanted_gpu else "auto")
    raise ConfigError(f"device must be one of {', '.join(DEVICE_NAMES)}, got {name!r}; try {hint}"
                      + (" (or auto: the GPU when there is one)" if wanted_gpu else ""))


def available_devices() -> str:
    """What this machine has, in words: ``"cpu, cuda:0, cuda:1"``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ", ".join(["cpu", *(f"cuda:{i}" for i in range(count))])


def _check_gpu(device: torch.device, spelling: str) -> None:
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "torch finds no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)")
        raise ConfigError(
            f"device {str(device)!r} must be a GPU of this machine, got none: {why}; devices "
            f"here: {available_devices()}; try {spelling.format(value='cpu')} (or auto)"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {str(device)!r} must be a GPU of this machine, got {count} GPU(s); devices "
            f"here: {available_devices()}; try {spelling.format(value='cuda:0')} (or auto)"
        )


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
