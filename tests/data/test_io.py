"""Image decoding shared by datasets and prediction: one channel rule, every input kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data.io import fit_channels, to_float_chw
from pixelwise.errors import DataError

PIXELS = np.array([[[0, 51, 255], [255, 102, 0]]], np.uint8)  # (H, W, C) = (1, 2, 3)


def test_grey_for_three_channels_is_repeated():
    grey = PIXELS[..., :1]
    np.testing.assert_array_equal(fit_channels(grey, 3, "g.png"), np.repeat(grey, 3, axis=2))


def test_rgba_for_three_channels_loses_its_alpha():
    rgba = np.concatenate([PIXELS, np.full((1, 2, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(fit_channels(rgba, 3, "a.png"), PIXELS)


def test_other_mismatches_name_the_source_and_the_counts():
    with pytest.raises(DataError, match=r"rgb\.png: images must have 1 channel\(s\), got 3"):
        fit_channels(PIXELS, 1, "rgb.png")


def test_every_input_kind_decodes_to_the_same_float_image(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "x.png")
    expected = torch.tensor([[[0.0, 1.0]], [[0.2, 0.4]], [[1.0, 0.0]]])
    tensor = torch.from_numpy(PIXELS).permute(2, 0, 1)
    for image in (PIXELS, Image.fromarray(PIXELS), tmp_path / "x.png", str(tmp_path / "x.png"),
                  tensor, tensor.float() / 255):
        torch.testing.assert_close(to_float_chw(image, 3), expected)


def test_a_float_tensor_is_used_as_it_is():
    tensor = torch.rand(3, 4, 5)
    assert to_float_chw(tensor, 3).data_ptr() == tensor.data_ptr()


def test_a_file_that_does_not_fit_is_named(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: images must have 1 channel"):
        to_float_chw(tmp_path / "rgb.png", 1)
