"""Prediction files people use downstream: palette PNGs, colour overlays, GeoTIFF/BigTIFF,
NumPy arrays, GeoJSON and COCO annotations (`write_prediction`, for `pixelwise predict --format`;
`predict_to_files` predicts one image with a `Segmenter` and writes it).

A label map is an integer array `(H, W)` of class ids. A palette is a sequence of `(r, g, b)`
tuples, one per class id, as in `DatasetInfo.palette`. The palette PNG stores the class ids
themselves as pixel values (PNG "P" mode), so `numpy.asarray(PIL.Image.open(path))` gives the
label map back exactly while image viewers show the colours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from PIL import Image

from pixelwise.errors import ConfigError, import_extra
from pixelwise.labels import label_dtype
from pixelwise.postprocess import (
    GeoReference,
    find_instances,
    read_georeference,
    to_coco,
    to_geojson,
)

if TYPE_CHECKING:  # torch only when predicting: `pixelwise --help` imports this module
    import torch

    from pixelwise.data.io import ImageLike
    from pixelwise.inference.predict import Segmenter

Palette = Sequence[tuple[int, int, int]]


def _palette_array(palette: Palette) -> np.ndarray:
    """`(K, 3)` uint8 array of a palette, checked."""
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ConfigError(
            f"palette must be a non-empty sequence of (r, g, b) tuples, got shape {array.shape}; "
            "try pixelwise.data.palette.default_palette(num_classes)"
        )
    if array.min() < 0 or array.max() > 255:
        raise ConfigError(
            f"palette values must lie in 0..255, got {array.min()}..{array.max()}; "
            "try 8-bit colours"
        )
    return array.astype(np.uint8)


def _check_label(label: np.ndarray, num_colours: int) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ConfigError(
            f"label must be an integer (H, W) array, got {label.dtype} {label.shape}; "
            "try model(x).argmax(1)[0].numpy()"
        )
    if label.size and (label.min() < 0 or label.max() >= num_colours):
        raise ConfigError(
            f"label values must lie in 0..{num_colours - 1} (one palette colour each), got "
            f"{label.min()}..{label.max()}; try a palette with {int(label.max()) + 1} colours"
        )
    return label


def colorize(label: np.ndarray, palette: Palette) -> np.ndarray:
    """Colour image `(H, W, 3)` uint8 of an integer label map `(H, W)`: pixel = palette[class]."""
    colours = _palette_array(palette)
    return colours[_check_label(label, len(colours))]


def color_overlay(
    image: np.ndarray, label: np.ndarray, palette: Palette, alpha: float = 0.5
) -> np.ndarray:
    """Blend the class colours over an image: `round((1 - alpha) * image + alpha * colour)`.

    `image` is `(H, W, 3)` uint8 (or `(H, W)` grey, repeated to RGB); `label` is `(H, W)`.
    Returns `(H, W, 3)` uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}; try 0.5")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(
            f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}; "
            "try converting it to 8-bit RGB first"
        )
    colours = colorize(label, palette)
    if colours.shape[:2] != image.shape[:2]:
        raise ConfigError(
            f"label must have the image's size {image.shape[:2]}, got {colours.shape[:2]}; "
            "try predicting on the same image"
        )
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_label_png(label: np.ndarray, path: str | Path, palette: Palette) -> Path:
    """Write a label map `(H, W)` as a palette ("P" mode) PNG whose pixel values are class ids.

    PNG palettes hold at most 256 colours, so class ids must lie in 0..255 (use `.npy` or GeoTIFF
    outputs for more classes). Returns the path written.
    """
    colours = _palette_array(palette)[:256]
    label = _check_label(label, len(colours))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(label.astype(np.uint8))
    png.putpalette(colours.reshape(-1).tolist())
    png.save(path)
    return path


FORMATS = ("png", "overlay", "geojson", "coco", "npy", "geotiff")
TIFF_TILE = 256  # pixels per side of a GeoTIFF/BigTIFF tile
BIGTIFF_BYTES = 2**31  # classic TIFF offsets stop at 4 GiB; switch to BigTIFF well before


def save_geotiff(
    label: np.ndarray, path: str | Path, georef: GeoReference | None = None,
    palette: Palette | None = None,
) -> Path:
    """Write a label map `(H, W)` (array or memmap) as a tiled, deflate-compressed TIFF.

    Tiles of 256x256 let GIS tools and `tifffile` read any window without the whole file;
    files of 2 GiB or more of pixels are written as BigTIFF. With `georef` the file is a
    GeoTIFF (via rasterio, written 256 rows at a time) carrying the input's CRS and transform,
    plus the palette as a colour table when the labels are uint8; without, `tifffile` writes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bigtiff = label.nbytes >= BIGTIFF_BYTES
    if georef is None:
        tifffile.imwrite(path, label, tile=(TIFF_TILE, TIFF_TILE), compression="zlib",
                         bigtiff=bigtiff)
        return path
    rasterio = import_extra("rasterio", "geo")
    from rasterio.windows import Window

    height, width = label.shape
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": label.dtype.name,
        "crs": georef.crs, "transform": rasterio.Affine(*georef.transform), "tiled": True,
        "blockxsize": TIFF_TILE, "blockysize": TIFF_TILE, "compress": "deflate",
        "BIGTIFF": "YES" if bigtiff else "NO",
    }
    with rasterio.open(path, "w", **profile) as dataset:
        for top in range(0, height, TIFF_TILE):
            rows = label[top:top + TIFF_TILE]
            dataset.write(rows, 1, window=Window(0, top, width, len(rows)))
        if palette is not None and label.dtype == np.uint8:
            colours = _palette_array(palette)[:256]
            dataset.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(colours)})
    return path


def write_prediction(
    label: np.ndarray,
    out_stem: str | Path,
    formats: Sequence[str] = ("png",),
    palette: Palette | None = None,
    class_names: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    georef: GeoReference | None = None,
    *,
    min_area: int = 0,
    simplify: float = 0.0,
    source_name: str | None = None,
) -> dict[str, Path]:
    """Write one prediction in each of `formats`; returns `{format: path written}`.

    Files (for `out_stem = out/slide1`): "png" `out/slide1.png` (palette label map), "overlay"
    `out/slide1_overlay.png` (needs `image`, `(H, W, 3)` or `(H, W)` uint8), "geojson"
    `out/slide1.geojson`, "coco" `out/slide1.coco.json` (polygons; `source_name` is the image's
    file name), "npy" `out/slide1.npy`, "geotiff" `out/slide1.tif` (GeoTIFF with `georef`).
    `min_area` (pixels) and `simplify` (pixels) shape the vector outputs (`find_instances`).
    Integer labels are stored as `label_dtype`: uint8 (<= 256 classes) or int16 (`compact_label`).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats must be among {list(FORMATS)}, got {unknown}; try ('png',)")
    if palette is None and ({"png", "overlay"} & set(formats)):
        raise ConfigError("palette must be given for the png and overlay formats, got None; "
                          "try the checkpoint's palette or default_palette(num_classes)")
    if "overlay" in formats and image is None:
        raise ConfigError("image must be given for the overlay format, got None; "
                          "try passing the input image or drop 'overlay'")
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    label = compact_label(label)
    written: dict[str, Path] = {}
    if "png" in formats:
        written["png"] = save_label_png(label, stem.with_name(stem.name + ".png"), palette)
    if "overlay" in formats:
        path = stem.with_name(stem.name + "_overlay.png")
        Image.fromarray(color_overlay(image, label, palette)).save(path)
        written["overlay"] = path
    if "npy" in formats:
        written["npy"] = stem.with_name(stem.name + ".npy")
        np.save(written["npy"], label)
    if "geotiff" in formats:
        written["geotiff"] = save_geotiff(label, stem.with_name(stem.name + ".tif"), georef,
                                          palette)
    if {"geojson", "coco"} & set(formats):
        instances = find_instances(label, min_area=min_area, simplify=simplify)
    if "geojson" in formats:
        written["geojson"] = _write_json(stem.with_name(stem.name + ".geojson"),
                                         to_geojson(instances, class_names, georef))
    if "coco" in formats:
        coco = to_coco(instances, *label.shape, class_names=class_names,
                       file_name=source_name or stem.name + ".png")
        written["coco"] = _write_json(stem.with_name(stem.name + ".coco.json"), coco)
    return written


def compact_label(label: np.ndarray) -> np.ndarray:
    """The label map in `label_dtype` of its classes, as `predict_tiled` returns it, so that an
    int64 argmax does not make `.npy` and GeoTIFF files eight times larger. A map already uint8
    or int16, or holding values that are not class ids int16 can store (negative, or above
    32767), is returned as it is."""
    label = np.asarray(label) if not isinstance(label, np.ndarray) else label
    if label.dtype in (np.uint8, np.int16) or label.size == 0:
        return label
    low, high = int(label.min()), int(label.max())
    if low >= 0 and high <= np.iinfo(np.int16).max:
        return label.astype(label_dtype(high + 1))
    return label


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def predict_to_files(segmenter: Segmenter, image: ImageLike, out_stem: str | Path,
                     formats: tuple[str, ...] = ("png", "overlay"),
                     source_name: str | None = None, min_area: int = 0,
                     simplify: float = 0.0) -> dict[str, Path]:
    """Predict ``image`` and write it in ``formats`` via :func:`write_prediction`
    (``<stem>.png`` palette label map, ``<stem>_overlay.png`` colours over the image, ...).

    A GeoTIFF input passes its CRS and transform on to the geotiff and geojson outputs.
    """
    from pixelwise.data.io import to_float_chw

    georef = None
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in (".tif", ".tiff") and (
            {"geotiff", "geojson"} & set(formats)):
        georef = read_georeference(image)

    chw = to_float_chw(image, segmenter.meta.in_channels)
    label = segmenter.predict(chw)
    return write_prediction(label, out_stem, formats, palette=segmenter.palette,
                            class_names=segmenter.classes, image=display_image(chw),
                            georef=georef, min_area=min_area, simplify=simplify,
                            source_name=source_name)


def display_image(chw: torch.Tensor) -> np.ndarray:
    """A float ``(C, H, W)`` image in [0, 1] as 8-bit for display (overlays, figures):
    ``(H, W)`` grey for one band, else ``(H, W, 3)`` RGB from the first three bands."""
    shown = (chw.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return shown[..., 0] if shown.shape[2] == 1 else shown[..., :3]
