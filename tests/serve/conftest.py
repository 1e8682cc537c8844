"""Fixtures of the serve tests: the tiny checkpoint, a Segmenter on it, and a served app.

The checkpoint is read back through the public `Segmenter.from_checkpoint`, as `pixelwise
serve` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_samples import write_tiny_checkpoint

pytest.importorskip("fastapi", reason="pixelwise[serve] is not installed")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


@pytest.fixture(scope="session")
def segmenter(checkpoint):
    from pixelwise import Segmenter

    return Segmenter.from_checkpoint(checkpoint, device="cpu", tile_above=96, tile=64,
                                     overlap=16)


@pytest.fixture
def client(segmenter):
    from fastapi.testclient import TestClient

    from pixelwise.serve import ServeSettings, create_app

    settings = ServeSettings(max_batch=4, max_wait_ms=20, max_upload_mb=0.5, max_pixels=200_000,
                             display_max=32)
    with TestClient(create_app(segmenter, settings, source="tiny.safetensors")) as client:
        yield client
