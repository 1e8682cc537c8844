"""Figures: files are written, readable PNGs of a sensible size, NaN handled."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pixelwise.plots import (
    confusion_matrix_png,
    per_class_iou_png,
    prediction_grid_png,
    row_normalise,
    training_curves_png,
)


def _is_png(path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 200 and image.height > 200


def test_confusion_matrix_with_an_absent_class(tmp_path):
    path = confusion_matrix_png([[5, 1, 0], [0, 0, 0], [2, 0, 8]], ["a", "b", "c"],
                                tmp_path / "cm.png")
    assert _is_png(path)


def test_per_class_iou_with_nan(tmp_path):
    assert _is_png(per_class_iou_png([0.5, math.nan, 1.0], ["a", "b", "c"], tmp_path / "iou.png"))


def test_training_curves_skip_epochs_without_validation(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,train_loss,mean_iou\n1,1.5,\n2,1.0,0.4\n3,0.8,\n4,0.6,0.7\n")
    path = training_curves_png(csv, tmp_path / "curves.png")
    assert _is_png(path)


def test_row_normalise_by_hand():
    expected = [[5 / 6, 1 / 6, 0], [0, 0, 0], [0.2, 0, 0.8]]
    np.testing.assert_allclose(row_normalise([[5, 1, 0], [0, 0, 0], [2, 0, 8]]), expected)


def test_prediction_grid_draws_classes_in_their_palette_colours(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    target = np.zeros((16, 16), np.int64)
    target[:, 8:] = 1
    target[0, 0] = 255  # ignored: drawn black
    path = prediction_grid_png([image, image], [target, target], [target, 1 - target.clip(0, 1)],
                               [(0, 0, 0), (0, 200, 0)], ["background", "thing"],
                               tmp_path / "grid.png", ignore_index=255)
    assert _is_png(path)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    assert ((pixels == (0, 200, 0)).all(1)).sum() > 100  # the 'thing' colour is drawn
