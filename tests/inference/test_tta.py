"""Test-time augmentation, checked against probabilities averaged by hand with scipy."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.inference.tiling import predict_tiled
from pixelwise.inference.tta import DIHEDRAL, TestTimeAugmented, tta_logits, tta_views


class Identity(nn.Module):
    def forward(self, x):
        return x


class ColumnBias(nn.Module):
    """logits[c, y, x] = input[c, y, x] + slope[c] * x: not left-right symmetric."""

    def __init__(self, slope):
        super().__init__()
        self.slope = torch.tensor(slope).view(1, -1, 1, 1)

    def forward(self, x):
        return x + self.slope * torch.arange(x.shape[-1]).float()


def batch(seed=0, shape=(2, 3, 7, 9)):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_flips_of_a_flip_equivariant_model_change_nothing():
    x = batch()
    out = tta_logits(Identity(), x, flips=("h", "v", "hv"))
    np.testing.assert_allclose(out.numpy(), np.log(softmax(x.numpy(), axis=1)), atol=1e-6)


def test_horizontal_flip_averages_probabilities_of_both_views():
    x = batch(1)
    slope = [0.3, -0.2, 0.0]
    out = tta_logits(ColumnBias(slope), x, flips=("h",)).numpy()
    columns = np.arange(9, dtype=np.float32)
    bias = np.array(slope, np.float32)[None, :, None, None]
    plain = softmax(x.numpy() + bias * columns, axis=1)
    # flipped view: the model sees column 8 - x at position x, then is flipped back
    flipped = softmax(x.numpy() + bias * columns[::-1], axis=1)
    np.testing.assert_allclose(np.exp(out), (plain + flipped) / 2, atol=1e-6)


def test_scale_view_is_resized_back_to_input_size():
    # a linear ramp survives bilinear down- (antialiased: a filter twice as wide) and
    # up-sampling (align_corners=False) away from the border, so the half-scale view equals the
    # plain one in the interior
    ramp = torch.arange(16, dtype=torch.float32) / 4
    x = torch.stack([ramp.expand(12, 16), -ramp.expand(12, 16)])[None]
    out = tta_logits(Identity(), x, flips=(), scales=(0.5, 1.0))
    assert out.shape == x.shape
    expected = np.log(softmax(x.numpy(), axis=1))
    np.testing.assert_allclose(out.numpy()[..., 4:-4], expected[..., 4:-4], atol=1e-5)


def test_a_smaller_scale_shows_the_model_what_a_dataset_read_at_that_scale_holds():
    # the half-scale view is the image as CamVid's scale=0.5 reads it (antialiased bilinear),
    # so a model trained on half-size images sees the same pixels at inference
    from pixelwise.data.transforms import rescale_pair

    seen = []

    def model(x):
        seen.append(x)
        return x

    image = torch.rand(3, 36, 48)
    tta_logits(model, image[None], flips=(), scales=(0.5,))
    expected, _ = rescale_pair(image, torch.zeros(36, 48, dtype=torch.int64), 0.5)
    np.testing.assert_allclose(seen[0][0].numpy(), expected.numpy(), atol=1e-6)
    checkerboard = (torch.arange(48)[None, :] + torch.arange(36)[:, None]) % 2
    tta_logits(model, checkerboard.float().expand(1, 3, 36, 48), flips=(), scales=(0.5,))
    # no aliasing of the pattern (away from the border, where the filter is cut)
    np.testing.assert_allclose(seen[1][..., 1:-1, 1:-1].numpy(), 0.5, atol=1e-6)


def test_one_view_gives_the_views_logits_resized_with_the_same_softmax():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 12, 16)
    conv = nn.Conv2d(4, 3, 3, padding=1).eval()
    with torch.no_grad():
        one = tta_logits(conv, x, flips=(), scales=(0.5,))
        shrunk = torch.nn.functional.interpolate(x, size=(6, 8), mode="bilinear",
                                                 align_corners=False, antialias=True)
        expected = torch.nn.functional.interpolate(conv(shrunk), size=(12, 16), mode="bilinear",
                                                   align_corners=False)
        # the same as averaging one view's probabilities: the two-scale path at one scale
        averaged = tta_logits(conv, x, flips=(), scales=(0.5, 0.5))
    np.testing.assert_allclose(one.numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(one.softmax(1).numpy(), averaged.exp().numpy(), atol=1e-6)


def test_wrapped_model_plugs_into_tiled_inference():
    image = batch(2, (1, 3, 30, 41))[0]
    model = TestTimeAugmented(ColumnBias([0.0, 0.0, 0.0]), flips=("h", "v"))
    np.testing.assert_array_equal(predict_tiled(model, image, 16, 4), image.numpy().argmax(0))


def test_rejects_unknown_flip_and_scale_on_valid_model():
    with pytest.raises(ConfigError, match="flips must be among"):
        tta_logits(Identity(), batch(), flips=("x",))

    def valid(x):
        return x[..., 1:-1, 1:-1]

    with pytest.raises(ConfigError, match="scales other than 1.0"):
        tta_logits(valid, batch(), flips=(), scales=(0.5,))


class PositionBias(nn.Module):
    """logits[c, y, x] = input[c, y, x] + a[c] * y + b[c] * x: neither flip- nor
    rotation-symmetric, and it takes any size (so a transposed view too)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = (torch.tensor(v).view(1, -1, 1, 1) for v in (a, b))

    def forward(self, x):
        rows = torch.arange(x.shape[-2]).float().view(-1, 1)
        columns = torch.arange(x.shape[-1]).float().view(1, -1)
        return x + self.a * rows + self.b * columns


def test_d4_averages_the_eight_rotations_and_mirrors():
    # reference with numpy's rot90 and fliplr, not the module's flip-and-transpose views: each
    # of the 8 symmetries of the square is applied, the model run, the output mapped back
    x = batch(3, (1, 3, 6, 11)).numpy()  # not square: the quarter turns give 11x6 views
    a, b = [0.2, -0.1, 0.05], [-0.15, 0.1, 0.3]
    model = PositionBias(a, b)
    views = []
    for k in range(4):
        for mirror in (False, True):
            view = np.rot90(x[..., ::-1] if mirror else x, k, axes=(-2, -1)).copy()
            probabilities = softmax(model(torch.from_numpy(view)).numpy(), axis=1)
            back = np.rot90(probabilities, -k, axes=(-2, -1))
            views.append(back[..., ::-1] if mirror else back)
    expected = np.mean(views, axis=0)
    out = tta_logits(model, torch.from_numpy(x), flips=DIHEDRAL)
    np.testing.assert_allclose(np.exp(out.numpy()), expected, atol=1e-6)
    # and the eight really are distinct views: the average differs from any smaller set's
    fewer = tta_logits(model, torch.from_numpy(x), flips=("h", "v", "hv"))
    assert not np.allclose(np.exp(fewer.numpy()), expected, atol=1e-4)


def test_tta_settings_name_their_views():
    assert tta_views(False) == () and tta_views(True) == ("h",) == tta_views("h")
    assert tta_views("d4") == DIHEDRAL and len(set(DIHEDRAL)) == 7
    with pytest.raises(ConfigError, match="tta must be one of"):
        tta_views("d8")
