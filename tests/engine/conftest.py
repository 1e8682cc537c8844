"""A tiny synthetic training setup shared by the engine tests (about a second per run).

8 training images in batches of 4: two optimiser steps per epoch; 8 validation images, loaded in
the test process (loader worker processes, and their seeding under exact resume, are exercised
by tests/reliability/test_crash_safety.py, whose runs use one)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import forked
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
  workers: 0  # loading in-process: forking a loader worker took a quarter of each tiny run
optim:
  name: sgd
  lr: 0.05
  schedule: poly
train:
  epochs: 2
  progress: false
  device: cpu  # exact-equality tests are specified on CPU (CUDA kernels may differ run to run)
  amp: false  # compared runs must agree: amp=true picks bf16 by timing, which load can flip
  figures: false  # drawing the curves was a fifth of a tiny run; test_run_figures turns it on
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


def _torchrun_train(config: Path, *overrides: str) -> subprocess.CompletedProcess:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--standalone", "-m", "pixelwise", "train", str(config), *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(before: Callable[[], None] | None, argv: list[str]) -> int:
    from pixelwise.cli import main

    if before is not None:
        before()
    return main(argv)


def fork_ranks(*args: str | Path, world: int = 2, before: Callable[[], None] | None = None,
               timeout: float = 90) -> subprocess.CompletedProcess:
    """``pixelwise ARGS`` as ``torchrun --standalone --nproc-per-node 2`` starts it, without
    torchrun's agent and the workers' four seconds of imports each: ``world`` children forked from
    this (warm) process, each with the RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
    torchrun sets, one thread each. ``before`` runs in each child first (to plant a fault).
    Returns the ranks' exit code (the first non-zero) and their output, rank 0's first."""
    folder = Path(tempfile.mkdtemp(prefix="ranks-"))
    argv, port = [str(arg) for arg in args], _free_port()
    children = [forked.start(_rank, before, argv, log=folder / f"rank{rank}.log", env={
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        for rank in range(world)]
    deadline = time.monotonic() + timeout
    codes = [forked.wait(child, max(0.0, deadline - time.monotonic())) for child in children]
    assert None not in codes, f"ranks still running after {timeout} s: {argv}"
    output = "".join((folder / f"rank{rank}.log").read_text() for rank in range(world))
    shutil.rmtree(folder)
    return subprocess.CompletedProcess(argv, next((c for c in codes if c), 0), output, output)


@pytest.fixture
def two_ranks():
    """Run ``pixelwise ARGS`` as two torchrun ranks (see fork_ranks); returns the finished
    "process" (returncode, stdout and stderr: both the ranks' joined output)."""
    return fork_ranks


@pytest.fixture
def torchrun_train():
    """Run ``pixelwise train CONFIG OVERRIDES...`` under torchrun with two CPU (gloo)
    processes; returns the finished subprocess."""
    return _torchrun_train


@pytest.fixture
def kill_in_epoch(monkeypatch):
    """``kill_in_epoch(epoch, train)`` calls ``train()`` with the loop interrupted, as a kill
    would be, when epoch ``epoch`` (0-based) starts: KeyboardInterrupt, expected and caught.
    Later calls train normally again."""
    from pixelwise.engine import train as train_module

    real_epoch = train_module.train_one_epoch

    def kill(epoch: int, train: Callable[[], object]) -> None:
        def killed(run):
            if run.progress.epoch == epoch:
                raise KeyboardInterrupt
            return real_epoch(run)

        monkeypatch.setattr(train_module, "train_one_epoch", killed)
        try:
            with pytest.raises(KeyboardInterrupt):
                train()
        finally:
            monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)

    return kill


@pytest.fixture
def weights_equal():
    """Whether two .safetensors files hold exactly the same tensors."""
    return _weights_equal


# ---- prediction jobs (test_predict_job.py, test_torchrun_jobs.py) ------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny U-Net for the synthetic shapes' five classes: its predictions vary from
    pixel to pixel, which is all that equality and file-handling tests need."""
    from pixelwise.checkpoint import ModelMeta, save_weights
    from pixelwise.data.synthetic import SyntheticShapes
    from pixelwise.models import build

    torch.manual_seed(0)
    options = {"in_channels": 3, "base_channels": 4, "depth": 2}
    info = SyntheticShapes(n=1, size=32).info
    meta = ModelMeta(name="unet", num_classes=5, options=options, classes=list(info.classes),
                     palette=[tuple(c) for c in info.palette], ignore_index=info.ignore_index,
                     in_channels=3, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    save_weights(path, build("unet", 5, **options), meta)
    return path


def write_images(folder: Path, count: int = 13) -> list[Path]:
    """``count`` random RGB PNGs img00.png, img01.png, ..., 32x32 and 40x48 in turn."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i:02d}.png"
        size = (32, 32) if i % 2 == 0 else (40, 48)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of 13 images (see write_images)."""
    write_images(tmp_path / "images")
    return tmp_path / "images"
