"""Sliding-window inference, checked with trivial predictors on odd shapes (the MONAI way) and
against whole-image runs computed independently (numpy padding, scipy softmax)."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.inference.tiling import (
    Span,
    open_tiff,
    predict_tiled,
    reflect_indices,
    tile_spans,
    window_1d,
)
from pixelwise.models import Geometry


def image_chw(channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(channels, height, width)).astype(np.float32)


def whole(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the model run once on the whole (C, H, W) image."""
    with torch.no_grad():
        logits = model(torch.from_numpy(image)[None])[0].numpy()
    return softmax(logits, axis=0)


class Identity(nn.Module):
    def forward(self, x):
        return x


class ValidPoolNet(nn.Module):
    """Valid 3x3 conv, 2x2 max-pool, valid 3x3 conv, 2x nearest upsampling: a one-level valid
    U-Net without the skip. Output = input - 6 per axis (margin 3); needs even (size - 2) >= 6.
    It states no geometry (as a user's own module would not): tests pass VALID_POOL_NET."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, classes, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )

    def forward(self, x):
        return self.body(x)


VALID_POOL_NET = Geometry(align=2, border=3, smallest_input=8)


def test_tile_spans_same_model_end_at_border_by_hand():
    assert tile_spans(10, 4, 3, 1, False) == [Span(0, 4), Span(3, 4), Span(6, 4)]
    # align 2: starts 0, 2, 4 and the last one at (11 - 4) // 2 * 2 = 6, five pixels long
    assert tile_spans(11, 4, 2, 2, False) == [Span(0, 4), Span(2, 4), Span(4, 4), Span(6, 5)]
    assert tile_spans(3, 4, 2, 1, False) == [Span(0, 3)]


def test_tile_spans_valid_model_keep_size_and_run_past_border():
    assert tile_spans(10, 4, 4, 1, True) == [Span(0, 4), Span(4, 4), Span(8, 4)]
    assert tile_spans(3, 4, 4, 1, True) == [Span(0, 4)]


def test_reflect_indices_match_numpy_reflect_padding():
    line = np.arange(5)
    expected = np.pad(line, (7, 9), mode="reflect")  # pads longer than the line: reflects again
    np.testing.assert_array_equal(line[reflect_indices(-7, 14, 5)], expected)
    np.testing.assert_array_equal(reflect_indices(-2, 3, 1), [0, 0, 0, 0, 0])


def test_gaussian_window_by_hand():
    # size 8: sigma 1, distances to the centre 3.5, 2.5, 1.5, 0.5, ...
    expected = np.exp(-0.5 * np.array([3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5]) ** 2)
    np.testing.assert_allclose(window_1d(8, False, False, "gaussian"), expected, rtol=1e-6)
    # size 16: sigma 2, the outermost exp(-0.5 * 3.75^2) = 8.8e-4 is clipped to 1e-3
    assert window_1d(16, False, False, "gaussian")[0] == np.float32(1e-3)


def test_window_is_flat_on_the_image_border_side():
    weights = window_1d(8, False, True, "gaussian")
    np.testing.assert_allclose(weights[:4], np.exp(-0.5 * np.array([3.5, 2.5, 1.5, 0.5]) ** 2))
    np.testing.assert_array_equal(weights[4:], 1.0)
    np.testing.assert_array_equal(window_1d(5, False, False, "constant"), 1.0)


@pytest.mark.parametrize("window", ["gaussian", "constant"])
def test_identity_model_returns_softmax_of_input_on_odd_shape(window):
    image = image_chw(3, 61, 77)
    label, proba = predict_tiled(Identity(), image, 16, 5, 3, return_proba=True, window=window)
    np.testing.assert_allclose(proba, softmax(image, axis=0), atol=1e-6)
    np.testing.assert_array_equal(label, image.argmax(0))
    assert label.dtype == np.uint8


def test_array_layouts_and_tensor_give_the_same_labels():
    image = image_chw(3, 37, 45, seed=1)
    expected = image.argmax(0)
    for layout in (image, image.transpose(1, 2, 0), torch.from_numpy(image)):
        np.testing.assert_array_equal(predict_tiled(Identity(), layout, 16, 4), expected)


def test_pointwise_model_tiled_equals_whole_image_exactly():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 4, 1)
    image = image_chw(2, 53, 70, seed=2)
    _, proba = predict_tiled(model, image, (24, 20), (6, 3), 2, return_proba=True)
    np.testing.assert_allclose(proba, whole(model, image), atol=1e-5)


def test_conv_stack_tiled_argmax_matches_whole_image():
    torch.manual_seed(0)
    # receptive-field margin 3 (three 3x3 convs). Gaussian blending still gives tile edges a
    # little weight, so the overlap needs slack: at overlap 8 about 0.1% of pixels flip (near
    # ties of a random network), at overlap 12 about 0.03%
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    image = image_chw(1, 67, 91, seed=3)
    label = predict_tiled(model, image, 24, 12, 4)
    agreement = (label == whole(model, image).argmax(0)).mean()
    assert agreement >= 0.999


def test_valid_model_overlap_tile_equals_network_on_mirror_padded_image():
    model = ValidPoolNet(2, 3).eval()
    height, width, margin = 45, 59, 3
    image = image_chw(2, height, width, seed=4)
    tile = 20  # output 14 per tile; align 2 keeps the pooling grid; stride 14, tiles abut
    label, proba = predict_tiled(model, image, tile, 0, 4, align=2, geometry=VALID_POOL_NET,
                                 return_proba=True)
    # whole-image reference: mirror by the margin, more at the bottom/right for an even size
    padded = np.pad(image, ((0, 0), (margin, margin + 1), (margin, margin + 1)), mode="reflect")
    expected = whole(model, padded)[:, :height, :width]
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(0))


def test_valid_model_abutting_tiles_in_paper_scheme_cover_border_by_mirroring():
    model = ValidPoolNet(1, 2).eval()
    image = image_chw(1, 14, 14, seed=5)  # exactly one 14x14 output tile
    proba = predict_tiled(model, image, 20, 0, return_proba=True, window="constant",
                          geometry=VALID_POOL_NET)[1]
    padded = np.pad(image, ((0, 0), (3, 3), (3, 3)), mode="reflect")
    np.testing.assert_allclose(proba, whole(model, padded), atol=1e-6)


def test_writes_into_preallocated_memmap(tmp_path):
    image = image_chw(3, 40, 33, seed=6)
    out = np.lib.format.open_memmap(tmp_path / "label.npy", "w+", np.uint8, (40, 33))
    result = predict_tiled(Identity(), image, 16, 4, out=out)
    assert result is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "label.npy"), image.argmax(0))


def test_reads_memmapped_tiff(tmp_path):
    import tifffile

    image = (np.random.default_rng(7).random((50, 41, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", image)
    lazy = open_tiff(tmp_path / "big.tif")
    assert isinstance(lazy, np.memmap)
    label = predict_tiled(Identity(), lazy, 16, 4, preprocess=lambda x: x / 255)
    np.testing.assert_array_equal(label, image.transpose(2, 0, 1).astype(np.float32).argmax(0))


def test_more_than_256_classes_gives_int16():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 300, 1)
    image = image_chw(1, 9, 11)
    label = predict_tiled(model, image, 8, 2)
    assert label.dtype == np.int16
    np.testing.assert_array_equal(label, whole(model, image).argmax(0))


def test_rejects_overlap_not_smaller_than_tile():
    with pytest.raises(ConfigError, match="overlap in"):
        predict_tiled(Identity(), image_chw(1, 8, 8), 8, 8)


def test_rejects_wrong_number_of_classes():
    with pytest.raises(ConfigError, match="num_classes=5"):
        predict_tiled(Identity(), image_chw(3, 8, 8), 8, 2, num_classes=5)


def test_float_buffers_do_not_grow_with_image_height():
    import tracemalloc

    def peak_bytes(height: int) -> int:
        image = image_chw(3, height, 64, seed=8)
        out = np.empty((height, 64), np.uint8)
        tracemalloc.start()
        predict_tiled(Identity(), image, 32, 8, 4, out=out)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short, tall = peak_bytes(128), peak_bytes(2048)
    # a whole-image float accumulator for the tall image alone would be 3 * 2048 * 64 * 4 bytes
    assert tall < 1.5 * short
    assert tall < 3 * 2048 * 64 * 4 / 4


def test_rejects_tile_smaller_than_alignment():
    with pytest.raises(ConfigError, match="at least align=32"):
        predict_tiled(Identity(), image_chw(1, 40, 40), 16, 4, align=32)


def test_model_runs_once_per_batch_of_tiles_and_never_to_probe():
    model = Identity()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(None))
    # 37 x 45, tile 16, overlap 4: rows start 0, 12, 21 and columns 0, 12, 24, 29 (all 16 wide);
    # 4 tiles per row in batches of 3 make 2 passes a row, 6 in all
    predict_tiled(model, image_chw(3, 37, 45), 16, 4, batch_size=3)
    assert len(calls) == 6


def test_valid_model_stating_no_geometry_raises_config_error_naming_the_fix():
    with pytest.raises(ConfigError, match=r"must be \(20, 20\) .* got \(14, 14\); try geometry="):
        predict_tiled(ValidPoolNet(1, 2), image_chw(1, 30, 30), 20, 4)


def test_tile_the_geometry_rejects_raises_config_error_naming_the_nearest():
    with pytest.raises(ConfigError, match="got 21; try 22"):
        predict_tiled(ValidPoolNet(1, 2), image_chw(1, 30, 30), 21, 0, geometry=VALID_POOL_NET)
