"""Segmenter: input kinds, normalisation with the checkpoint's statistics, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pixelwise.checkpoint import ModelMeta
from pixelwise.errors import DataError
from pixelwise.inference.predict import Segmenter

MEAN, STD = [0.2, 0.4, 0.6], [0.5, 0.25, 0.125]
WEIGHT = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]], np.float32)  # 2 classes x 3 channels


def _pointwise_segmenter(**options) -> Segmenter:
    """A 1x1 convolution: each pixel's logits depend on that pixel only."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(WEIGHT)[:, :, None, None])
    meta = ModelMeta(name="pointwise", num_classes=2, options={}, classes=["a", "b"],
                     palette=[(0, 0, 0), (255, 255, 255)], ignore_index=255, in_channels=3,
                     mean=MEAN, std=STD)
    return Segmenter(conv, meta, device="cpu", **options)


def _expected_proba(image_hwc_uint8: np.ndarray) -> np.ndarray:
    x = (image_hwc_uint8.astype(np.float64) / 255 - MEAN) / STD
    logits = np.einsum("kc,hwc->khw", WEIGHT, x)
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)


def test_predict_proba_normalises_with_the_checkpoint_statistics(image):
    proba = _pointwise_segmenter().predict_proba(image)
    assert proba.shape == (2, 20, 28)
    np.testing.assert_allclose(proba, _expected_proba(image), atol=1e-5)


def test_every_input_kind_gives_the_same_result(image, tmp_path):
    segmenter = _pointwise_segmenter()
    Image.fromarray(image).save(tmp_path / "x.png")
    expected = _expected_proba(image)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    for kind in (image, Image.fromarray(image), tmp_path / "x.png", str(tmp_path / "x.png"),
                 tensor, tensor.float() / 255):
        np.testing.assert_allclose(segmenter.predict_proba(kind), expected, atol=1e-5)
    clear = np.abs(expected[1] - expected[0]) > 1e-4  # leave out float near-ties
    np.testing.assert_array_equal(segmenter.predict(image)[clear], expected.argmax(0)[clear])


def test_large_images_are_tiled_with_the_same_result(image):
    whole = _pointwise_segmenter().predict_proba(image)
    tiled = _pointwise_segmenter(tile_above=16, tile=16, overlap=4).predict_proba(image)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_wrong_channel_count_is_a_data_error():
    with pytest.raises(DataError, match=r"must have 3 channel\(s\), got 2"):
        _pointwise_segmenter().predict(np.zeros((8, 8, 2), np.uint8))


def test_tiled_labels_equal_whole_image_labels(image):
    whole = _pointwise_segmenter().predict_proba(image)
    tiled = _pointwise_segmenter(tile_above=16, tile=16, overlap=4).predict(image)
    clear = np.abs(whole[1] - whole[0]) > 1e-4
    assert tiled.dtype == np.uint8
    np.testing.assert_array_equal(tiled[clear], whole.argmax(0)[clear])


@pytest.mark.parametrize("options", [{}, {"tile_above": 16, "tile": 16, "overlap": 4}],
                         ids=["whole", "tiled"])
def test_predict_with_proba_gives_both_from_one_pass(image, options):
    segmenter = _pointwise_segmenter(**options)
    label, proba = segmenter.predict_with_proba(image)
    expected = _expected_proba(image)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    clear = np.abs(expected[1] - expected[0]) > 1e-4
    assert label.dtype == np.uint8 and label.shape == (20, 28)
    np.testing.assert_array_equal(label[clear], expected.argmax(0)[clear])


def test_valid_unet_images_are_tiled_and_equal_the_mirror_extended_network():
    from pixelwise.models import MirrorExtended, build

    torch.manual_seed(0)
    options = {"in_channels": 3, "base_channels": 4, "depth": 2, "padding": "valid"}
    model = build("unet", 2, **options).eval()
    meta = ModelMeta(name="unet", num_classes=2, options=options, classes=["a", "b"],
                     palette=[(0, 0, 0), (255, 255, 255)], ignore_index=255, in_channels=3,
                     mean=MEAN, std=STD)
    # far below tile_above: tiled because the model's geometry says its output is smaller;
    # tile 64 -> output 24, tiles on multiples of align 4, so they agree with the whole image
    image = np.random.default_rng(1).integers(0, 256, (21, 27, 3), dtype=np.uint8)
    proba = Segmenter(model, meta, device="cpu", tile=64, overlap=8).predict_proba(image)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None])
    x = x / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        expected = MirrorExtended(model)(x[None]).softmax(1)[0].numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_a_list_of_images_gives_a_list_of_labels_with_same_size_images_batched():
    segmenter = _pointwise_segmenter(tile_above=30, tile=16, overlap=4)
    batches = []
    segmenter.model.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size, dtype=np.uint8)
              for size in ((12, 20, 3), (9, 9, 3), (12, 20, 3), (40, 20, 3), (12, 20, 3))]
    labels = segmenter.predict(images, batch_size=2)
    assert [label.shape for label in labels] == [image.shape[:2] for image in images]
    for image, label in zip(images, labels, strict=True):
        proba = _expected_proba(image)
        clear = np.abs(proba[1] - proba[0]) > 1e-4
        np.testing.assert_array_equal(label[clear], proba.argmax(0)[clear])
    # 40x20 (above tile_above) first, in tiles; then the three 12x20 in batches of 2 and 1,
    # then 9x9 alone
    assert batches[-3:] == [2, 1, 1]


def test_repr_names_the_model_classes_and_device():
    text = repr(_pointwise_segmenter(tta_flips=("h",)))
    assert text == ("Segmenter(pointwise, 2 classes [a, b], 3 input channels, device cpu, backend "
                    "torch, tiles of 512 px overlapping 64 px above 1024 px, tta flips ('h',) scales (1.0,))")
