"""`pixelwise serve`: the flags reach the server, which binds 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import pytest

from pixelwise.errors import ConfigError


@pytest.fixture
def started(monkeypatch):
    """What `uvicorn.run` was called with, instead of serving forever."""
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.update(app=app, **options))
    return calls


def test_serve_flags_reach_the_app_and_the_segmenter(checkpoint, started, capsys):
    from pixelwise.cli import main

    assert main(["serve", str(checkpoint), "--port", "8123", "--device", "cpu", "--max-batch",
                 "3", "--max-wait-ms", "7", "--max-upload-mb", "2", "--max-pixels", "5000",
                 "--tile-threshold", "300"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    from fastapi.testclient import TestClient

    with TestClient(started["app"]) as client:
        limits = client.get("/model").json()["limits"]
    assert limits == {**limits, "max_batch": 3, "max_wait_ms": 7.0, "max_upload_bytes": 2 * 2**20,
                      "max_pixels": 5000, "tile_above": 300}
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out


@pytest.mark.parametrize("field", ["max_batch", "max_pixels", "display_max"])
def test_settings_refuse_non_positive_limits(field):
    from pixelwise.serve import ServeSettings

    with pytest.raises(ConfigError, match=f"{field} must be a positive integer, got 0"):
        ServeSettings(**{field: 0})


def test_settings_refuse_a_zero_upload_limit():
    from pixelwise.serve import ServeSettings

    with pytest.raises(ConfigError, match="max_upload_mb must be > 0"):
        ServeSettings(max_upload_mb=0)
