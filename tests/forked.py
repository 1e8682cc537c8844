"""Run a function in a child forked from the (warm) test process, and wait for it.

A fork costs milliseconds where a new Python process costs four seconds of torch and torchvision
imports. The crash-safety runs, the killed prediction job and the two-rank jobs use this one
helper (`start`, `wait`).

`wait` polls the child's exit status (``waitpid``) instead of `Process.join(timeout)`, which
waits on a pipe that the child's own children inherit: a DataLoader worker of a SIGKILLed (or
``os._exit``-ed) run holds it open until it notices that its parent is gone, up to five seconds
later (``torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


def start(target: Callable[..., int], *args: Any, log: Path | None = None,
          env: Mapping[str, str] | None = None) -> multiprocessing.Process:
    """``target(*args)`` in a forked child with one CPU thread, ``env`` added to its environment
    and its output (stdout, stderr, logging) to ``log`` (discarded when None). The child exits
    with ``target``'s return value, 1 with the traceback in ``log`` on an exception, -9 when
    SIGKILLed."""
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(target, args, None if log is None else str(log), dict(env or {})))
    process.start()
    return process


def wait(process: multiprocessing.Process, timeout: float) -> int | None:
    """The exit code of a started child; None when it still runs after ``timeout`` seconds
    (it is then killed)."""
    deadline = time.monotonic() + timeout
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.exitcode is None:
        process.kill()
        process.join()
        return None
    return process.exitcode


def _child(target: Callable[..., int], args: tuple, log: str | None,
           env: dict[str, str]) -> None:
    """A forked child's whole life; it never returns into the test process's code."""
    os.environ.update(env)
    code = 1
    with open(log or os.devnull, "w", buffering=1) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
        logging.getLogger().handlers.clear()  # the test's handlers write to the test's streams
        try:
            torch.set_num_threads(1)
            code = target(*args)
        except BaseException:  # noqa: BLE001 - the child reports everything, then exits
            traceback.print_exc()
        stream.flush()
    os._exit(code)
