import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from pixelwise.models.layers import bilinear_upsample_weight, bilinear_upsampler


def test_bilinear_weight_matches_hand_worked_kernels():
    # f = 2: k = 4, taps 1 - |x - 1.5| / 2 = [.25, .75, .75, .25]; k = 3: 1 - |x - 1| / 2.
    even = np.array([0.25, 0.75, 0.75, 0.25])
    odd = np.array([0.5, 1.0, 0.5])
    weight = bilinear_upsample_weight(2, 4).numpy()
    np.testing.assert_allclose(weight[0, 0], np.outer(even, even))
    np.testing.assert_allclose(weight[1, 1], np.outer(even, even))
    assert not weight[0, 1].any() and not weight[1, 0].any()
    np.testing.assert_allclose(bilinear_upsample_weight(1, 3)[0, 0].numpy(), np.outer(odd, odd))


def smooth_image(size: int = 12) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    return (np.sin(2.0 * x + 1.0) * np.cos(1.5 * y) + x * y).astype(np.float32)


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("odd_kernel", [False, True])
def test_transposed_conv_reproduces_bilinear_interpolation_in_the_interior(factor, odd_kernel):
    # Output j of ConvTranspose2d(k, stride f) sits at input (j - (k - 1) / 2) / f; scipy's
    # order-1 spline evaluated there is bilinear interpolation, computed independently.
    kernel = 2 * factor - 1 if odd_kernel else 2 * factor
    image = smooth_image()
    layer = bilinear_upsampler(1, factor, kernel)
    with torch.no_grad():
        out = layer(torch.from_numpy(image)[None, None])[0, 0].numpy()
    positions = (np.arange(out.shape[0]) - (kernel - 1) / 2) / factor
    interior = (positions >= 0) & (positions <= image.shape[0] - 1)
    grid_y, grid_x = np.meshgrid(positions[interior], positions[interior], indexing="ij")
    expected = map_coordinates(image, [grid_y, grid_x], order=1)
    np.testing.assert_allclose(out[np.ix_(interior, interior)], expected, atol=1e-5)


def test_even_kernel_equals_half_pixel_interpolate_shifted_by_half_the_factor():
    # F.interpolate(align_corners=False) puts output j at (j + 0.5) / f - 0.5; the transposed conv
    # with k = 2f puts j at (j - f + 0.5) / f: the same grid shifted by f / 2 pixels.
    factor = 4
    image = torch.from_numpy(smooth_image())[None, None]
    with torch.no_grad():
        conv = bilinear_upsampler(1, factor, 2 * factor)(image)[0, 0]
    ref = F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False)[0, 0]
    shift = factor // 2
    # interior: both sample inside the image (interpolate clamps at the border, the conv fades)
    lo, hi = factor, ref.shape[0] - factor
    torch.testing.assert_close(
        conv[lo + shift : hi + shift, lo + shift : hi + shift], ref[lo:hi, lo:hi]
    )
