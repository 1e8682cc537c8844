"""Statistics of a dataset's labels: SegNet's median-frequency class weights.

The pixel counts come from a scan of the masks (`pixelwise.data.checks.check_dataset`); the
weights feed `pixelwise.losses.build_loss(class_weights=...)` when a config says
`data.class_weights: auto`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pixelwise.errors import ConfigError


def median_frequency_weights(
    counts: Sequence[int] | np.ndarray, image_pixels: Sequence[int] | np.ndarray | None = None
) -> list[float]:
    """Median-frequency class weights `median(f) / f_c` (Eigen & Fergus 2015, used by SegNet).

    `counts[c]`: pixels of class c. `f_c = counts[c] / image_pixels[c]`, where
    `image_pixels[c]` is the number of pixels of the images that contain class c (SegNet's
    definition); without it, the total of `counts`. Classes with no pixel get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() == 0:
        raise ConfigError(
            f"counts must be non-negative pixel counts per class, not all 0, got {counts.tolist()}; "
            "try pixelwise.data.checks.check_dataset(dataset).class_counts"
        )
    denominator = counts.sum() if image_pixels is None else np.asarray(image_pixels, np.float64)
    present = counts > 0
    frequency = np.zeros_like(counts)
    frequency[present] = counts[present] / np.broadcast_to(denominator, counts.shape)[present]
    weights = np.zeros_like(counts)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights.tolist()
