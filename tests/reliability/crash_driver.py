"""Run `pixelwise train` in this process, optionally SIGKILL-ing itself in the middle of the
N-th write of one checkpoint file (half the bytes in the temporary file, nothing renamed yet).

    python crash_driver.py [--kill-at last.state.pt:2] -- <pixelwise train arguments>

Used by test_crash_safety.py, which also kills it from outside at random moments. One thread,
so that the floating-point sums, and hence the weights, are the same in every run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

import torch

import pixelwise.checkpoint
import pixelwise.engine.checkpoint
from pixelwise.cli import main

# The weights go through the format module's atomic_write_bytes, the training state through the
# engine's reference to the same function: both are replaced.
WRITERS = (pixelwise.checkpoint, pixelwise.engine.checkpoint)


def kill_during_write(name: str, number: int) -> None:
    """Replace `atomic_write_bytes` so that its `number`-th write of a file called `name` dies
    half-way."""
    real = pixelwise.checkpoint.atomic_write_bytes
    calls = {"n": 0}

    def write(path: Path, data: bytes) -> None:
        calls["n"] += path.name == name
        if path.name != name or calls["n"] < number:
            return real(path, data)
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    for module in WRITERS:
        module.atomic_write_bytes = write


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", default="", metavar="NAME:N")
    parser.add_argument("train_args", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.kill_at:
        name, number = args.kill_at.split(":")
        kill_during_write(name, int(number))
    sys.exit(main(["train", *args.train_args]))
