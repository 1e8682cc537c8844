"""Figures: files are written, readable PNGs of a sensible size, NaN handled."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pixelwise.plots import (
    confusion_matrix_png,
    per_class_iou_png,
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
