"""Palette PNG, colour overlay and colorize, checked on hand-worked examples."""

import numpy as np
import pytest
from PIL import Image

from pixelwise.outputs import color_overlay, colorize, save_label_png

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
