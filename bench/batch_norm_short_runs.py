"""Batch norm in short runs: validation mean IoU after a few steps, with the running statistics
as trained, recomputed over training batches ("precise BN"), and without batch norm.

    python bench/batch_norm_short_runs.py

A U-Net (8 base channels, depth 2, batch norm) learns four 64x64 images of a bright disc on
dark noise (batch 4: one step per epoch) and is validated on four other such images. Prints one
row per setting; docs/training.md ("Batch norm in short runs") quotes the result. About two
minutes on 2 busy CPU cores.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.cli import main as pixelwise

CONFIG = """\
model:
  name: unet
  options: {{base_channels: 8, depth: 2}}
data:
  dataset: folder
  root: {root}
  crop_size: 64
  batch_size: 4
  val_batch_size: 4
  quick_check: false
  workers: 0  # augmentation drawn in this process: the same numbers on every machine
  options: {{classes: 2}}
optim: {{name: adamw, lr: 0.01}}
train: {{epochs: 8, device: cpu, progress: false, figures: false, out_dir: {root}/run}}
"""
SETTINGS = {
    "8 steps, running statistics (precise_bn=never)": ["train.precise_bn=never"],
    "8 steps, recomputed statistics (default)": [],
    "8 steps, no batch norm": ["model.options.batch_norm=false"],
    "16 steps (batch 2), running statistics": ["train.precise_bn=never", "data.batch_size=2"],
    "16 steps (batch 2), recomputed statistics": ["data.batch_size=2"],
    "40 steps, running statistics": ["train.precise_bn=never", "train.epochs=40"],
    "40 steps, recomputed statistics": ["train.epochs=40"],
}


def write_discs(root: Path, size: int = 64) -> Path:
    """`root/{train,val}/{images,masks}`: four images each of a bright disc on dark noise, the
    disc as class 1; returns the config that trains on them (`root/discs.yaml`)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            cy, cx, radius = *rng.integers(size // 4, 3 * size // 4, 2), rng.integers(8, 16)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2).astype(np.uint8)
            image = rng.normal(60, 20, (size, size, 3)) + mask[..., None] * 120
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    config = root / "discs.yaml"
    config.write_text(CONFIG.format(root=root))
    return config


def validated_mean_iou(config: Path, out: Path, *overrides: str) -> float:
    """Train `config` with `overrides` into `out`, evaluate its last weights on the val split."""
    root = config.parent
    assert pixelwise(["train", str(config), f"train.out_dir={out}", *overrides]) == 0
    assert pixelwise(["evaluate", str(out / "last.safetensors"), "--data", "folder", "--root",
                      str(root), "--option", "classes=2", "--device", "cpu"]) == 0
    return json.loads((out / "eval-val" / "metrics.json").read_text())["mean_iou"]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = write_discs(Path(folder))
        results = {name: validated_mean_iou(config, Path(folder) / f"run{i}", *overrides)
                   for i, (name, overrides) in enumerate(SETTINGS.items())}
    print("\nvalidation mean IoU (4 held-out images)")
    for name, value in results.items():
        print(f"  {name:<50} {100 * value:5.1f} %")


if __name__ == "__main__":
    main()
