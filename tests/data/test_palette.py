"""default_palette is the Pascal VOC colour map."""

import pytest

from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette


def test_voc_colours_of_known_classes():
    # From the VOC 2012 devkit: 0 background, 1 aeroplane, 15 person, 20 tv/monitor.
    colours = default_palette(21)
    assert colours[0] == (0, 0, 0)
    assert colours[1] == (128, 0, 0)
    assert colours[15] == (192, 128, 128)
    assert colours[20] == (0, 64, 128)


def test_256_colours_are_distinct():
    assert len(set(default_palette(256))) == 256


def test_dataset_info_refuses_ignore_index_that_is_a_class():
    with pytest.raises(ValueError, match="ignore_index must not be a class id"):
        DatasetInfo(classes=["a", "b"], palette=default_palette(2), ignore_index=1)
