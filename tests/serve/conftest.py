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


@pytest.fixture(scope="session")
def live_server(segmenter) -> str:
    """The app on a uvicorn server in a thread, on 127.0.0.1 at a free port; its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from pixelwise.serve import ServeSettings, create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ServeSettings(max_upload_mb=1, max_pixels=400_000, display_max=256)
    server = uvicorn.Server(uvicorn.Config(create_app(segmenter, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        pytest.fail(f"uvicorn did not start on 127.0.0.1:{port} within 30 s")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
