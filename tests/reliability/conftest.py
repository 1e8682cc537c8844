"""Tiny datasets on disk and a CLI runner shared by the reliability tests.

`folder_run` writes the `folder` layout (`root/{train,val}/{images,masks}`) with 32x32 RGB
images and two-class index masks; a test then damages one file and runs the CLI on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sample_files import train_synthetic_run, write_pair

from pixelwise.cli import main

# A tiny U-Net on the folder layout: enough to reach the first training step in about a second.
FOLDER_CONFIG = """\
model:
  name: unet
  options: {{base_channels: 4, depth: 2}}
data:
  dataset: folder
  root: {root}
  batch_size: 2
  crop_size: 32
  options: {{classes: 2}}
optim:
  lr: 0.01
train:
  epochs: 1
  device: cpu
  progress: false
  out_dir: {out}
"""


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A finished one-epoch run on synthetic shapes (5 classes); returns its run folder."""
    return train_synthetic_run(tmp_path_factory.mktemp("synthetic") / "run")


@dataclass
class FolderRun:
    """A folder dataset with four train and two val pairs, and a config that trains on it."""

    root: Path
    config: Path
    out: Path

    @property
    def train(self) -> Path:
        return self.root / "train"


@pytest.fixture
def folder_run(tmp_path) -> FolderRun:
    root = tmp_path / "data"
    for i in range(4):
        write_pair(root / "train", f"img{i}", seed=i)
    for i in range(2):
        write_pair(root / "val", f"val{i}", seed=10 + i)
    out = tmp_path / "run"
    config = tmp_path / "folder.yaml"
    config.write_text(FOLDER_CONFIG.format(root=root, out=out))
    return FolderRun(root, config, out)


@dataclass
class CliResult:
    code: int
    err: str
    out: str


@pytest.fixture
def run_cli(capsys):
    """Run `pixelwise.cli.main(argv)`; return its exit code and captured stdout/stderr."""

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.err.strip(), captured.out.strip())

    return run


@pytest.fixture
def no_training_step(monkeypatch):
    """Fail the test if training reaches its first epoch: the problem must be found at start."""
    from pixelwise.engine import train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the input is bad")

    monkeypatch.setattr(train_module, "train_one_epoch", refuse)
