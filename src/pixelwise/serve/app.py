"""`create_app(segmenter, settings)`: the FastAPI application behind ``pixelwise serve``.

Endpoints: ``POST /predict`` (an image, multipart field ``file`` or the raw body -> a palette PNG
label map, JSON or GeoJSON, see :mod:`pixelwise.serve.responses`), ``GET /model``,
``GET /healthz``, ``GET /metrics`` (Prometheus text) and ``GET /`` (the page). The OpenAPI spec
is at ``/openapi.json``, its browsable form at ``/docs``.

A request's image is decoded in a thread, predicted by the micro-batcher's worker thread and
rendered in a thread again, so the event loop only moves bytes. Every refusal is a 4xx with one
line of JSON ``{"error": "...", "status": N}``; an unexpected failure is a 500 of the same form
and the server carries on.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from pixelwise.errors import ConfigError
from pixelwise.inference.predict import Segmenter
from pixelwise.serve.batching import MicroBatcher
from pixelwise.serve.errors import RequestError
from pixelwise.serve.metrics import CONTENT_TYPE, ServeMetrics
from pixelwise.serve.predictor import BatchPredictor, Prediction
from pixelwise.serve.responses import (
    MEDIA_TYPES,
    display_layers,
    label_png,
    negotiate,
    prediction_json,
)
from pixelwise.serve.uploads import decode_upload

logger = logging.getLogger(__name__)
Format = Literal["png", "json", "geojson"]


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server (the ``pixelwise serve`` flags of the same names).

    ``max_upload_mb`` bounds the request body (413 above it), ``max_pixels`` the decoded image
    (413; checked on the header before decoding), ``display_max`` the longest side of the page's
    overlay (the label map itself always has the full resolution).
    """

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_mb: float = 32.0
    max_pixels: int = 4096 * 4096
    display_max: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pixels", "display_max"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}; try the default {name}="
                                  f"{getattr(ServeSettings, name)}")
        if not self.max_upload_mb > 0 or not self.max_wait_ms >= 0:
            raise ConfigError(f"max_upload_mb must be > 0 and max_wait_ms >= 0, got "
                              f"{self.max_upload_mb} and {self.max_wait_ms}; try 32 and 5")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}},
        **{media: {"schema": {"type": "string", "format": "binary"}}
           for media in ("application/octet-stream", "image/png", "image/jpeg", "image/tiff")},
    },
}
ERROR_SCHEMA = {"application/json": {"schema": {
    "type": "object", "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}}}
PREDICT_RESPONSES = {
    200: {"description": "the prediction, as asked", "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object"}},
        "application/geo+json": {"schema": {"type": "object"}}}},
    **{status: {"description": why, "content": ERROR_SCHEMA} for status, why in (
        (400, "not a readable image, truncated, or a bad parameter"),
        (406, "no acceptable format in the Accept header"),
        (413, "over the upload limit or the pixel limit"),
        (415, "not a PNG, JPEG, TIFF or BMP image"),
        (422, "a channel count the model cannot take"))},
}


def create_app(segmenter: Segmenter, settings: ServeSettings | None = None,
               source: str = "") -> FastAPI:
    """The HTTP app serving ``segmenter`` (see the module docs); ``source`` names the model
    file in ``GET /model``. Run it with uvicorn, or use it in ``fastapi.testclient.TestClient``
    as a context manager (its lifespan starts the micro-batcher)."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    batcher = MicroBatcher(BatchPredictor(segmenter), settings.max_batch, settings.max_wait_ms,
                           on_batch=metrics.observe_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    from pixelwise.version import __version__

    app = FastAPI(title="pixelwise", version=__version__, lifespan=lifespan,
                  description="Semantic segmentation of uploaded images (pixelwise serve).")
    _add_error_handlers(app)
    _add_metrics_middleware(app, metrics)
    _add_info_routes(app, model_info(segmenter, settings, source), metrics)
    _add_predict_route(app, segmenter, settings, batcher)
    return app


def model_info(segmenter: Segmenter, settings: ServeSettings, source: str) -> dict[str, Any]:
    """What ``GET /model`` says: classes, palette, input channels, backend, the checkpoint's
    metadata (model name and options, mean/std, training metrics) and the server's limits."""
    from pixelwise.inference.onnx import OnnxModule

    meta = asdict(segmenter.meta)
    meta["metrics"] = {key: value if math.isfinite(value) else None  # NaN is not JSON
                       for key, value in segmenter.meta.metrics.items()}
    return {
        "classes": list(segmenter.classes),
        "palette": [list(colour) for colour in segmenter.palette],
        "in_channels": segmenter.meta.in_channels,
        "backend": "onnxruntime" if isinstance(segmenter.model, OnnxModule) else "pytorch",
        "device": str(segmenter.device),
        "source": source,
        "model": meta,
        "limits": {"max_upload_bytes": settings.max_upload_bytes,
                   "max_pixels": settings.max_pixels, "tile_above": segmenter.tile_above,
                   "tile": segmenter.tile, "overlap": segmenter.overlap,
                   "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                   "display_max": settings.display_max},
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split()), "status": status}, status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(400, f"{where} must be valid: {first.get('msg', 'invalid')}, got "
                           f"{repr(first.get('input'))[:80]}; see GET /docs for the parameters")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}; "
                                         "see GET /docs for the endpoints")

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(error).__name__}); the server carries on, "
                           "please report it with the input that caused it")


def _add_metrics_middleware(app: FastAPI, metrics: ServeMetrics) -> None:
    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "other")
            metrics.observe_request(path, status, time.perf_counter() - start)


def _add_info_routes(app: FastAPI, info: dict[str, Any], metrics: ServeMetrics) -> None:
    page = resources.files("pixelwise.serve").joinpath("static/index.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, summary="The page: upload an image, see the overlay")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model", summary="Classes, palette, input channels, model configuration, backend")
    async def model() -> dict[str, Any]:
        return info

    @app.get("/metrics", response_class=PlainTextResponse,
             summary="Requests, errors, latency and batch sizes (Prometheus text format)")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_predict_route(app: FastAPI, segmenter: Segmenter, settings: ServeSettings,
                       batcher: MicroBatcher[Prediction]) -> None:
    @app.post("/predict", summary="Segment one image", responses=PREDICT_RESPONSES,
              openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(
        request: Request,
        format: Annotated[Format | None, Query(
            description="png, json or geojson; default: by the Accept header, else json")] = None,
        embed: Annotated[bool, Query(
            description="json: add the label PNG and the page's display layer (class id and "
                        "probability per pixel), base64")] = False,
        min_area: Annotated[int, Query(
            ge=0, le=2**40, description="json/geojson: drop smaller instances (pixels)")] = 0,
        simplify: Annotated[float, Query(
            ge=0.0, le=1e6, allow_inf_nan=False,
            description="json/geojson: polygon tolerance in pixels")] = 0.0,
    ) -> Response:
        kind = negotiate(format, request.headers.get("accept"))
        data, name = await read_upload(request, settings.max_upload_bytes)
        image = await run_in_threadpool(decode_upload, data, segmenter.meta.in_channels,
                                        settings.max_pixels, name)
        prediction = await batcher.submit(image)
        return await run_in_threadpool(render, kind, prediction, segmenter, settings, embed,
                                       min_area, simplify)


def render(kind: str, prediction: Prediction, segmenter: Segmenter, settings: ServeSettings,
           embed: bool, min_area: int, simplify: float) -> Response:
    """The response of one prediction in format ``kind`` (see :mod:`pixelwise.serve.responses`)."""
    if kind == "png":
        return Response(label_png(prediction.label, segmenter.palette), media_type=MEDIA_TYPES[kind])
    answer = prediction_json(prediction, segmenter.classes, segmenter.palette,
                             segmenter.meta.background, min_area, simplify)
    if kind == "geojson":
        return JSONResponse(answer["geojson"], media_type=MEDIA_TYPES[kind])
    if embed:
        answer.update(display_layers(prediction, segmenter.palette, settings.display_max))
    return JSONResponse(answer)


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and name: the multipart field ``file`` (or the only file
    field), else the raw body. More than ``limit`` body bytes: 413, before reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, declared)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, f"more than {limit}")
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await _multipart_file(request.headers, bytes(body))
    return bytes(body), "upload"


def _too_large(limit: int, size: str) -> RequestError:
    return RequestError(413, f"uploads must be at most {limit} bytes (the server's "
                             f"--max-upload-mb), got {size}; try a smaller image or compress it "
                             "(PNG, JPEG)")


async def _multipart_file(headers: Headers, body: bytes) -> tuple[bytes, str]:
    async def chunks():
        yield body

    try:
        form = await MultiPartParser(headers, chunks(), max_files=1, max_fields=16).parse()
    except MultiPartException as error:
        raise RequestError(400, f"the multipart body must be well-formed with one file, got "
                                f"{error.message}; try curl -F file=@image.png URL") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    upload = form.get("file") if isinstance(form.get("file"), UploadFile) else next(
        iter(files), None)
    if upload is None:
        raise RequestError(400, f"a multipart request must carry the image as a file field "
                                f"'file', got fields {sorted(form.keys())[:8]}; try curl -F "
                                "file=@image.png URL")
    data = await upload.read()
    await form.close()
    return data, (upload.filename or "upload")[:200]
