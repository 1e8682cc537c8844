"""An exported ONNX file served through the same Segmenter (onnxruntime on the CPU)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from serve_samples import png_bytes, sample_image

pytest.importorskip("onnxruntime", reason="pixelwise[export] is not installed")


@pytest.fixture(scope="module")
def onnx_client(checkpoint, tmp_path_factory):
    from fastapi.testclient import TestClient

    from pixelwise import Segmenter
    from pixelwise.export import export_checkpoint
    from pixelwise.serve import ServeSettings, create_app

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert export_checkpoint(checkpoint, path, sizes=[(40, 56)], exporter="legacy").passed
    segmenter = Segmenter.from_checkpoint(path)
    with TestClient(create_app(segmenter, ServeSettings(max_wait_ms=0))) as client:
        yield client, segmenter


def test_onnx_model_says_its_backend(onnx_client):
    client, _ = onnx_client
    info = client.get("/model").json()
    assert info["backend"] == "onnxruntime" and info["device"] == "cpu"
    assert info["classes"] == ["background", "cell", "edge"]


def test_onnx_predictions_equal_the_segmenters(onnx_client):
    client, segmenter = onnx_client
    image = sample_image()
    response = client.post("/predict?format=png", content=png_bytes(image))
    with Image.open(io.BytesIO(response.content)) as png:
        np.testing.assert_array_equal(np.asarray(png), segmenter.predict(image))
