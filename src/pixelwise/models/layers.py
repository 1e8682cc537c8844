"""Small building blocks shared by the models: bilinear-initialised upsampling, cropping and
mirror indexing."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def bilinear_upsample_weight(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``(channels, channels, k, k)`` that make ``ConvTranspose2d`` upsample bilinearly.

    Each channel is interpolated on its own (the weight is diagonal over channels), as in the
    reference FCN's ``upsample_filt``. With stride ``f`` the kernel size is ``2f`` (centre
    ``f - 0.5``: output ``j`` sits at input ``(j - f + 0.5) / f``) or ``2f - 1`` (centre ``f - 1``:
    output ``j`` sits at input ``(j - f + 1) / f``). FCN §3.3: upsampling is a backwards strided
    convolution initialised to bilinear interpolation, and may then be learned.
    """
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - centre).abs() / factor
    kernel = taps[:, None] * taps[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


def bilinear_upsampler(channels: int, factor: int, kernel_size: int) -> nn.ConvTranspose2d:
    """A learnable ``ConvTranspose2d`` with stride ``factor``, initialised to bilinear upsampling.

    No bias, as in the reference FCN. Maps ``(N, C, h, w)`` to
    ``(N, C, (h - 1) * factor + k, (w - 1) * factor + k)``.
    """
    layer = nn.ConvTranspose2d(channels, channels, kernel_size, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_upsample_weight(channels, kernel_size))
    return layer


def smaller(a: int, b: int) -> int:
    """``min(a, b)`` of two sizes, kept in the graph when the model is traced or exported.

    Under ``torch.jit.trace`` (the legacy ONNX exporter) sizes are 0-dim tensors and Python's
    ``min`` would freeze the trace's choice, wrong at other input sizes; ``torch.minimum``
    records it. Under ``torch.export`` sizes are SymInts, which ``torch.sym_min`` keeps symbolic.
    """
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.minimum(a, b)  # type: ignore[return-value]
    return torch.sym_min(a, b)


def crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """``x[..., top:top + height, left:left + width]``; raises if ``x`` is too small."""
    if x.shape[-2] < top + height or x.shape[-1] < left + width:
        raise ValueError(
            f"feature map must be at least {top + height}x{left + width} to crop, "
            f"got {tuple(x.shape[-2:])}; this is a bug in the model's alignment arithmetic"
        )
    return x[..., top : top + height, left : left + width]


def centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre ``height x width`` window of ``x`` (U-Net's crop-and-copy, Fig. 1)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return crop(x, top, left, height, width)


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices `start..stop-1` mirrored into `[0, length)` (numpy "reflect": edge not repeated).

    Unlike `F.pad(mode="reflect")` this works for pads larger than the image (it reflects again),
    which mirror extension of small images for a valid U-Net needs.
    """
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index < length, index, period - index)
