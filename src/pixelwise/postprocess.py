"""From a label map to objects: connected-component instances, boxes, polygons, areas, and their
export as GeoJSON and COCO-style annotations.

Coordinates: pixel `(row, col)` covers `[col, col + 1) x [row, row + 1)` in `(x, y)` image
coordinates, so its centre is `(col + 0.5, row + 0.5)`; this is the COCO convention and the one a
rasterio/GDAL affine transform expects, which maps these coordinates to map coordinates.

Polygons are traced by marching squares (`skimage.measure.find_contours` at level 0.5): each
contour passes between the pixel centres inside and outside the instance, so rasterising a polygon
back (pixel centre inside the polygon) gives the instance mask again. An instance is one polygon:
its outer contour (of the instance with its holes filled) and one interior ring per hole.
Needs the `vector` extra (scikit-image, shapely, pycocotools); georeferencing needs `geo`
(rasterio).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from pixelwise.errors import ConfigError, DataError, import_extra


@dataclass(frozen=True)
class GeoReference:
    """Where a raster lies on the Earth: a CRS (WKT or "EPSG:n") and the affine transform
    `(a, b, c, d, e, f)` mapping image `(x, y)` to map `(a*x + b*y + c, d*x + e*y + f)`."""

    crs: str
    transform: tuple[float, float, float, float, float, float]

    @property
    def pixel_area(self) -> float:
        """Map units squared covered by one pixel."""
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)


def read_georeference(path: str | Path) -> GeoReference | None:
    """CRS and transform of a GeoTIFF (via rasterio), or None when the file has none."""
    if not Path(path).is_file():
        raise DataError(f"georeferenced image must be an existing file, got {path}; "
                        "check the path")
    rasterio = import_extra("rasterio", "geo")
    with warnings.catch_warnings():  # a file without georeferencing is an answer here: None
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            if dataset.crs is None:
                return None
            t = dataset.transform
            return GeoReference(dataset.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f))


@dataclass(frozen=True)
class Instance:
    """One connected component of one class.

    `bbox` is COCO's `(x, y, width, height)` in pixels; `area` the number of pixels; `mask` the
    `(height, width)` bool mask inside the box; `polygon` a shapely Polygon in image
    coordinates (holes as interior rings), simplified when asked.
    """

    class_id: int
    area: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    polygon: Any


def class_areas(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class, `(num_classes,)` int64 (classes absent from `label` count 0)."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        raise DataError(
            f"label values must lie in 0..{num_classes - 1}, got {label.min()}..{label.max()}; "
            "try num_classes=label.max() + 1"
        )
    return np.bincount(label.ravel(), minlength=num_classes).astype(np.int64)


def _ring(mask: np.ndarray, fully_connected: str) -> np.ndarray:
    """`(n, 2)` (x, y) outer contour of a bool mask (the longest marching-squares contour)."""
    contours = import_extra("skimage.measure", "vector").find_contours(
        np.pad(mask, 1).astype(np.float32), 0.5, fully_connected=fully_connected)
    rows_cols = max(contours, key=len)
    return rows_cols[:, ::-1] - 1 + 0.5  # undo the pad, move to pixel-corner coordinates


def instance_polygon(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Any:
    """Shapely Polygon of one connected bool mask `(h, w)` whose top-left pixel is at
    `offset = (x, y)`: the outer contour of the filled mask plus one hole ring per hole."""
    shapely = import_extra("shapely", "vector")
    filled = ndimage.binary_fill_holes(mask)
    shift = np.asarray(offset, np.float64)
    holes, count = ndimage.label(filled & ~mask)  # 4-connected, as binary_fill_holes sees them
    # the instance is 8-connected, so its outer contour joins diagonal neighbours ("high") and
    # its holes, 4-connected, are separated at diagonal contacts ("low")
    interiors = [_ring(holes == index, "low") + shift for index in range(1, count + 1)]
    return shapely.Polygon(_ring(filled, "high") + shift, interiors)


def find_instances(
    label: np.ndarray,
    *,
    background: Sequence[int] = (0,),
    min_area: int = 0,
    simplify: float = 0.0,
) -> list[Instance]:
    """Connected components (8-connected) of each class of a label map `(H, W)`.

    Classes in `background` are skipped; components with fewer than `min_area` pixels are
    dropped; polygons are simplified with `simplify` pixels of tolerance (shapely, topology
    preserved; 0 keeps the exact pixel outline). Instances come ordered by class, then by their
    first pixel in row-major order.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise DataError(f"label must be (H, W), got shape {label.shape}; try label.squeeze()")
    if min_area < 0 or simplify < 0:
        raise ConfigError(f"min_area and simplify must be >= 0, got {min_area}, {simplify}; try 0")
    instances = []
    for class_id in np.unique(label):
        if class_id in background:
            continue
        components, _ = ndimage.label(label == class_id, structure=np.ones((3, 3)))
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == index
            area = int(mask.sum())
            if area < min_area:
                continue
            y, x = box[0].start, box[1].start
            polygon = instance_polygon(mask, (x, y))
            if simplify > 0:
                polygon = polygon.simplify(simplify, preserve_topology=True)
            instances.append(Instance(int(class_id), area, (x, y, mask.shape[1], mask.shape[0]),
                                      mask, polygon))
    return instances


def _class_name(class_id: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and class_id < len(class_names):
        return class_names[class_id]
    return str(class_id)


def to_geojson(
    instances: Sequence[Instance],
    class_names: Sequence[str] | None = None,
    georef: GeoReference | None = None,
) -> dict:
    """GeoJSON FeatureCollection, one Polygon Feature per instance.

    Properties: `class_id`, `class_name`, `area_px` (pixels), `bbox_px` (x, y, w, h). With
    `georef`, coordinates are map coordinates (the affine transform applied) and the collection
    carries a "crs" member naming the CRS (the pre-RFC 7946 form GDAL and QGIS read); without it
    they are image (x, y) pixel coordinates.
    """
    affinity = import_extra("shapely.affinity", "vector")
    geometry = import_extra("shapely.geometry", "vector")
    features = []
    for instance in instances:
        polygon = instance.polygon
        if georef is not None:
            a, b, c, d, e, f = georef.transform
            polygon = affinity.affine_transform(polygon, [a, b, d, e, c, f])
        features.append({
            "type": "Feature",
            "geometry": geometry.mapping(polygon),
            "properties": {
                "class_id": instance.class_id,
                "class_name": _class_name(instance.class_id, class_names),
                "area_px": instance.area,
                "bbox_px": list(instance.bbox),
            },
        })
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if georef is not None:
        collection["crs"] = {"type": "name", "properties": {"name": georef.crs}}
    return json.loads(json.dumps(collection))  # tuples -> lists: plain JSON data


def coco_rle(instance: Instance, height: int, width: int) -> dict:
    """Compressed COCO RLE of an instance in an image `(height, width)`.

    Runs are computed from the instance's box-sized mask (column-major over the whole image, as
    COCO counts them), so no full-image mask is ever allocated.
    """
    mask_utils = import_extra("pycocotools.mask", "vector")
    x, y = instance.bbox[:2]
    rows, cols = np.nonzero(instance.mask.T)[::-1]  # column-major order of the box
    positions = (cols + x).astype(np.int64) * height + (rows + y)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.r_[0, breaks]]
    ends = positions[np.r_[breaks - 1, len(positions) - 1]] + 1
    counts = np.empty(2 * len(starts) + 1, np.int64)
    counts[0:-1:2] = starts - np.r_[0, ends[:-1]]  # background runs
    counts[1::2] = ends - starts  # foreground runs
    counts[-1] = height * width - ends[-1]
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()},
                                 height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def to_coco(
    instances: Sequence[Instance],
    height: int,
    width: int,
    *,
    class_names: Sequence[str] | None = None,
    file_name: str = "image.png",
    image_id: int = 1,
    segmentation: Literal["polygon", "rle"] = "polygon",
) -> dict:
    """COCO-style annotations of one image: `{"images", "annotations", "categories"}`.

    `segmentation="polygon"`: each annotation's segmentation is a list of flat `[x1, y1, x2,
    y2, ...]` rings (exterior first, then holes; COCO has no hole flag, so readers that fill
    every ring ignore holes: use "rle" when holes matter). `"rle"`: compressed RLE, exact.
    """
    if segmentation not in ("polygon", "rle"):
        raise ConfigError(f"segmentation must be 'polygon' or 'rle', got {segmentation!r}; "
                          "try 'rle'")
    annotations = []
    for number, instance in enumerate(instances, start=1):
        if segmentation == "rle":
            segments: Any = coco_rle(instance, height, width)
        else:
            rings = [instance.polygon.exterior, *instance.polygon.interiors]
            segments = [np.asarray(ring.coords)[:-1].ravel().round(2).tolist() for ring in rings]
        annotations.append({
            "id": number,
            "image_id": image_id,
            "category_id": instance.class_id,
            "segmentation": segments,
            "area": instance.area,
            "bbox": list(instance.bbox),
            "iscrowd": 0,
        })
    class_ids = sorted({i.class_id for i in instances} | set(range(len(class_names or []))))
    categories = [{"id": c, "name": _class_name(c, class_names)} for c in class_ids]
    images = [{"id": image_id, "file_name": file_name, "height": height, "width": width}]
    return {"images": images, "annotations": annotations, "categories": categories}
