"""Median-frequency class weights against hand-worked values."""

import pytest

from pixelwise.data.stats import median_frequency_weights
from pixelwise.errors import ConfigError


def test_median_frequency_weights_by_hand():
    # Frequencies 0.1, 0.3, 0.6 (median 0.3); the empty class gets 0.
    assert median_frequency_weights([10, 30, 60, 0]) == pytest.approx([3.0, 1.0, 0.5, 0.0])


def test_median_frequency_weights_with_segnet_image_pixels():
    # Class 1 only in a 100-pixel image of 400: f = 20/100 and 80/400 for class 0 (the median of
    # [0.2, 0.2] is 0.2).
    assert median_frequency_weights([80, 20], image_pixels=[400, 100]) == pytest.approx([1, 1])


def test_median_frequency_weights_refuse_counts_without_a_pixel():
    with pytest.raises(ConfigError, match="not all 0, got \\[0.0, 0.0\\]"):
        median_frequency_weights([0, 0])
