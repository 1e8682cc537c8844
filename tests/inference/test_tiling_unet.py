"""Tiled U-Net inference against the network run once on the whole image (issue 6 checks)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import softmax

from pixelwise.inference.tiling import predict_tiled
from pixelwise.models import build, unet_valid_output_size

DEPTH = 3  # total downsampling 2**3 = 8
SHARED_DATA = Path(os.environ.get(
    "PIXELWISE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
ISBI_SLICE = SHARED_DATA / "isbi2012" / "train" / "image" / "0.png"


def unet(padding: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("unet", 3, in_channels=1, base_channels=8, depth=DEPTH, padding=padding).eval()


def whole(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return softmax(model(torch.from_numpy(image)[None])[0].numpy(), axis=0)


@pytest.mark.parametrize("size", [(150, 133), (137, 161)])
def test_same_unet_tiled_argmax_equals_whole_image(size):
    model = unet("same")
    image = np.random.default_rng(0).normal(size=(1, *size)).astype(np.float32)
    # an output pixel of this U-Net depends on inputs up to 46 px away (measured by gradients);
    # overlap 48 >= that margin
    label = predict_tiled(model, image, 96, 48, 4, align=2**DEPTH)
    agreement = (label == whole(model, image).argmax(0)).mean()
    assert agreement >= 0.999


def test_valid_unet_overlap_tile_equals_network_on_mirror_padded_whole_image():
    model = unet("valid")
    height, width, tile = 45, 59, 108
    out = unet_valid_output_size(tile, DEPTH)  # 20; margin (108 - 20) / 2 = 44
    margin = (tile - out) // 2
    image = np.random.default_rng(1).normal(size=(1, height, width)).astype(np.float32)
    # overlap 0 and align 8: output tiles step by 16, so every tile keeps the pooling grid
    label, proba = predict_tiled(model, image, tile, 0, 4, align=2**DEPTH, return_proba=True)

    # whole-image reference: the smallest valid input (tile + 8k) whose output covers the image
    k_h, k_w = -(-(height - out) // 8), -(-(width - out) // 8)
    size_h, size_w = tile + 8 * k_h, tile + 8 * k_w
    padded = np.pad(
        image,
        ((0, 0), (margin, size_h - margin - height), (margin, size_w - margin - width)),
        mode="reflect",
    )
    expected = whole(model, padded)[:, :height, :width]
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(0))


def test_valid_unet_tiles_are_planned_from_its_geometry_with_one_pass_per_batch():
    model = unet("valid")
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(None))
    # tile 108 -> output 20, overlap 0, align 8: output tiles step by 16, 3 rows x 4 columns over
    # 45 x 59; a row's 4 tiles are one batch of 4, so 3 passes and no probe
    label = predict_tiled(model, np.zeros((1, 45, 59), np.float32), 108, 0, 4, align=2**DEPTH)
    assert label.shape == (45, 59)
    assert len(calls) == 3


@pytest.mark.shared_data
@pytest.mark.skipif(not ISBI_SLICE.is_file(), reason="needs ../shared/data/isbi2012 "
                    "(or PIXELWISE_SHARED_DATA)")
def test_same_unet_tiled_equals_whole_on_a_real_em_slice():
    with Image.open(ISBI_SLICE) as png:
        image = np.asarray(png, np.float32)[None, :301, :277] / 255  # odd crop of 512x512
    model = unet("same")
    label = predict_tiled(model, image, 128, 48, 4, align=2**DEPTH)
    assert (label == whole(model, image).argmax(0)).mean() >= 0.999
