"""``pixelwise predict ARGS`` SIGKILL-ed while writing the files of its N-th image (the first
format's file written into the temporary folder, nothing moved into place yet):

    python -m predict_kill_driver N predict CHECKPOINT INPUT... --out DIR

Used by test_predict_job.py to check that a re-run redoes that image and nothing done before.
"""

from __future__ import annotations

import os
import signal
import sys

import pixelwise.outputs as outputs
from pixelwise.cli import main

KILL_AT = int(sys.argv[1])
real_write = outputs.write_prediction
calls = {"n": 0}


def write_then_die(label, out_stem, formats=("png",), **options):
    calls["n"] += 1
    if calls["n"] == KILL_AT:
        real_write(label, out_stem, tuple(formats)[:1], **options)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(label, out_stem, formats, **options)


outputs.write_prediction = write_then_die
sys.exit(main(sys.argv[2:]))
