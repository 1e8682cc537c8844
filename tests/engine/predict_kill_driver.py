"""``pixelwise predict ARGS`` SIGKILL-ed while writing the files of its N-th image (the first
format's file written into the temporary folder, nothing moved into place yet), in a child
forked from the test process: ``killed_at(N, ARGS)`` returns the child's exit code.

Used by test_predict_job.py to check that a re-run redoes that image and nothing done before.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import forked

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


def _run(kill_at: int, argv: list[str]) -> int:
    _die_at(kill_at)
    return main(argv)


def killed_at(kill_at: int, argv: Sequence[str], timeout: float = 120) -> int | None:
    """Run ``pixelwise ARGV`` in a forked child dying at image ``kill_at``; its exit code (-9
    when it died there; None if it hung past ``timeout`` seconds, then it is killed)."""
    return forked.wait(forked.start(_run, kill_at, list(argv)), timeout)
