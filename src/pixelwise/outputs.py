"""Prediction files people use downstream: palette PNGs, colour overlays, GeoTIFF/BigTIFF,
NumPy arrays, GeoJSON and COCO annotations, and for two-class models a TIFF of separated cells
(`write_prediction`, for `pixelwise predict --format`; `predict_to_files` predicts one image
with a `Segmenter` and writes it, atomically).

The files of one prediction are named by `output_paths` (`<stem>.png`, `<stem>_overlay.png`, ...).
`write_prediction_atomically` writes them into a temporary folder beside their destination and
renames them into place, so that a file there is always whole, whatever kills the process.

A label map is an integer array `(H, W)` of class ids. A palette is a sequence of `(r, g, b)`
tuples, one per class id, as in `DatasetInfo.palette`. The palette PNG stores the class ids
themselves as pixel values (PNG "P" mode), so `numpy.asarray(PIL.Image.open(path))` gives the
label map back exactly while image viewers show the colours.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from pixelwise.choices import FORMATS, OUTPUT_SUFFIXES
from pixelwise.errors import ConfigError, import_extra
from pixelwise.labels import label_dtype
from pixelwise.postprocess import (
    GeoReference,
    class_name,
    find_instances,
    read_georeference,
    to_coco,
    to_geojson,
    watershed_cells,
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


# Vivid colours (matplotlib's tab10 without its grey) that take the place of black, white and
# grey palette colours in overlays: blended over a grey image those leave it grey.
OVERLAY_COLOURS = ((255, 127, 14), (31, 119, 180), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                   (23, 190, 207), (227, 119, 194), (188, 189, 34), (140, 86, 75))
MIN_CHROMA = 64  # max - min channel below which a colour counts as grey


def overlay_palette(palette: Palette, background: Sequence[int] = ()) -> list[tuple[int, int, int]]:
    """The colours an overlay tints the classes with, one per class: the palette's, except that
    each grey one (black, white, greys: max - min channel < 64, such as ISBI's black membrane and
    white cells, or CamVid's grey Sky) of a class not in `background` is replaced by the next of
    `OVERLAY_COLOURS` the palette does not use. Background classes keep their colour (overlays
    leave them untinted)."""
    colours = [tuple(int(v) for v in c) for c in _palette_array(palette)]
    spare = (c for c in OVERLAY_COLOURS if c not in colours)
    for class_id, colour in enumerate(colours):
        if class_id not in background and max(colour) - min(colour) < MIN_CHROMA:
            colours[class_id] = next(spare, OVERLAY_COLOURS[class_id % len(OVERLAY_COLOURS)])
    return colours


def color_overlay(
    image: np.ndarray, label: np.ndarray, palette: Palette, alpha: float = 0.5,
    background: Sequence[int] = (),
) -> np.ndarray:
    """Blend the class colours over an image: `round((1 - alpha) * image + alpha * colour)`,
    except on pixels of the `background` classes, which keep the image's own values.

    `image` is `(H, W, 3)` uint8 (or `(H, W)` grey, repeated to RGB); `label` is `(H, W)`.
    Returns `(H, W, 3)` uint8. `overlay_palette` gives colours that show on grey images.
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
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    untinted = np.isin(label, list(background))
    blended[untinted] = image[untinted]
    return blended


def overlay_legend(label: np.ndarray, colours: Palette, class_names: Sequence[str] | None = None,
                   background: Sequence[int] = ()) -> list[dict]:
    """What an overlay shows, one entry per class present in `label` (by class id):
    `{"class_id", "name", "colour"}` with colour `"#rrggbb"`, or None for untinted background."""
    entries = []
    for class_id in np.flatnonzero(np.bincount(np.asarray(label).ravel())).tolist():
        colour = None if class_id in background else "#{:02x}{:02x}{:02x}".format(
            *colours[class_id])
        entries.append({"class_id": class_id, "name": class_name(class_id, class_names),
                        "colour": colour})
    return entries


def save_legend_png(entries: Sequence[dict], path: str | Path) -> Path:
    """Draw `overlay_legend` entries as a small PNG: a swatch and the class name per row (an
    empty swatch and "not tinted" for background)."""
    row, swatch = 20, 14
    texts = [e["name"] + (" (not tinted)" if e["colour"] is None else "") for e in entries]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = 2 * row + max((int(measure.textlength(t)) for t in texts), default=0)
    legend = Image.new("RGB", (width, row * max(len(entries), 1) + 4), "white")
    draw = ImageDraw.Draw(legend)
    for index, (entry, text) in enumerate(zip(entries, texts, strict=True)):
        top = 3 + index * row
        draw.rectangle((4, top, 4 + swatch, top + swatch), fill=entry["colour"], outline="black")
        draw.text((row + 6, top + 1), text, fill="black")
    legend.save(path)
    return Path(path)


def save_overlay_png(image: np.ndarray, label: np.ndarray, stem: str | Path, palette: Palette,
                     class_names: Sequence[str] | None = None,
                     background: Sequence[int] = ()) -> tuple[Path, Path]:
    """Write `<stem>_overlay.png` (`overlay_palette` colours blended over `image`, background
    untinted, the legend as JSON in the PNG text chunk "legend") and its legend image
    `<stem>_legend.png`. Returns both paths."""
    colours = overlay_palette(palette, background)
    entries = overlay_legend(label, colours, class_names, background)
    text = PngInfo()
    text.add_text("legend", json.dumps(entries))
    stem = Path(stem)
    path = stem.with_name(stem.name + "_overlay.png")
    Image.fromarray(color_overlay(image, label, colours, background=background)).save(
        path, pnginfo=text)
    return path, save_legend_png(entries, stem.with_name(stem.name + "_legend.png"))


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


_FILE_SUFFIXES = {**OUTPUT_SUFFIXES, "legend": "_legend.png"}  # an overlay comes with its legend
PARTIAL_PREFIX = ".pixelwise-partial-"  # temporary folders of write_prediction_atomically
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
    background: Sequence[int] = (),
    min_area: int = 0,
    simplify: float = 0.0,
    source_name: str | None = None,
    coco_segmentation: Literal["auto", "rle"] = "auto",
    cells: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write one prediction in each of `formats`; returns `{format: path written}`.

    Files (for `out_stem = out/slide1`): "png" `out/slide1.png` (palette label map), "overlay"
    `out/slide1_overlay.png` and `out/slide1_legend.png` (needs `image`, `(H, W, 3)` or `(H, W)`
    uint8; `save_overlay_png`, returned as "overlay" and "legend"), "geojson"
    `out/slide1.geojson`, "coco" `out/slide1.coco.json` (`source_name` is the image's file name;
    `coco_segmentation` as `to_coco`'s `segmentation`: "auto" polygons, RLE for objects with
    holes; "rle" RLE for all), "npy" `out/slide1.npy`, "geotiff" `out/slide1.tif` (GeoTIFF with
    `georef`), "cells" `out/slide1_cells.tif` (the `cells` map `predicted` gives: one id per
    cell, 0 none; uint16, or uint32 beyond 65535 cells).
    `background` (class ids: the model's `ModelMeta.background`; untinted in the overlay),
    `min_area` (pixels) and `simplify` (pixels) shape the vector outputs (`find_instances`).
    Integer labels are stored as `label_dtype`: uint8 (<= 256 classes) or int16 (`compact_label`).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats must be among {list(FORMATS)}, got {unknown}; try ('png',)")
    if palette is None and ({"png", "overlay"} & set(formats)):
        raise ConfigError("palette must be given for the png and overlay formats, got None; "
                          "try the checkpoint's palette or default_palette(num_classes)")
    if "cells" in formats and cells is None:
        raise ConfigError("cells must be given for the cells format, got None; try "
                          "predicted(segmenter, image, formats)")
    if "overlay" in formats and image is None:
        raise ConfigError("image must be given for the overlay format, got None; "
                          "try passing the input image or drop 'overlay'")
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    label = compact_label(label)
    paths = output_paths(stem, formats)
    written: dict[str, Path] = {}
    if "png" in formats:
        written["png"] = save_label_png(label, paths["png"], palette)
    if "overlay" in formats:
        written["overlay"], written["legend"] = save_overlay_png(image, label, stem, palette,
                                                                 class_names, background)
    if "npy" in formats:
        written["npy"] = paths["npy"]
        np.save(written["npy"], label)
    if "geotiff" in formats:
        written["geotiff"] = save_geotiff(label, paths["geotiff"], georef,
                                          palette)
    if "cells" in formats:
        dtype = np.uint16 if int(cells.max(initial=0)) <= np.iinfo(np.uint16).max else np.uint32
        written["cells"] = paths["cells"]
        tifffile.imwrite(written["cells"], cells.astype(dtype), compression="zlib")
    if {"geojson", "coco"} & set(formats):
        instances = find_instances(label, background=background, min_area=min_area,
                                   simplify=simplify)
    if "geojson" in formats:
        written["geojson"] = _write_json(paths["geojson"],
                                         to_geojson(instances, class_names, georef))
    if "coco" in formats:
        coco = to_coco(instances, *label.shape, class_names=class_names,
                       file_name=source_name or stem.name + ".png", segmentation=coco_segmentation)
        written["coco"] = _write_json(paths["coco"], coco)
    return written


def output_paths(out_stem: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """``{format: file}`` that :func:`write_prediction` writes for ``out_stem`` (see there)."""
    stem = Path(out_stem)
    files = [*formats, *(["legend"] if "overlay" in formats else [])]
    return {f: stem.with_name(stem.name + _FILE_SUFFIXES[f]) for f in dict.fromkeys(files)}


def write_prediction_atomically(label: np.ndarray, out_stem: str | Path,
                                formats: Sequence[str] = ("png",), **options) -> dict[str, Path]:
    """:func:`write_prediction` (same arguments), each file appearing whole or not at all.

    The files are written into a temporary folder (``.pixelwise-partial-*``) beside their
    destination, on the same file system, fsynced, then moved into place with ``os.replace``.
    A process killed meanwhile leaves only that folder, which ``pixelwise predict`` removes when
    run again.
    """
    folder = Path(out_stem).parent
    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=folder))
    try:
        written = write_prediction(label, partial / Path(out_stem).name, formats, **options)
        destination = output_paths(out_stem, list(written))
        for path in written.values():
            _fsync(path)
        for fmt, path in written.items():
            os.replace(path, destination[fmt])
        _fsync(folder)  # the renames themselves
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {fmt: destination[fmt] for fmt in written}


def remove_partial_folders(folder: Path) -> None:
    """Remove what killed runs of :func:`write_prediction_atomically` left in ``folder``."""
    for partial in folder.glob(PARTIAL_PREFIX + "*"):
        shutil.rmtree(partial, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
                     simplify: float = 0.0,
                     background: Sequence[int] | None = None,
                     coco_segmentation: Literal["auto", "rle"] = "auto") -> dict[str, Path]:
    """Predict ``image`` and write it in ``formats`` via :func:`save_prediction`
    (``<stem>.png`` palette label map, ``<stem>_overlay.png`` colours over the image, ...).

    A GeoTIFF input passes its CRS and transform on to the geotiff and geojson outputs.
    ``background`` (class ids) replaces the checkpoint's ``meta.background`` when given.
    """
    from pixelwise.data.io import to_float_chw

    georef = georeference_for(image, formats)
    chw = to_float_chw(image, segmenter.meta.in_channels)
    label, cells = predicted(segmenter, chw, formats)
    return save_prediction(segmenter, label, chw, out_stem, formats,
                           georef=georef, source_name=source_name, min_area=min_area,
                           simplify=simplify, background=background,
                           coco_segmentation=coco_segmentation, cells=cells)


def check_formats_for(num_classes: int, formats: Sequence[str]) -> None:
    """ConfigError when a format cannot be written for a model of ``num_classes`` classes:
    "cells" grows cells of class 1 and needs a two-class model."""
    if "cells" in formats and num_classes != 2:
        raise ConfigError(
            f"the cells format needs a two-class model (cells: class 1), got {num_classes} "
            "classes; try --format geojson or coco for objects of every class")


def predicted(segmenter: Segmenter, chw: torch.Tensor,
              formats: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The label map of the float image ``chw`` and, when ``formats`` has "cells", the cells
    ``watershed_cells`` grows from class 1's probability (None otherwise); both from one pass
    of the model (tiled where ``Segmenter.predict`` would tile)."""
    if "cells" not in formats:
        return segmenter.predict(chw), None
    check_formats_for(segmenter.meta.num_classes, formats)
    label, proba = segmenter.predict_with_proba(chw)
    return label, watershed_cells(proba[1])


def georeference_for(image: ImageLike, formats: Sequence[str]) -> GeoReference | None:
    """The CRS and transform of a GeoTIFF file input when a format can carry them, else None."""
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in (".tif", ".tiff") and (
            {"geotiff", "geojson"} & set(formats)):
        return read_georeference(image)
    return None


def save_prediction(segmenter: Segmenter, label: np.ndarray, chw: torch.Tensor,
                    out_stem: str | Path, formats: Sequence[str], *,
                    georef: GeoReference | None = None, source_name: str | None = None,
                    min_area: int = 0, simplify: float = 0.0,
                    background: Sequence[int] | None = None,
                    coco_segmentation: Literal["auto", "rle"] = "auto",
                    cells: np.ndarray | None = None) -> dict[str, Path]:
    """Write ``segmenter``'s ``label`` map of the image ``chw`` (float ``(C, H, W)`` in [0, 1])
    with its palette, class names and background classes (``background`` None: the
    checkpoint's), and its ``cells`` (:func:`predicted`), atomically
    (:func:`write_prediction_atomically`)."""
    background = segmenter.meta.background if background is None else background
    return write_prediction_atomically(
        label, out_stem, formats, palette=segmenter.palette, class_names=segmenter.classes,
        image=display_image(chw), georef=georef, min_area=min_area, simplify=simplify,
        source_name=source_name, background=background, coco_segmentation=coco_segmentation,
        cells=cells)


def display_image(chw: torch.Tensor) -> np.ndarray:
    """A float ``(C, H, W)`` image in [0, 1] as 8-bit for display (overlays, figures):
    ``(H, W)`` grey for one band, else ``(H, W, 3)`` RGB from the first three bands."""
    shown = (chw.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return shown[..., 0] if shown.shape[2] == 1 else shown[..., :3]
