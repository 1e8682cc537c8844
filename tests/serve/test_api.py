"""The HTTP API through FastAPI's TestClient: every endpoint, every format, every refusal."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from serve_samples import CLASSES, PALETTE, png_bytes, sample_image

from pixelwise.postprocess import class_areas, find_instances


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def assert_one_line_error(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "\n" not in response.text
    body = response.json()
    assert body["status"] == status
    assert words in body["error"]


def test_predict_png_is_the_segmenters_label_map(client, segmenter):
    image = sample_image()
    response = client.post("/predict?format=png", files={"file": ("x.png", png_bytes(image))})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as png:
        assert png.mode == "P"
        assert png.getpalette()[:9] == [c for colour in PALETTE for c in colour]
    np.testing.assert_array_equal(decode_png(response.content), segmenter.predict(image))


def test_raw_body_is_the_same_as_multipart(client):
    data = png_bytes(sample_image())
    raw = client.post("/predict?format=png", content=data,
                      headers={"content-type": "application/octet-stream"})
    form = client.post("/predict?format=png", files={"file": ("x.png", data)})
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content


@pytest.mark.parametrize(("accept", "media"), [
    ("image/png", "image/png"), ("application/json", "application/json"),
    ("application/geo+json", "application/geo+json"), ("*/*", "application/json"),
    ("text/html;q=0.9, image/png;q=0.5", "image/png"),
])
def test_accept_header_picks_the_format(client, accept, media):
    response = client.post("/predict", content=png_bytes(sample_image()),
                           headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)


def test_format_parameter_wins_over_accept(client):
    response = client.post("/predict?format=geojson", content=png_bytes(sample_image()),
                           headers={"accept": "image/png"})
    assert response.headers["content-type"].startswith("application/geo+json")
    assert response.json()["type"] == "FeatureCollection"


def test_json_has_areas_instances_and_polygons(client, segmenter):
    image = sample_image()
    answer = client.post("/predict?format=json", content=png_bytes(image)).json()
    label = segmenter.predict(image)
    assert (answer["width"], answer["height"], answer["tiled"]) == (56, 40, False)
    assert [c["name"] for c in answer["classes"]] == CLASSES
    assert [c["area_px"] for c in answer["classes"]] == class_areas(label, 3).tolist()
    assert sum(c["fraction"] for c in answer["classes"]) == pytest.approx(1.0)
    expected = find_instances(label, background=segmenter.meta.background)  # the checkpoint's
    assert len(expected) > 1, "the sample image should give the tiny model several objects"
    assert [i["bbox"] for i in answer["instances"]] == [list(i.bbox) for i in expected]
    assert [i["area_px"] for i in answer["instances"]] == [i.area for i in expected]
    features = answer["geojson"]["features"]
    assert len(features) == len(expected) and features[0]["geometry"]["type"] == "Polygon"


def test_min_area_drops_small_instances(client):
    data = png_bytes(sample_image())
    every = client.post("/predict?format=json", content=data).json()["instances"]
    large = client.post("/predict?format=json&min_area=20", content=data).json()["instances"]
    assert large == [i for i in every if i["area_px"] >= 20]


def test_embed_gives_display_layer_and_full_label(client, segmenter):
    image = sample_image()  # 40 x 56, display_max 32: shown at 23 x 32
    answer = client.post("/predict?format=json&embed=true", content=png_bytes(image)).json()
    label = segmenter.predict(image)
    full = decode_png(base64.b64decode(answer["label_png"]))
    np.testing.assert_array_equal(full, label)
    display = answer["display"]
    assert (display["width"], display["height"]) == (32, 23)
    packed = decode_png(base64.b64decode(display["png"])).astype(int)
    rows = ((np.arange(23) + 0.5) * 40 / 23).astype(int)
    cols = ((np.arange(32) + 0.5) * 56 / 32).astype(int)
    np.testing.assert_array_equal(packed[..., 0] + 256 * packed[..., 1], label[np.ix_(rows, cols)])
    confidence = segmenter.predict_proba(image).max(0)[np.ix_(rows, cols)]
    np.testing.assert_allclose(packed[..., 2] / 255, confidence, atol=1 / 255 + 1e-3)


def test_large_images_are_tiled(client, segmenter):
    image = sample_image(100, 120)  # above the fixture's tile_above=96
    answer = client.post("/predict?format=json", content=png_bytes(image)).json()
    assert answer["tiled"] is True
    png = client.post("/predict?format=png", content=png_bytes(image)).content
    np.testing.assert_array_equal(decode_png(png), segmenter.predict(image))


def test_grey_image_goes_into_rgb_model(client, segmenter):
    grey = sample_image()[..., 0]
    response = client.post("/predict?format=png", content=png_bytes(grey))
    assert response.status_code == 200
    np.testing.assert_array_equal(decode_png(response.content), segmenter.predict(grey))


def test_model_describes_classes_palette_channels_and_backend(client):
    info = client.get("/model").json()
    assert info["classes"] == CLASSES
    assert info["palette"] == [list(c) for c in PALETTE]
    assert info["in_channels"] == 3
    assert info["backend"] == "pytorch"
    assert info["model"]["name"] == "unet"
    assert info["model"]["options"] == {"base_channels": 4, "depth": 2}
    assert info["model"]["metrics"] == {"mean_iou": 0.5, "pixel_accuracy": None}  # NaN -> null
    assert info["limits"]["max_pixels"] == 200_000 and info["limits"]["tile_above"] == 96


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_count_requests_errors_latency_and_batches(client):
    client.post("/predict?format=png", content=png_bytes(sample_image()))
    client.post("/predict", content=b"not an image")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'pixelwise_requests_total{path="/predict",status="200"} 1' in text
    assert 'pixelwise_request_errors_total{path="/predict",status="415"} 1' in text
    assert 'pixelwise_request_duration_seconds_count{path="/predict"} 2' in text
    assert 'pixelwise_batch_size_bucket{le="1"} 1' in text
    assert "pixelwise_batch_size_count 1" in text
    assert "# TYPE pixelwise_request_duration_seconds histogram" in text


def test_page_is_served_without_outside_resources(client):
    response = client.get("/")
    assert response.headers["content-type"].startswith("text/html")
    for element in ('id="overlay"', 'id="legend"', 'id="opacity"', 'id="download-geojson"'):
        assert element in response.text
    assert "http://" not in response.text and "https://" not in response.text


def test_openapi_spec_documents_the_upload(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream", "image/png"} <= set(body)


# ---- refusals: one line of JSON, a 4xx, and the server carries on ----------------------------

def test_not_an_image_is_415(client):
    assert_one_line_error(client.post("/predict", content=b"hello world"), 415, "PNG, JPEG")


def test_empty_body_is_400(client):
    assert_one_line_error(client.post("/predict", content=b""), 400, "0 bytes")


def test_truncated_image_is_400(client):
    data = png_bytes(sample_image())
    response = client.post("/predict", files={"file": ("cut.png", data[: len(data) // 2])})
    assert_one_line_error(response, 400, "cut.png")


def test_too_many_pixels_is_413_before_decoding(client):
    data = png_bytes(np.zeros((500, 500, 3), np.uint8))  # 250 000 > max_pixels 200 000
    assert_one_line_error(client.post("/predict", content=data), 413, "at most 200000 pixels")


def test_wrong_channel_count_is_422(client):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((16, 16, 2), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    assert_one_line_error(client.post("/predict", content=buffer.getvalue()), 422, "must have 3 channel(s), got 2")


def test_over_upload_limit_is_413(client):
    big = b"\x89PNG\r\n\x1a\n" + bytes(600_000)  # limit 0.5 MiB
    assert_one_line_error(client.post("/predict", content=big), 413, "at most 524288 bytes")
    response = client.post("/predict", files={"file": ("big.png", big)})
    assert_one_line_error(response, 413, "at most 524288 bytes")


def test_upload_limit_holds_without_content_length(client):
    def chunks():
        for _ in range(10):
            yield bytes(100_000)

    response = client.post("/predict", content=chunks())
    assert_one_line_error(response, 413, "more than 524288")


def test_unknown_format_is_400(client):
    response = client.post("/predict?format=xml", content=png_bytes(sample_image()))
    assert_one_line_error(response, 400, "format")


def test_unacceptable_accept_is_406(client):
    response = client.post("/predict", content=png_bytes(sample_image()),
                           headers={"accept": "text/html"})
    assert_one_line_error(response, 406, "Accept")


def test_multipart_without_file_is_400(client):
    response = client.post("/predict", files={"name": (None, "x")})  # a field, no file
    assert_one_line_error(response, 400, "file")


def test_malformed_multipart_is_400(client):
    response = client.post("/predict", content=b"--x\r\nbroken",
                           headers={"content-type": "multipart/form-data"})
    assert_one_line_error(response, 400, "multipart")


def test_bad_query_value_is_400(client):
    response = client.post("/predict?min_area=-1", content=png_bytes(sample_image()))
    assert_one_line_error(response, 400, "min_area")


def test_unknown_path_and_method_are_one_line_errors(client):
    assert_one_line_error(client.get("/nothing"), 404, "Not Found")
    assert_one_line_error(client.get("/predict"), 405, "Method Not Allowed")


def test_server_carries_on_after_bad_input(client):
    for data in (b"", b"junk", png_bytes(sample_image())[:50]):
        client.post("/predict", content=data)
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict?format=png", content=png_bytes(sample_image())).status_code == 200


def test_model_info_json_is_strict(client):
    json.loads(client.get("/model").text, parse_constant=lambda name: pytest.fail(name))
