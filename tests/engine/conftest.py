"""A tiny synthetic training setup shared by the engine tests (about a second per run).

8 training images in batches of 4: two optimiser steps per epoch; 8 validation images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelwise.checkpoint import read_weights

TINY_CONFIG = """\
model:
  name: unet
  options: {base_channels: 4, depth: 2}
data:
  dataset: synthetic
  batch_size: 4
  val_batch_size: 8
  options: {n: 8, size: 32}
optim:
  name: sgd
  lr: 0.05
  schedule: poly
train:
  epochs: 2
  progress: false
  device: cpu  # exact-equality tests are specified on CPU (CUDA kernels may differ run to run)
"""


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def _weights_equal(a: Path, b: Path) -> bool:
    first, second = read_weights(a)[0], read_weights(b)[0]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory) -> Path:
    """The tiny config trained for its 2 epochs without interruption; returns the run folder."""
    from pixelwise.cli import main

    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    assert main(["train", str(folder / "tiny.yaml"), f"train.out_dir={folder / 'run'}"]) == 0
    return folder / "run"


@pytest.fixture
def weights_equal():
    """Whether two .safetensors files hold exactly the same tensors."""
    return _weights_equal
