"""Reading a dataset at another resolution: `CamVid(scale=0.5)`, the CPU recipe's 180x240."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data import CamVid, open_dataset
from pixelwise.data.transforms import rescale_pair
from pixelwise.errors import ConfigError


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_camvid_pair(root, height=4, width=6):
    """One val pair: a flat grey image, the mask 2x2 blocks of one class each."""
    blocks = np.arange(height * width // 4).reshape(height // 2, width // 2)
    mask = np.kron(blocks, np.ones((2, 2), dtype=np.int64)).astype(np.uint8)
    write_png(root / "val" / "a.png", np.full((height, width, 3), 100, dtype=np.uint8))
    write_png(root / "valannot" / "a.png", mask)
    return blocks


def test_camvid_scale_half_reads_images_and_masks_at_half_size(tmp_path):
    blocks = write_camvid_pair(tmp_path)
    image, mask = CamVid(tmp_path, "val", scale=0.5)[0]
    assert image.shape == (3, 2, 3) and mask.tolist() == blocks.tolist()
    np.testing.assert_allclose(image.numpy(), 100 / 255, atol=1e-6)


def test_scale_is_a_dataset_option_of_camvid(tmp_path):
    write_camvid_pair(tmp_path)
    assert open_dataset("camvid", tmp_path, "val", scale=0.5)[0][1].shape == (2, 3)


def test_scale_must_be_positive(tmp_path):
    write_camvid_pair(tmp_path)
    with pytest.raises(ConfigError, match="scale must be a positive factor, got 0"):
        CamVid(tmp_path, "val", scale=0)


def test_rescale_pair_keeps_mask_values_and_rounds_the_size():
    image, mask = rescale_pair(torch.rand(1, 5, 7), torch.randint(0, 3, (5, 7)), 0.5)
    assert image.shape == (1, 2, 4) and mask.shape == (2, 4)  # round(2.5) = 2, round(3.5) = 4
    assert set(mask.unique().tolist()) <= {0, 1, 2}
