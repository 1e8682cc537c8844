"""Test-time augmentation (TTA): flips and multi-scale, averaged as softmax probabilities.

Each view (the image itself, each flip, each scale, and their combinations) is run through the
model, mapped back to the input's geometry (flipped back; logits resized back to the unscaled
output size, bilinear), turned into softmax probabilities and averaged. Probabilities rather than
logits are averaged because logits of different views are not on a common scale (a confident view
would dominate a logit average), as in FCN-style multi-scale testing and nnU-Net's mirroring.

`tta_logits` returns the *log* of the averaged probabilities: valid logits whose softmax is
exactly that average, so the result drops in wherever model logits are expected (argmax for
`predict` and `evaluate`, softmax blending in `predict_tiled`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.errors import ConfigError

FLIP_DIMS = {"h": (-1,), "v": (-2,), "hv": (-2, -1)}


def _check(flips: Sequence[str], scales: Sequence[float]) -> None:
    unknown = [f for f in flips if f not in FLIP_DIMS]
    if unknown:
        raise ConfigError(f"flips must be among {sorted(FLIP_DIMS)}, got {unknown}; try ('h',)")
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"scales must be positive, got {list(scales)}; try (0.75, 1.0, 1.25)")


def tta_logits(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    flips: Sequence[str] = ("h",),
    scales: Sequence[float] = (1.0,),
) -> Tensor:
    """Log of the softmax probabilities averaged over flipped and rescaled views of `x`.

    Args:
        model: maps float `(N, C, H, W)` to logits `(N, K, H', W')`.
        x: float `(N, C, H, W)` input batch.
        flips: extra flipped views, among "h" (left-right), "v" (up-down), "hv" (both); the
            unflipped view is always included.
        scales: input scale factors; each view is also run at each scale (1.0 = as is). Scales
            other than 1.0 need a model whose output has the input's size ("same" padding).

    Returns:
        `(N, K, H', W')` float logits, `log(mean_views softmax(view))` (clamped at 1e-12 before
        the log so that no class gets -inf).
    """
    _check(flips, scales)
    height, width = x.shape[-2:]
    total: Tensor | None = None
    views = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = x if size == (height, width) else F.interpolate(
            x, size=size, mode="bilinear", align_corners=False)
        for dims in [(), *(FLIP_DIMS[f] for f in flips)]:
            logits = model(scaled.flip(dims) if dims else scaled)
            logits = logits.flip(dims) if dims else logits
            if logits.shape[-2:] != scaled.shape[-2:] and size != (height, width):
                raise ConfigError(
                    f"scales other than 1.0 need a model whose output has its input's size, got "
                    f"{tuple(logits.shape[-2:])} for {size}; try scales=(1.0,) for a valid U-Net"
                )
            if size != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear",
                                       align_corners=False)
            probabilities = torch.softmax(logits.float(), dim=1)
            total = probabilities if total is None else total + probabilities
            views += 1
    return torch.log((total / views).clamp_min(1e-12))


class TestTimeAugmented(nn.Module):
    """A model wrapped so that calling it returns `tta_logits(model, x, flips, scales)`.

    Pass it wherever a model is expected (`predict_tiled`, `Segmenter`, `evaluate`).
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, model: nn.Module, flips: Sequence[str] = ("h",),
                 scales: Sequence[float] = (1.0,)) -> None:
        super().__init__()
        _check(flips, scales)
        self.model, self.flips, self.scales = model, tuple(flips), tuple(scales)

    def forward(self, x: Tensor) -> Tensor:
        return tta_logits(self.model, x, self.flips, self.scales)


def with_tta(model: nn.Module, flips: Sequence[str] = (),
             scales: Sequence[float] = (1.0,)) -> nn.Module:
    """`model` wrapped in `TestTimeAugmented`, or `model` itself when there is nothing to
    augment (no flips, scale 1.0 only)."""
    if not flips and tuple(scales) == (1.0,):
        return model
    return TestTimeAugmented(model, flips=flips, scales=scales)
