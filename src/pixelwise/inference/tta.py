"""Test-time augmentation (TTA): flips, rotations and multi-scale, averaged as softmax
probabilities.

Each view (the image itself, each flip or transpose, each scale, and their combinations) is run
through the model, mapped back to the input's geometry (flipped and transposed back; logits
resized back to the unscaled
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

from pixelwise.choices import TTA_VIEWS
from pixelwise.errors import ConfigError

FLIP_DIMS = {"h": (-1,), "v": (-2,), "hv": (-2, -1)}
# A view: a flip ("h" left-right, "v" up-down, "hv" both), then for names ending in "t" a
# transpose (height and width swapped). With the image itself the seven of DIHEDRAL are the
# square's 8 symmetries: 4 rotations (hv is the half turn, ht and vt the quarter turns) and 4
# mirrors (h, v, and the two diagonals t and hvt).
VIEWS: dict[str, tuple[tuple[int, ...], bool]] = {
    **{name: (dims, False) for name, dims in FLIP_DIMS.items()},
    "t": ((), True), **{f"{name}t": (dims, True) for name, dims in FLIP_DIMS.items()},
}
DIHEDRAL = ("h", "v", "hv", "t", "ht", "vt", "hvt")
VIEW_SETS = dict(zip(TTA_VIEWS, (("h",), DIHEDRAL), strict=True))  # what `tta` names mean


def tta_views(tta: bool | str) -> tuple[str, ...]:
    """The extra views of a ``tta`` setting: False none, True or "h" the mirror image, "d4" the
    8 rotations and mirrors (for images with no up or left: microscopy, EM, aerial)."""
    if tta is False or tta is None:
        return ()
    if tta is True:
        return VIEW_SETS["h"]
    if tta not in VIEW_SETS:
        raise ConfigError(f"tta must be one of {[False, True, *VIEW_SETS]}, got {tta!r}; try 'h'")
    return VIEW_SETS[tta]


def _check(flips: Sequence[str], scales: Sequence[float]) -> None:
    unknown = [f for f in flips if f not in VIEWS]
    if unknown:
        raise ConfigError(f"flips must be among {sorted(VIEWS)}, got {unknown}; try ('h',)")
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"scales must be positive, got {list(scales)}; try (0.75, 1.0, 1.25)")


def tta_logits(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    flips: Sequence[str] = ("h",),
    scales: Sequence[float] = (1.0,),
) -> Tensor:
    """Log of the softmax probabilities averaged over flipped, transposed and rescaled views of `x`.

    Args:
        model: maps float `(N, C, H, W)` to logits `(N, K, H', W')`.
        x: float `(N, C, H, W)` input batch.
        flips: extra views, among "h" (left-right), "v" (up-down), "hv" (both), and the same
            followed by a transpose: "t", "ht", "vt", "hvt" (`DIHEDRAL`: all seven, for the 8
            rotations and mirrors); the image itself is always included.
        scales: input scale factors; each view is also run at each scale (1.0 = as is), the
            input resized bilinearly (antialiased when shrunk) and the logits resized back.
            A single scale is inference at that size: ``(0.5,)`` runs a model trained on
            half-size images (CamVid ``scale=0.5``) on full-size frames, at a quarter of the
            pixels. Scales other than 1.0 need a model whose output has the input's size
            ("same" padding).

    Returns:
        `(N, K, H', W')` float logits, `log(mean_views softmax(view))` (clamped at 1e-12 before
        the log so that no class gets -inf); for a single view (one scale, no flips) that
        view's logits themselves, resized: the same softmax, without computing it (7 ms per
        11-class 360x480 frame on 2 CPU cores, docs/benchmarks.md).
    """
    _check(flips, scales)
    if not flips and len(scales) == 1:
        size = _scaled_size(x, scales[0])
        return _restored(model(_resized(x, size)), x, size)
    views = [((), False), *(VIEWS[f] for f in flips)]
    total: Tensor | None = None
    for scale in scales:
        size = _scaled_size(x, scale)
        scaled = _resized(x, size)  # once per scale, for all its views
        for dims, transpose in views:
            logits = _undo(model(_view(scaled, dims, transpose)), dims, transpose)
            probabilities = torch.softmax(_restored(logits, x, size), dim=1)
            total = probabilities if total is None else total + probabilities
    return torch.log((total / (len(scales) * len(views))).clamp_min(1e-12))


def _scaled_size(x: Tensor, scale: float) -> tuple[int, int]:
    height, width = x.shape[-2:]
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resized(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`x` at `size`: bilinear, antialiased when shrunk (as a dataset's `scale` option reads
    images, `rescale_pair`), so a model trained at that scale sees the same pixels."""
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < x.shape[-2] or size[1] < x.shape[-1])


def _restored(logits: Tensor, x: Tensor, size: tuple[int, int]) -> Tensor:
    """Float logits of the view of `x` run at `size`, resized back to `x`'s size (bilinear)."""
    if size == tuple(x.shape[-2:]):
        return logits.float()
    if logits.shape[-2:] != size:
        raise ConfigError(
            f"scales other than 1.0 need a model whose output has its input's size, got "
            f"{tuple(logits.shape[-2:])} for {size}; try scales=(1.0,) for a valid U-Net"
        )
    return F.interpolate(logits.float(), size=tuple(x.shape[-2:]), mode="bilinear",
                         align_corners=False)


def _view(x: Tensor, dims: tuple[int, ...], transpose: bool) -> Tensor:
    x = x.flip(dims) if dims else x
    return x.transpose(-2, -1) if transpose else x


def _undo(logits: Tensor, dims: tuple[int, ...], transpose: bool) -> Tensor:
    logits = logits.transpose(-2, -1) if transpose else logits
    return logits.flip(dims) if dims else logits


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
