"""Joint transforms keep image and mask aligned and masks free of invented values."""

import pytest
import torch
from torchvision import tv_tensors

from pixelwise.data.transforms import (
    RECOMMENDED,
    UNetElasticDeform,
    eval_preset,
    train_preset,
)

IGNORE = 255


def blocky_mask(seed: int, size: int = 64, block: int = 8, classes: int = 5) -> torch.Tensor:
    """Random class per `block`x`block` square: `(size, size)` int64."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (size // block, size // block), generator=generator)
    return coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)


def mask_image(mask: torch.Tensor, classes: int = 5) -> torch.Tensor:
    """A `classes`-channel image: the one-hot encoding of the mask."""
    return torch.nn.functional.one_hot(mask, classes).permute(2, 0, 1).float()


def agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of labelled pixels, among those the resampling left unmixed (one channel
    above 0.99), where that channel is the mask's class. Aligned transforms give exactly 1:
    an unmixed bilinear pixel only saw one class, and the nearest one is among them."""
    labelled = mask != IGNORE
    pure = labelled & (image.max(0).values > 0.99)
    assert pure.sum() > 0.5 * labelled.sum(), "too few unmixed pixels for a comparison"
    return float((image.argmax(0)[pure] == mask[pure]).float().mean())


NO_NORMALISATION = dict(mean=(0.0,) * 5, std=(1.0,) * 5)


GEOMETRIC = {
    "scale": dict(scale=(0.75, 1.5)),
    "crop_with_pad": dict(crop_size=80, scale=None),
    "flips": dict(hflip=1.0, vflip=1.0, scale=None),
    "rotation": dict(rotation=30.0, scale=None),
    "elastic": dict(elastic=True, scale=None),
    "everything": dict(crop_size=48, scale=(0.75, 1.5), rotation=20.0, elastic=True, vflip=0.5),
}


@pytest.mark.parametrize("name", GEOMETRIC)
def test_image_and_mask_stay_aligned(name):
    torch.manual_seed(0)
    options = {"crop_size": None, "hflip": 0.0, **GEOMETRIC[name]}
    transform = train_preset(ignore_index=IGNORE, **NO_NORMALISATION, **options)
    for seed in range(5):
        mask = blocky_mask(seed)
        image, out_mask = transform(mask_image(mask), mask)
        assert agreement(image, out_mask) == 1.0, f"seed {seed}"


def test_a_one_pixel_misalignment_is_caught():
    mask = blocky_mask(0)
    shifted = torch.roll(mask_image(mask), 1, dims=-1)
    assert agreement(shifted, mask) < 0.95


@pytest.mark.parametrize("name", GEOMETRIC)
def test_masks_keep_only_class_ids_and_ignore(name):
    torch.manual_seed(1)
    transform = train_preset(
        ignore_index=IGNORE, **NO_NORMALISATION, **{"crop_size": None, **GEOMETRIC[name]}
    )
    mask = blocky_mask(3, classes=3)
    _, out = transform(mask_image(mask), mask)
    assert out.dtype == torch.int64 and out.dim() == 2
    assert set(out.unique().tolist()) <= {0, 1, 2, IGNORE}


def test_crop_pads_image_with_zero_and_mask_with_ignore():
    transform = train_preset(40, mean=(0.0,), std=(1.0,), ignore_index=IGNORE, scale=None, hflip=0)
    image, mask = transform(torch.ones(1, 20, 30), torch.zeros(20, 30, dtype=torch.long))
    assert image.shape == (1, 40, 40) and mask.shape == (40, 40)
    assert int((mask == IGNORE).sum()) == 40 * 40 - 20 * 30
    assert torch.equal(image[0] == 0, mask == IGNORE)


def test_rotation_fills_corners_of_the_mask_with_ignore():
    transform = train_preset(None, mean=(0.0,), std=(1.0,), scale=None, hflip=0, rotation=(45, 45))
    _, mask = transform(torch.ones(1, 32, 32), torch.zeros(32, 32, dtype=torch.long))
    assert mask[0, 0] == IGNORE and mask[16, 16] == 0


def test_elastic_displacements_are_gaussian_with_10_pixel_sigma_on_a_3x3_grid():
    deform = UNetElasticDeform()
    mask = torch.zeros(61, 41, dtype=torch.long)
    corners = []
    for _ in range(600):
        field = deform.make_params([tv_tensors.Mask(mask)])["displacement"][0]  # (H, W, 2)
        pixels = field * torch.tensor([41 / 2, 61 / 2])  # back from [-1, 1] units
        # With align_corners bicubic upsampling, grid nodes land exactly on these pixels.
        corners.append(pixels[[0, 0, 30, 60], [0, 40, 20, 40]])
    values = torch.cat(corners).flatten()
    assert abs(float(values.std()) - 10.0) < 0.6
    assert abs(float(values.mean())) < 0.6


def test_elastic_moves_pixels():
    torch.manual_seed(0)
    mask = blocky_mask(1)
    _, out = train_preset(None, **NO_NORMALISATION, scale=None, hflip=0, elastic=True)(
        mask_image(mask), mask
    )
    assert (out != mask).float().mean() > 0.05


def test_eval_preset_only_normalises():
    image = torch.rand(3, 5, 7)
    mask = torch.randint(0, 3, (5, 7))
    transform = eval_preset(mean=(0.5, 0.4, 0.3), std=(0.1, 0.2, 0.3))
    out_image, out_mask = transform(image, mask)
    expected = (image - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.1, 0.2, 0.3]
    ).view(3, 1, 1)
    assert torch.allclose(out_image, expected) and torch.equal(out_mask, mask)
    assert transform.mean == [0.5, 0.4, 0.3] and transform.std == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("kind", RECOMMENDED)
def test_recommended_settings_run_and_return_the_contract_types(kind):
    channels = len(RECOMMENDED[kind]["mean"])
    transform = train_preset(ignore_index=IGNORE, **RECOMMENDED[kind])
    image, mask = transform(torch.rand(channels, 50, 60), blocky_mask(0)[:50, :60])
    assert image.dtype == torch.float32 and image.shape[0] == channels
    assert mask.dtype == torch.int64 and mask.shape == image.shape[1:]


def test_scaled_mask_takes_the_source_pixel_with_the_nearest_centre():
    # Width 4 -> 5: output pixel centres map to source x = -0.1, 0.7, 1.5, 2.3, 3.1, whose
    # nearest source pixels are 0, 1, 1 or 2 (a tie), 2, 3. Legacy "nearest" would give
    # 0, 0, 1, 2, 3: shifted towards the top left of the bilinearly resized image.
    transform = train_preset(None, mean=(0.0,), std=(1.0,), scale=(1.25, 1.25), hflip=0)
    _, mask = transform(torch.zeros(1, 4, 4), torch.arange(4).repeat(4, 1))
    row = mask[0].tolist()
    assert row[:2] == [0, 1] and row[2] in (1, 2) and row[3:] == [2, 3]
