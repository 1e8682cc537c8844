"""Tiny image/mask files and a tiny training config for the reliability tests (a module named
apart from `conftest`, so that importing it never picks up another folder's conftest)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.cli import main

SIZE = 32
# A one-epoch tiny U-Net on synthetic shapes (5 classes); `out` is the run folder.
SYNTHETIC_CONFIG = """\
model:
  name: unet
  options: {{base_channels: 4, depth: 2}}
data:
  dataset: synthetic
  batch_size: 4
  val_batch_size: 8
  options: {{n: 8, size: 32}}
  workers: 0  # loading in-process: a loader worker's fork took a quarter of each tiny run
train:
  epochs: 1
  device: cpu
  amp: false  # compared runs must agree: amp=true picks bf16 by timing, which load can flip
  progress: false
  figures: false  # no training_curves.png (a fifth of a tiny run; tests/engine/test_run_figures)
  out_dir: {out}
"""


def train_synthetic_run(out: Path) -> Path:
    """Train `SYNTHETIC_CONFIG` into the run folder `out` (a second or two); returns `out`."""
    config = out.parent / "synthetic.yaml"
    config.write_text(SYNTHETIC_CONFIG.format(out=out))
    assert main(["train", str(config)]) == 0
    return out


def write_pair(folder: Path, name: str, seed: int, size: tuple[int, int] = (SIZE, SIZE),
               grey: bool = False) -> None:
    """`folder/images/name.png` (RGB or grey noise) and `folder/masks/name.png` (classes 0, 1)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    shape = size if grey else (*size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        folder / "images" / f"{name}.png")
    Image.fromarray(rng.integers(0, 2, size, dtype=np.uint8)).save(folder / "masks" / f"{name}.png")


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height` 8-bit grey pixels, with one tiny zlib stream
    of zero rows: what a decompression bomb looks like before anything is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # 16 rows; the rest would follow
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
