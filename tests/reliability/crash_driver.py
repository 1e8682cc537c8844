"""Run `pixelwise train` in a child process, optionally SIGKILL-ing itself in the middle of the
N-th write of one checkpoint file (half the bytes in the temporary file, nothing renamed yet).

    python crash_driver.py [--kill-at last.state.pt:2] -- <pixelwise train arguments>

test_crash_safety.py forks `start` from its own process (torch already imported: a run costs
training, not four seconds of imports) and also kills it from outside at random moments. One
thread, so that the floating-point sums, and hence the weights, are the same in every run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path

import forked
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


def run(kill_at: str, train_args: list[str]) -> int:
    """``pixelwise train TRAIN_ARGS`` on one thread, dying at ``kill_at`` (``NAME:N``) if given."""
    torch.set_num_threads(1)
    if kill_at:
        name, number = kill_at.split(":")
        kill_during_write(name, int(number))
    return main(["train", *train_args])


def start(kill_at: str, train_args: list[str], log: Path) -> multiprocessing.Process:
    """`run` in a child forked from this process, its output to ``log`` (``exitcode`` -9 when
    SIGKILLed)."""
    return forked.start(run, kill_at, train_args, log=log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", default="", metavar="NAME:N")
    parser.add_argument("train_args", nargs="+")
    args = parser.parse_args()
    sys.exit(run(args.kill_at, args.train_args))
