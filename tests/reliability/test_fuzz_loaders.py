"""Dataset loaders fed random or corrupted bytes (issue 7): every outcome is a valid sample or
the library's own error type (`PixelwiseError`), never a stray exception from a decoder.

Each example writes one image/mask pair into a fresh folder, damages one of the two files
(random bytes, a truncated valid file, or flipped bytes), then opens it, runs training's quick
check and reads the sample.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.data import FolderDataset
from pixelwise.data.checks import quick_check
from pixelwise.errors import PixelwiseError

CLASSES = 3
SUFFIXES = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "bmp": ".bmp"}


def encode(kind: str, array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    if kind == "tiff":
        tifffile.imwrite(buffer, array)
    else:
        Image.fromarray(array).save(buffer, format=kind.upper())
    return buffer.getvalue()


def valid_image(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return encode(kind, array if kind != "tiff" else array.astype(np.uint16) * 200)


def valid_mask(kind: str) -> bytes:
    return encode(kind, np.random.default_rng(1).integers(0, CLASSES, (16, 16), dtype=np.uint8))


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """`valid` truncated, with flipped bytes, or replaced by random bytes."""
    how = draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if how == "random":
        return draw(st.binary(min_size=0, max_size=300))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def read_pair(image: bytes, image_kind: str, mask: bytes, mask_kind: str) -> None:
    """Open and read the pair; check a sample that comes back is valid."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        (root / "images" / f"a{SUFFIXES[image_kind]}").write_bytes(image)
        (root / "masks" / f"a{SUFFIXES[mask_kind]}").write_bytes(mask)
        try:
            data = FolderDataset(root / "images", root / "masks", CLASSES)
            quick_check(data)  # headers of every pair, then the first pairs whole
            image_t, mask_t = data[0]
        except PixelwiseError:
            return
    assert image_t.dtype == torch.float32 and image_t.dim() == 3
    assert mask_t.dtype == torch.int64 and mask_t.shape == image_t.shape[1:]
    values = set(mask_t.unique().tolist())
    assert values <= set(range(CLASSES)) | {data.info.ignore_index}


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data(), st.sampled_from(["png", "tiff", "jpeg", "bmp"]))
def test_damaged_image_gives_a_sample_or_our_error(data, kind):
    read_pair(data.draw(damaged(valid_image(kind))), kind, valid_mask("png"), "png")


@FUZZ
@given(st.data(), st.sampled_from(["png", "tiff", "bmp"]))
def test_damaged_mask_gives_a_sample_or_our_error(data, kind):
    read_pair(valid_image("png"), "png", data.draw(damaged(valid_mask(kind))), kind)
