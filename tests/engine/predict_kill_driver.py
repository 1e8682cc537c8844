"""``pixelwise predict ARGS`` SIGKILL-ed while writing the files of its N-th image (the first
format's file written into the temporary folder, nothing moved into place yet), in a child
forked from the test process: ``killed_at(N, ARGS)`` returns the child's exit code.

Used by test_predict_job.py to check that a re-run redoes that image and nothing done before.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence

import torch

import pixelwise.outputs as outputs
from pixelwise.cli import main


def _die_at(kill_at: int) -> None:
    """Make the ``kill_at``-th ``write_prediction`` write one format, then SIGKILL itself."""
    real_write = outputs.write_prediction
    calls = {"n": 0}

    def write_then_die(label, out_stem, formats=("png",), **options):
        calls["n"] += 1
        if calls["n"] == kill_at:
            real_write(label, out_stem, tuple(formats)[:1], **options)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(label, out_stem, formats, **options)

    outputs.write_prediction = write_then_die


def _child(kill_at: int, argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    torch.set_num_threads(1)
    _die_at(kill_at)
    os._exit(main(argv))


def killed_at(kill_at: int, argv: Sequence[str], timeout: float = 120) -> int | None:
    """Run ``pixelwise ARGV`` in a forked child dying at image ``kill_at``; its exit code (-9
    when it died there; None if it hung past ``timeout`` seconds, then it is killed)."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(kill_at, list(argv)))
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None
    return child.exitcode
