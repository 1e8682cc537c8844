"""A tiny synthetic training setup shared by the engine tests (about a second per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelwise.engine.checkpoint import read_weights

TINY_CONFIG = """\
model:
  name: unet
  options: {base_channels: 4, depth: 2}
data:
  dataset: synthetic
  batch_size: 4
  val_batch_size: 8
  options: {n: 12, size: 32}
optim:
  name: sgd
  lr: 0.05
  schedule: poly
train:
  epochs: 3
  progress: false
"""


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def _weights_equal(a: Path, b: Path) -> bool:
    first, second = read_weights(a)[0], read_weights(b)[0]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture
def weights_equal():
    """Whether two .safetensors files hold exactly the same tensors."""
    return _weights_equal
