"""Helpers that write tiny dataset files, and the location of the shared real data."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> Path:
    """Save `array` (uint8 (H, W) or (H, W, 3), or uint16 (H, W)) as PNG; "P" mode with palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)  # turns the "L" image into "P" mode with the same indices
    image.save(path)
    return path


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def shared_data() -> Path:
    override = os.environ.get("PIXELWISE_SHARED_DATA")
    return (
        Path(override)
        if override
        else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )


def require_shared(name: str) -> Path:
    folder = shared_data() / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent (set PIXELWISE_SHARED_DATA to its folder)")
    return folder
