"""Helpers of the serve tests: a tiny U-Net checkpoint (4 base channels, depth 2, 3 classes)
written with pixelwise's own checkpoint writer, and sample images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise.checkpoint import ModelMeta, save_weights

CLASSES = ["background", "cell", "edge"]
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75)]


def write_tiny_checkpoint(path: Path, seed: int = 0, **options) -> Path:
    """A randomly initialised 3-class U-Net saved as a pixelwise checkpoint."""
    from pixelwise.models import build

    options = {"base_channels": 4, "depth": 2, **options}
    torch.manual_seed(seed)
    model = build("unet", num_classes=3, **options)
    meta = ModelMeta(name="unet", num_classes=3, options=options, classes=CLASSES,
                     palette=PALETTE, ignore_index=255, in_channels=3, mean=[0.5] * 3,
                     std=[0.25] * 3, metrics={"mean_iou": 0.5, "pixel_accuracy": float("nan")})
    save_weights(path, model, meta)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def sample_image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """A smooth RGB image with structure, so the tiny model predicts more than one class."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(rows / 5 + seed), np.cos(cols / 7), np.sin((rows + cols) / 9)], -1)
    return np.clip(127 + 110 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
