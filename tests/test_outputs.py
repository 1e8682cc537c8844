"""Palette PNG, colour overlay and colorize, checked on hand-worked examples."""

import numpy as np
import pytest
from PIL import Image

from pixelwise.errors import ConfigError
from pixelwise.outputs import (
    FORMATS,
    color_overlay,
    colorize,
    compact_label,
    overlay_palette,
    save_geotiff,
    save_label_png,
    write_prediction,
)
from pixelwise.postprocess import GeoReference, read_georeference

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (10, 20, 30)]


def test_label_png_reads_back_as_exact_class_ids(tmp_path):
    label = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.int64)
    path = save_label_png(label, tmp_path / "pred.png", PALETTE)
    with Image.open(path) as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), label)
        assert png.getpalette()[:12] == [0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30]


def test_label_png_rejects_class_without_colour(tmp_path):
    with pytest.raises(ValueError, match="palette with 5 colours"):
        save_label_png(np.array([[4]]), tmp_path / "x.png", PALETTE)


def test_colorize_looks_up_palette():
    label = np.array([[3, 0]])
    np.testing.assert_array_equal(colorize(label, PALETTE), [[[10, 20, 30], [0, 0, 0]]])


def test_overlay_blends_by_hand_on_2x2():
    image = np.array([[[100, 100, 100], [0, 0, 0]], [[255, 255, 255], [50, 60, 70]]], np.uint8)
    label = np.array([[1, 2], [0, 3]])
    # alpha = 0.25: 0.75 * image + 0.25 * colour, rounded
    expected = np.array(
        [
            [[139, 75, 75], [0, 64, 0]],  # 75 + 63.75 = 138.75 -> 139; 0.25 * 255 = 63.75 -> 64
            [[191, 191, 191], [40, 50, 60]],  # 191.25 -> 191; 37.5+2.5=40, 45+5=50, 52.5+7.5=60
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(color_overlay(image, label, PALETTE, alpha=0.25), expected)


def test_overlay_accepts_grey_image():
    out = color_overlay(np.full((1, 1), 200, np.uint8), np.array([[1]]), PALETTE, alpha=0.5)
    np.testing.assert_array_equal(out, [[[228, 100, 100]]])  # (200+255)/2 = 227.5 -> 228


def test_overlay_palette_replaces_greys_of_object_classes():
    isbi = [(0, 0, 0), (255, 255, 255)]  # membrane, cell
    assert overlay_palette(isbi, background=(0,)) == [(0, 0, 0), (255, 127, 14)]
    assert overlay_palette(isbi) == [(255, 127, 14), (31, 119, 180)]
    camvid = [(128, 128, 128), (128, 0, 0), (255, 127, 14)]  # grey Sky; orange already used
    assert overlay_palette(camvid) == [(31, 119, 180), (128, 0, 0), (255, 127, 14)]


def test_overlay_leaves_background_classes_untinted():
    image = np.array([[[100, 100, 100], [10, 20, 30]]], np.uint8)
    out = color_overlay(image, np.array([[1, 0]]), PALETTE, alpha=0.5, background=(0,))
    np.testing.assert_array_equal(out, [[[178, 50, 50], [10, 20, 30]]])


def test_binary_grey_overlay_tints_the_foreground_and_writes_a_legend(tmp_path):
    import json

    label = np.zeros((6, 8), np.uint8)
    label[:, 4:] = 1
    image = np.full((6, 8), 120, np.uint8)  # grey, as an EM slice
    written = write_prediction(label, tmp_path / "slice", ("overlay",), [(0, 0, 0), (255, 255, 255)],
                               ["membrane", "cell"], image=image, background=(0,))
    with Image.open(written["overlay"]) as png:
        overlay, legend = np.asarray(png), json.loads(png.text["legend"])
    np.testing.assert_array_equal(overlay[0, 0], [120, 120, 120])  # membrane: the image itself
    np.testing.assert_array_equal(overlay[0, 7], [188, 124, 67])  # (120 + (255, 127, 14)) / 2
    assert legend == [{"class_id": 0, "name": "membrane", "colour": None},
                      {"class_id": 1, "name": "cell", "colour": "#ff7f0e"}]
    assert written["legend"] == tmp_path / "slice_legend.png"
    with Image.open(written["legend"]) as png:
        swatches = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert (swatches == [255, 127, 14]).all(1).any()  # the cell's swatch


def small_label() -> np.ndarray:
    label = np.zeros((20, 30), np.uint8)
    label[2:8, 3:12] = 1
    label[12:18, 15:27] = 2
    label[14:16, 18:20] = 0  # a hole
    return label


def test_write_prediction_needs_the_cells_for_the_cells_format(tmp_path):
    with pytest.raises(ConfigError, match="cells must be given for the cells format"):
        write_prediction(small_label(), tmp_path / "slide", ["cells"], PALETTE)


def test_write_prediction_writes_every_format(tmp_path):
    import json

    import tifffile

    label = small_label()
    image = np.full((20, 30, 3), 100, np.uint8)
    cells = np.arange(20 * 30).reshape(20, 30) % 7
    written = write_prediction(label, tmp_path / "out" / "slide", FORMATS, PALETTE,
                               ["bg", "a", "b"], image=image, source_name="slide.tif",
                               background=(0,), cells=cells)
    assert sorted(written) == sorted([*FORMATS, "legend"])
    assert written["cells"].name == "slide_cells.tif"
    np.testing.assert_array_equal(tifffile.imread(written["cells"]), cells)
    with Image.open(written["png"]) as png:
        np.testing.assert_array_equal(np.asarray(png), label)
    with Image.open(written["overlay"]) as overlay:
        assert overlay.size == (30, 20)
        np.testing.assert_array_equal(np.asarray(overlay)[3, 4], [178, 50, 50])  # (100+255)/2
    np.testing.assert_array_equal(np.load(written["npy"]), label)
    with tifffile.TiffFile(written["geotiff"]) as tif:
        assert tif.pages[0].is_tiled
        np.testing.assert_array_equal(tif.asarray(), label)
    features = json.loads(written["geojson"].read_text())["features"]
    assert [f["properties"]["class_name"] for f in features] == ["a", "b"]
    assert len(features[1]["geometry"]["coordinates"]) == 2  # exterior + one hole
    coco = json.loads(written["coco"].read_text())
    assert coco["images"][0]["file_name"] == "slide.tif"
    assert [a["area"] for a in coco["annotations"]] == [54, 72 - 4]


def test_geotiff_keeps_crs_and_transform(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    georef = GeoReference("EPSG:32633", (0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0))
    path = save_geotiff(small_label(), tmp_path / "pred.tif", georef, PALETTE)
    assert read_georeference(path) == georef
    with rasterio.open(path) as dataset:
        np.testing.assert_array_equal(dataset.read(1), small_label())
        assert dataset.colormap(1)[1] == (255, 0, 0, 255)


def test_write_prediction_rejects_unknown_format_and_missing_image(tmp_path):
    with pytest.raises(ConfigError, match="formats must be among"):
        write_prediction(small_label(), tmp_path / "x", ("jpeg",), PALETTE)
    with pytest.raises(ConfigError, match="image must be given"):
        write_prediction(small_label(), tmp_path / "x", ("overlay",), PALETTE)


def test_int64_labels_are_stored_compactly(tmp_path):
    written = write_prediction(small_label().astype(np.int64), tmp_path / "p", ("npy",))
    stored = np.load(written["npy"])
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, small_label())
    assert compact_label(np.array([[0, 300]])).dtype == np.int16


def test_plain_tiff_has_no_georeference(tmp_path):
    pytest.importorskip("rasterio")
    path = save_geotiff(small_label(), tmp_path / "plain.tif")
    assert read_georeference(path) is None
