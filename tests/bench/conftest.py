"""Fixtures shared by the tests of bench/'s scripts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def side_by_side():
    """bench/_side_by_side.py as a module (it is not a package), registered while a test module runs."""
    spec = importlib.util.spec_from_file_location("bench_side_by_side", BENCH / "_side_by_side.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_side_by_side"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_side_by_side"]
