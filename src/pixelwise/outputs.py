"""Prediction files people use downstream: palette PNGs and colour overlays.

A label map is an integer array `(H, W)` of class ids. A palette is a sequence of `(r, g, b)`
tuples, one per class id, as in `DatasetInfo.palette`. The palette PNG stores the class ids
themselves as pixel values (PNG "P" mode), so `numpy.asarray(PIL.Image.open(path))` gives the
label map back exactly while image viewers show the colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Palette = Sequence[tuple[int, int, int]]


def _palette_array(palette: Palette) -> np.ndarray:
    """`(K, 3)` uint8 array of a palette, checked."""
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ValueError(
            f"palette must be a non-empty sequence of (r, g, b) tuples, got shape {array.shape}; "
            "try pixelwise.data.palette.default_palette(num_classes)"
        )
    if array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"palette values must lie in 0..255, got {array.min()}..{array.max()}; "
            "try 8-bit colours"
        )
    return array.astype(np.uint8)


def _check_label(label: np.ndarray, num_colours: int) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            f"label must be an integer (H, W) array, got {label.dtype} {label.shape}; "
            "try model(x).argmax(1)[0].numpy()"
        )
    if label.size and (label.min() < 0 or label.max() >= num_colours):
        raise ValueError(
            f"label values must lie in 0..{num_colours - 1} (one palette colour each), got "
            f"{label.min()}..{label.max()}; try a palette with {int(label.max()) + 1} colours"
        )
    return label


def colorize(label: np.ndarray, palette: Palette) -> np.ndarray:
    """Colour image `(H, W, 3)` uint8 of an integer label map `(H, W)`: pixel = palette[class]."""
    colours = _palette_array(palette)
    return colours[_check_label(label, len(colours))]


def color_overlay(
    image: np.ndarray, label: np.ndarray, palette: Palette, alpha: float = 0.5
) -> np.ndarray:
    """Blend the class colours over an image: `round((1 - alpha) * image + alpha * colour)`.

    `image` is `(H, W, 3)` uint8 (or `(H, W)` grey, repeated to RGB); `label` is `(H, W)`.
    Returns `(H, W, 3)` uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}; try 0.5")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}; "
            "try converting it to 8-bit RGB first"
        )
    colours = colorize(label, palette)
    if colours.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"label must have the image's size {image.shape[:2]}, got {colours.shape[:2]}; "
            "try predicting on the same image"
        )
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_label_png(label: np.ndarray, path: str | Path, palette: Palette) -> Path:
    """Write a label map `(H, W)` as a palette ("P" mode) PNG whose pixel values are class ids.

    PNG palettes hold at most 256 colours, so class ids must lie in 0..255 (use `.npy` or GeoTIFF
    outputs for more classes). Returns the path written.
    """
    colours = _palette_array(palette)[:256]
    label = _check_label(label, len(colours))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(label.astype(np.uint8))
    png.putpalette(colours.reshape(-1).tolist())
    png.save(path)
    return path
