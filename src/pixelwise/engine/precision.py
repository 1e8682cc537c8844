"""The precision training's forward pass runs in (``train.amp``), chosen by measuring the model.

bf16 autocast is not a free win on a CPU with bf16 units. On an Intel Xeon with AMX (2 cores,
torch 2.14.1) a training step of the ISBI recipe's U-Net (4x1x256x256) took 0.45x its fp32
time under bf16, while the CamVid recipe's FCN-8s on MobileNetV3 (4x3x176x240: depthwise
convolutions, many small layers and casts) took 1.48x. A small stand-in network cannot tell the
two apart, so :func:`bf16_training_pays` times the model itself, on a copy, at the shape of a
training batch. The choice is stored in the training state: a resumed run keeps the precision
it began with (exact resume), and under torchrun every process follows rank 0's measurement.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from pixelwise.device import SINGLE_PROCESS, DistInfo, bf16_supported
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine.distributed import broadcast_from_main

log = logging.getLogger(__name__)

# bf16 must beat fp32 by this fraction of the fp32 step to be chosen: the casts, the extra
# rounding and a noisy 2-core machine make a near-tie not worth it.
MARGIN = 0.10


def autocast_dtype(device: torch.device, amp: bool | str, measure: Callable[[], bool],
                   recorded: str = "", dist_info: DistInfo = SINGLE_PROCESS) -> torch.dtype | None:
    """The autocast dtype of training's forward pass; None: full precision.

    ``amp=true``: on CUDA bf16 where supported, else fp16; on a CPU with native bf16
    (``pixelwise.device.bf16_supported``) bf16 when ``measure()`` (normally
    :func:`bf16_training_pays` on the model being trained) says it is faster, else full
    precision, so a CPU without bf16 units (emulated bf16 is slower) trains in fp32 unmeasured.
    ``recorded`` (a resumed run's :func:`dtype_name`) replaces the measurement; under torchrun
    (``dist_info``) every process follows rank 0's measurement. ``amp="bf16"``:
    bf16 on any device, measured or not. ``amp=false``: full precision.
    """
    if amp == "bf16":
        return torch.bfloat16
    if not amp:
        return None
    if device.type == "cuda":
        return _cuda_dtype()
    if device.type != "cpu" or not bf16_supported("cpu"):
        return None
    if recorded:
        log.info("train.amp: %s, as the resumed run began", recorded)
        return torch.bfloat16 if recorded == dtype_name(torch.bfloat16) else None
    faster = broadcast_from_main(float(measure()), dist_info)  # ranks share the cores
    return torch.bfloat16 if faster else None


def uses_grad_scaler(device: torch.device, amp: bool | str) -> bool:
    """Whether training needs fp16's gradient scaler: CUDA without bf16 under ``amp=true``."""
    return amp is True and device.type == "cuda" and _cuda_dtype() == torch.float16


def _cuda_dtype() -> torch.dtype:
    """``amp=true``'s dtype on CUDA: bf16 where the GPU has it, else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def dtype_name(dtype: torch.dtype | None) -> str:
    """How the training state records a choice: ``"bfloat16"``, ``"float16"``, ``"float32"``."""
    return str(dtype or torch.float32).removeprefix("torch.")


def bf16_training_pays(model: nn.Module, example: torch.Tensor, rounds: int = 3) -> bool:
    """Whether a forward and backward pass of ``model`` on the batch ``example`` runs at least
    :data:`MARGIN` faster under bf16 autocast than in fp32 on this CPU.

    Timed on a deep copy of ``model`` in training mode (the model's weights, gradients and
    batch-norm statistics are untouched), the two precisions interleaved
    after one untimed step each, ``rounds`` pairs at most and the medians compared; a first
    pair that is decisive (one precision under half the other's time) ends it early. The
    Python, NumPy and torch random states are restored, so training draws what it would have.
    """
    saved = ckpt.rng_state()
    try:
        fp32, bf16 = _interleaved_step_times(copy.deepcopy(model).train(), example, rounds)
    finally:
        ckpt.set_rng_state(saved)
    pays = bf16 < (1 - MARGIN) * fp32
    log.info("train.amp: a %s step of this model takes %.0f ms under bf16 autocast against "
             "%.0f ms in fp32 on this CPU: %s", "x".join(map(str, example.shape)), 1e3 * bf16,
             1e3 * fp32, "training in bf16" if pays else "staying in fp32")
    return pays


def _interleaved_step_times(model: nn.Module, example: torch.Tensor,
                            rounds: int) -> tuple[float, float]:
    """Median seconds of an fp32 and a bf16 training step of ``model`` (see above)."""

    def step(dtype: torch.dtype) -> float:
        start = time.perf_counter()
        with torch.autocast(example.device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(example)
        out = out["out"] if isinstance(out, dict) else out
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(torch.float32), step(torch.bfloat16)  # oneDNN builds its kernels on the first call
    fp32_times, bf16_times = [], []
    for _ in range(rounds):
        fp32_times.append(step(torch.float32))
        bf16_times.append(step(torch.bfloat16))
        if not 0.5 < bf16_times[0] / fp32_times[0] < 2.0:
            break
    return statistics.median(fp32_times), statistics.median(bf16_times)
