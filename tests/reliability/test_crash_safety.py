"""SIGKILL a training run at random moments and during checkpoint writes, resume until done:
no checkpoint is ever corrupt, and the final weights equal an uninterrupted run's (issue 7).

Every run is a child process forked by `crash_driver.start` (one CPU thread, deterministic
kernels, same seed). Checkpoint writes per run: config.yaml, run.json, then per epoch last.safetensors,
last.state.pt and, when validation improved, best.safetensors.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import crash_driver
import forked
import pytest
import torch
from sample_files import SYNTHETIC_CONFIG

from pixelwise.checkpoint import read_weights
from pixelwise.engine.checkpoint import newest_whole, read_state
from pixelwise.errors import CheckpointError

EPOCHS = 6


def start(config: Path, run: Path, kill_at: str = ""):
    resume = ["--resume", str(run)] if _whole_epoch(run) else []
    return crash_driver.start(kill_at, [str(config), f"train.out_dir={run}", *resume],
                              log=run.with_name(f"{run.name}.log"))


def finish(process, timeout: float = 120) -> int:
    """The exit code of a started run (-9: SIGKILL); fails the test on a hung run."""
    code = forked.wait(process, timeout)
    assert code is not None, "a training run hung"
    return code


def log(run: Path) -> str:
    return run.with_name(f"{run.name}.log").read_text()[-3000:]


def _whole_epoch(run: Path) -> int:
    """The epoch of the newest whole checkpoint pair in `run`, 0 when there is none."""
    try:
        return newest_whole(run).meta.epoch
    except CheckpointError:  # no folder or no whole pair yet
        return 0


def assert_no_corrupt_checkpoint(run: Path) -> None:
    """Every checkpoint file present loads whole (temporary `.tmp` files are not checkpoints)."""
    for path in run.glob("*.safetensors"):
        read_weights(path)
    for path in run.glob("*.state.pt"):
        read_state(path)


@pytest.mark.heavy
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SYNTHETIC_CONFIG.format(out=tmp_path / "unused")
                      .replace("epochs: 1", f"epochs: {EPOCHS}\n  deterministic: true")
                      .replace("workers: 0", "workers: 1"))  # a loader worker, seeded on resume
    started = time.perf_counter()
    whole = start(config, tmp_path / "whole")
    assert finish(whole) == 0, log(tmp_path / "whole")
    duration = time.perf_counter() - started

    run, rng = tmp_path / "killed", random.Random(7)
    # From inside, in the middle of writing: the second state file of a fresh run (leaving new
    # weights beside the old state: it resumes from `previous`), the first state file of that
    # resumed run (it must not rotate the mismatched `last` pair over the good `previous`), the
    # second weights file of the next; then twice from outside at random moments, early enough
    # (a tenth to a third of a whole run) to land in the half of the run that is left by then.
    kills = ["last.state.pt:2", "last.state.pt:1", "last.safetensors:2",
             rng.uniform(0.1, 0.35) * duration, rng.uniform(0.1, 0.35) * duration]
    landed = []
    for kill in kills:
        before = _whole_epoch(run)
        if isinstance(kill, float):
            process = start(config, run)
            time.sleep(kill)
            process.kill()
            landed.append(finish(process) == -signal.SIGKILL)
        else:
            process = start(config, run, kill_at=kill)
            assert finish(process) == -signal.SIGKILL, log(run)
        assert_no_corrupt_checkpoint(run)
        assert _whole_epoch(run) >= before, f"kill {kill} lost saved epochs"
    assert any(landed), "no random kill landed before its run finished"

    for _ in range(3):  # resume until done
        process = start(config, run)
        assert finish(process) == 0, log(run)
        if read_state(run / "last.state.pt")["epoch"] == EPOCHS:
            break
    assert_no_corrupt_checkpoint(run)
    resumed, meta = read_weights(run / "last.safetensors")
    expected, _ = read_weights(tmp_path / "whole" / "last.safetensors")
    assert meta.epoch == EPOCHS and resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)
