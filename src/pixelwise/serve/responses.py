"""What ``POST /predict`` answers: the format a client asks for, and the bytes of each format.

Formats: ``png`` (the palette PNG label map of :func:`pixelwise.outputs.save_label_png`: pixel
values are class ids, viewers show the class colours), ``json`` (per-class pixel areas, the
instances with their boxes and the GeoJSON polygons of :mod:`pixelwise.postprocess`) and
``geojson`` (the FeatureCollection alone). A ``format`` query parameter wins over the ``Accept``
header; no preference gives JSON.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise.outputs import save_label_png
from pixelwise.postprocess import class_areas, find_instances, to_geojson
from pixelwise.serve.errors import RequestError
from pixelwise.serve.predictor import Prediction

MEDIA_TYPES = {"png": "image/png", "json": "application/json",
               "geojson": "application/geo+json"}
_WILDCARDS = {"*/*": "json", "application/*": "json", "image/*": "png"}


def negotiate(format: str | None, accept: str | None) -> str:
    """The answer's format: ``format`` when given, else the best match of the ``Accept`` header
    (quality values honoured; ``*/*`` or no header: json). Nothing acceptable: 406."""
    if format is not None:
        return format
    offers = _accept_offers(accept or "*/*")
    for media in offers:
        for name, media_type in MEDIA_TYPES.items():
            if media == media_type:
                return name
        if media in _WILDCARDS:
            return _WILDCARDS[media]
    raise RequestError(406, f"the Accept header must allow one of {', '.join(MEDIA_TYPES.values())}"
                            f", got {accept!r}; try Accept: image/png or ?format=json")


def _accept_offers(accept: str) -> list[str]:
    """Media types of an Accept header, best first (q=0 dropped, ties keep header order)."""
    offers = []
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            offers.append((-quality, position, media.lower()))
    return [media for _, _, media in sorted(offers)]


def label_png(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> bytes:
    """The palette PNG of a label map, as bytes (up to 256 classes: a PNG palette's limit)."""
    if label.dtype != np.uint8:
        raise RequestError(406, "format png holds at most 256 classes, got a model with more; "
                                "try ?format=json or pixelwise predict --format npy")
    with tempfile.TemporaryDirectory(prefix="pixelwise-png-") as folder:
        return save_label_png(label, Path(folder) / "label.png", palette).read_bytes()


def prediction_json(prediction: Prediction, classes: Sequence[str],
                    palette: Sequence[tuple[int, int, int]], background: Sequence[int] = (),
                    min_area: int = 0, simplify: float = 0.0) -> dict[str, Any]:
    """Areas, instances (none for the ``background`` classes, the checkpoint's) and GeoJSON of
    one prediction.

    Instances are the 8-connected components of each class (``find_instances``), each with
    its COCO box ``[x, y, width, height]`` in pixels; the GeoJSON is in image pixel
    coordinates.
    """
    label = prediction.label
    areas = class_areas(label, len(classes))
    geojson = to_geojson(find_instances(label, background=tuple(background), min_area=min_area,
                                        simplify=simplify), classes)
    height, width = label.shape
    return {
        "width": width,
        "height": height,
        "tiled": prediction.tiled,
        "classes": [{"id": i, "name": name, "color": list(palette[i]), "area_px": int(areas[i]),
                     "fraction": float(areas[i]) / max(1, label.size)}
                    for i, name in enumerate(classes)],
        "instances": [{"class_id": p["class_id"], "class_name": p["class_name"],
                       "area_px": p["area_px"], "bbox": p["bbox_px"]}
                      for p in (feature["properties"] for feature in geojson["features"])],
        "geojson": geojson,
    }


def display_layers(prediction: Prediction, palette: Sequence[tuple[int, int, int]],
                   display_max: int) -> dict[str, Any]:
    """What the page draws: the full-resolution label PNG for download (base64; None above 256
    classes) and a display PNG no larger than ``display_max`` on a side whose pixels pack the
    class id (red: low byte, green: high byte) and the probability of that class (blue:
    ``round(255 * p)``), so the page shows class and probability under the pointer."""
    from PIL import Image

    height, width = prediction.label.shape
    scale = min(1.0, display_max / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)  # nearest pixel
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    ids = prediction.label[np.ix_(rows, cols)].astype(np.int64)
    confidence = prediction.confidence[np.ix_(rows, cols)]
    packed = np.stack([ids & 255, ids >> 8, np.rint(255 * confidence)], -1).astype(np.uint8)
    display = io.BytesIO()
    Image.fromarray(packed).save(display, format="png")
    full = label_png(prediction.label, palette) if prediction.label.dtype == np.uint8 else None
    return {
        "label_png": None if full is None else _base64(full),
        "display": {"width": size[1], "height": size[0], "png": _base64(display.getvalue())},
    }


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
