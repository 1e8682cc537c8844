"""From a label map to objects: connected-component instances, boxes, polygons, areas, and their
export as GeoJSON and COCO-style annotations; and from a foreground probability map to cells
that touch (`watershed_cells`).

Coordinates: pixel `(row, col)` covers `[col, col + 1) x [row, row + 1)` in `(x, y)` image
coordinates, so its centre is `(col + 0.5, row + 0.5)`; this is the COCO convention and the one a
rasterio/GDAL affine transform expects, which maps these coordinates to map coordinates.

Polygons are traced by marching squares (`skimage.measure.find_contours` at level 0.5): each
contour passes between the pixel centres inside and outside the instance, so rasterising a polygon
back (pixel centre inside the polygon) gives the instance mask again. An instance is one polygon:
its outer contour (of the instance with its holes filled) and one interior ring per hole.
COCO output writes objects with holes as RLE, since COCO polygons have no holes (`to_coco`).
Polygons and COCO need the `vector` extra (shapely, pycocotools); georeferencing needs `geo`
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


# `watershed_cells`' seeds: pixels where the model is at least this sure of the foreground.
# Chosen on ISBI 2012 training slices, never on the scored ones (bench/watershed_seeds.py,
# docs/benchmarks.md): of 0.9 ... 0.99 it was best for one model on slices 0-24 and second best
# for another on slices 15-24. Higher thresholds lose the seeds of faint cells, lower ones join
# cells; 0.9 is as good (the mean over three models' slices 0-24: 0.058 against 0.061).
WATERSHED_SEED_THRESHOLD = 0.95


def watershed_cells(foreground: np.ndarray,
                    seed_threshold: float = WATERSHED_SEED_THRESHOLD) -> np.ndarray:
    """Cells ``(H, W)`` int32, labelled 1..n, from a foreground probability map ``(H, W)``.

    The seeded watershed of EM segmentation: the seeds are the 4-connected regions where the
    probability exceeds ``seed_threshold``, and every pixel joins the seed it reaches first
    when flooding ``1 - probability`` (``skimage.segmentation.watershed``). Each cell is grown
    up to the middle of the membrane around it, so a one-pixel gap in a predicted membrane no
    longer joins two cells as the label map's connected components do (`find_instances`),
    while two seeds in one cell split it. No pixel above the threshold: all 0.
    """
    from skimage.segmentation import watershed

    if not 0.0 < seed_threshold < 1.0:
        raise ConfigError(f"seed_threshold must be between 0 and 1, got {seed_threshold}; "
                          f"try {WATERSHED_SEED_THRESHOLD}")
    probability = np.asarray(foreground, dtype=np.float32)
    seeds, _ = ndimage.label(probability > seed_threshold)
    if not seeds.any():
        return seeds.astype(np.int32)
    return watershed(1.0 - probability, seeds).astype(np.int32)


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
    holes, _ = ndimage.label(filled & ~mask)  # 4-connected, as binary_fill_holes sees them
    # the instance is 8-connected, so its outer contour joins diagonal neighbours ("high") and
    # its holes, 4-connected, are separated at diagonal contacts ("low"); each hole is traced
    # inside its own box, so thousands of holes cost their own areas, not the instance's each
    interiors = [_ring(holes[box] == index, "low") + shift + (box[1].start, box[0].start)
                 for index, box in enumerate(ndimage.find_objects(holes), start=1)]
    return shapely.Polygon(_ring(filled, "high") + shift, interiors)


def find_instances(
    label: np.ndarray,
    *,
    background: Sequence[int] = (),
    min_area: int = 0,
    simplify: float = 0.0,
) -> list[Instance]:
    """Connected components (8-connected) of each class of a label map `(H, W)`.

    Classes in `background` are skipped (none by default: a model's are
    `ModelMeta.background`); components with fewer than `min_area` pixels are dropped; polygons are simplified with `simplify` pixels of tolerance (shapely, topology
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


def class_name(class_id: int, class_names: Sequence[str] | None) -> str:
    """`class_names[class_id]`, or the id as text when there is no name for it."""
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
                "class_name": class_name(instance.class_id, class_names),
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


def coco_polygon(instance: Instance) -> list[list[float]]:
    """COCO polygon segmentation of an instance without holes: its exterior ring as one flat
    `[x1, y1, x2, y2, ...]` list (the closing vertex dropped)."""
    return [np.asarray(instance.polygon.exterior.coords)[:-1].ravel().round(2).tolist()]


def to_coco(
    instances: Sequence[Instance],
    height: int,
    width: int,
    *,
    class_names: Sequence[str] | None = None,
    file_name: str = "image.png",
    image_id: int = 1,
    segmentation: Literal["auto", "rle"] = "auto",
) -> dict:
    """COCO-style annotations of one image: `{"images", "annotations", "categories"}`.

    Category ids are class ids + 1 (COCO tools read id 0 as "no category"): class `c` is
    category `c + 1`, named `class_names[c]`; every class of `class_names` is listed, so ids
    and names agree across images.

    `segmentation="auto"`: an object without holes is a polygon (its exterior ring), an object
    with holes compressed RLE, because COCO polygons cannot carry holes (pycocotools fills every
    ring). `"rle"`: compressed RLE for every object. Either way `pycocotools.COCO.annToMask`
    gives the instance mask back exactly (polygons of `find_instances(simplify=0)` rasterise to
    their mask pixel for pixel; simplified ones only approximately). `area` is the pixel count of
    the segmentation as pycocotools decodes it.
    """
    if segmentation not in ("auto", "rle"):
        raise ConfigError(f"segmentation must be 'auto' or 'rle', got {segmentation!r}; "
                          "try 'auto' (polygons, RLE for objects with holes)")
    mask_utils = import_extra("pycocotools.mask", "vector")
    annotations = []
    for number, instance in enumerate(instances, start=1):
        if segmentation == "rle" or instance.polygon.interiors:
            segments: Any = coco_rle(instance, height, width)
            area = instance.area
        else:
            segments = coco_polygon(instance)
            drawn = mask_utils.merge(mask_utils.frPyObjects(segments, height, width))
            area = int(mask_utils.area(drawn))  # differs from instance.area once simplified
        annotations.append({
            "id": number,
            "image_id": image_id,
            "category_id": instance.class_id + 1,
            "segmentation": segments,
            "area": area,
            "bbox": list(instance.bbox),
            "iscrowd": 0,
        })
    class_ids = sorted({i.class_id for i in instances} | set(range(len(class_names or []))))
    categories = [{"id": c + 1, "name": class_name(c, class_names)} for c in class_ids]
    images = [{"id": image_id, "file_name": file_name, "height": height, "width": width}]
    return {"images": images, "annotations": annotations, "categories": categories}
