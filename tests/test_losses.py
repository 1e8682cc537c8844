"""Losses against hand-worked values; the U-Net weight map against a brute-force computation."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelwise.errors import ConfigError, DataError
from pixelwise.losses import (
    LOSSES,
    build_loss,
    instances_from_classes,
    loss_options,
    soft_cldice_loss,
    soft_skeleton,
    unet_border_weights,
    unet_weight_map,
)

IGNORE = 255


def logits_of(probabilities):
    """Logits `(1, K, 1, P)` whose softmax over K is the given `(K, P)` probabilities."""
    return torch.tensor(probabilities, dtype=torch.float64).log()[None, :, None, :]


def test_ce_of_uniform_logits_is_log_k():
    loss = build_loss("ce", 3, IGNORE)
    assert float(loss(torch.zeros(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))) == pytest.approx(
        math.log(3)
    )


def test_weighted_ce_is_the_class_weighted_mean_by_hand():
    # Pixel 1: class 0 with p = 0.8, weight 1; pixel 2: class 1 with p = 0.25, weight 3.
    loss = build_loss("ce", 2, IGNORE, class_weights=[1.0, 3.0])
    value = loss(logits_of([[0.8, 0.75], [0.2, 0.25]]), torch.tensor([[[0, 1]]]))
    assert float(value) == pytest.approx((-math.log(0.8) - 3 * math.log(0.25)) / 4)


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_change_nothing(name):
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    target[0, :, :3] = IGNORE
    other_logits = logits.clone()
    other_logits[..., :3] = torch.randn(1, 3, 8, 3) * 5  # change only where ignored
    loss = build_loss(name, 3, IGNORE)
    assert float(loss(other_logits, target)) == pytest.approx(float(loss(logits, target)))


@pytest.mark.parametrize("name", LOSSES)
def test_a_fully_ignored_batch_gives_zero_and_a_gradient(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    value = build_loss(name, 3, IGNORE)(logits, torch.full((1, 4, 4), IGNORE))
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES)
def test_confident_right_prediction_scores_lower_than_a_wrong_one(name):
    target = torch.tensor([[[0, 1, 1, 0], [1, 1, 0, 0]]])
    right = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 10
    loss = build_loss(name, 2, IGNORE)
    assert float(loss(right, target)) < 0.01 < float(loss(right.flip(1), target))


def test_dice_of_uniform_prediction_by_hand():
    # K = 2, one pixel of each class, p = 0.5 everywhere: per class overlap 0.5, sum p + sum g
    # = 1 + 1, Dice = (2 * 0.5 + 1) / (2 + 1) = 2 / 3, loss 1 / 3.
    value = build_loss("dice", 2, IGNORE)(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]]))
    assert float(value) == pytest.approx(1 / 3)


def test_dice_against_numpy_with_ignored_pixels_class_weights_and_an_absent_class():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 6))
    target = rng.integers(0, 3, size=(2, 5, 6))  # class 3 never appears
    target[0, 0, :4] = IGNORE
    weights = np.array([1.0, 2.0, 0.5, 1.5])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    valid = target != IGNORE
    dice = []
    for c in range(4):
        pc, gc = p[:, c][valid], (target == c)[valid]
        dice.append((2 * (pc * gc).sum() + 1) / (pc.sum() + gc.sum() + 1))
    expected = 1 - (np.array(dice) * weights).sum() / weights.sum()
    value = build_loss("dice", 4, IGNORE, weights)(torch.tensor(logits), torch.tensor(target))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_dice_gradient_matches_the_one_hot_formula():
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    target[1, 2] = IGNORE
    valid = (target != IGNORE)[:, None]
    probs = logits.softmax(1) * valid
    truth = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2) * valid
    dice = (2 * (probs * truth).sum((0, 2, 3)) + 1) / (probs.sum((0, 2, 3)) + truth.sum((0, 2, 3)) + 1)
    (expected,) = torch.autograd.grad(1 - dice.mean(), logits)
    (grad,) = torch.autograd.grad(build_loss("dice", 3, IGNORE)(logits, target), logits)
    torch.testing.assert_close(grad, expected)


def test_focal_of_uniform_prediction_by_hand():
    # p_t = 1/2: (1 - 1/2)^2 * log 2.
    value = build_loss("focal", 2, IGNORE)(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2).long())
    assert float(value) == pytest.approx(0.25 * math.log(2))


def test_ce_dice_is_the_sum_of_both():
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    total = build_loss("ce", 3)(logits, target) + build_loss("dice", 3)(logits, target)
    assert float(build_loss("ce_dice", 3)(logits, target)) == pytest.approx(float(total))


def test_lovasz_of_two_pixels_by_hand():
    # Pixel A: class 0, p = (0.8, 0.2); pixel B: class 1, p = (0.6, 0.4). Class 0: errors
    # B 0.6 (not class 0), A 0.2; the Jaccard loss after B is 1 - 1/2, after A 1 - 0/2: increments
    # (1/2, 1/2), term 0.6/2 + 0.2/2 = 0.4. Class 1: errors B 0.6 (class 1), A 0.2; Jaccard loss
    # 1 - 0/1 then 1 - 0/2: increments (1, 0), term 0.6. Mean 0.5.
    value = build_loss("lovasz", 2, IGNORE)(logits_of([[0.8, 0.6], [0.2, 0.4]]),
                                            torch.tensor([[[0, 1]]]))
    assert float(value) == pytest.approx(0.5)


def jaccard_loss(fg, wrong):
    """Berman et al.'s set function: |M| / |fg | M| for the set M of wrong pixels."""
    return wrong.sum() / max((fg | wrong).sum(), 1)


def lovasz_extension_by_integral(fg, errors):
    """The Lovász extension as the integral over t in [0, 1] of the Jaccard loss of the set
    {errors >= t}: piecewise constant between the sorted error values."""
    levels = np.append(np.unique(errors)[::-1], 0.0)
    return sum((high - low) * jaccard_loss(fg, errors >= high)
               for high, low in zip(levels[:-1], levels[1:], strict=True))


def test_lovasz_matches_the_extension_integral_and_is_one_minus_iou_when_hard():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 3, 5, 6)) * 2)
    target = torch.tensor(rng.integers(0, 3, (2, 5, 6)))
    target[0, 0] = IGNORE
    probs = logits.softmax(1).permute(0, 2, 3, 1).numpy()
    labels, valid = target.numpy(), target.numpy() != IGNORE
    expected = np.mean([lovasz_extension_by_integral(labels[valid] == c,
                                                     np.abs((labels[valid] == c) - probs[valid][:, c]))
                        for c in range(3)])
    assert float(build_loss("lovasz", 3, IGNORE)(logits, target)) == pytest.approx(expected)
    hard = torch.nn.functional.one_hot(logits.argmax(1), 3).permute(0, 3, 1, 2) * 1e4
    prediction = logits.argmax(1).numpy()
    iou = [((prediction == c) & (labels == c) & valid).sum()
           / (((prediction == c) | (labels == c)) & valid).sum() for c in range(3)]
    assert float(build_loss("lovasz", 3, IGNORE)(hard.double(), target)) == pytest.approx(
        1 - np.mean(iou))


def test_lovasz_skips_classes_absent_from_the_batch_and_ce_lovasz_is_the_sum():
    target = torch.tensor([[[0, 0, 2, 2]]])  # class 1 absent: it adds no term
    logits = torch.randn(1, 3, 1, 4)
    three = float(build_loss("lovasz", 3)(logits, target))
    weights = float(build_loss("lovasz", 3, class_weights=[1.0, 5.0, 1.0])(logits, target))
    assert three == pytest.approx(weights)
    total = build_loss("ce", 3)(logits, target) + build_loss("lovasz", 3)(logits, target)
    assert float(build_loss("ce_lovasz", 3)(logits, target)) == pytest.approx(float(total))


def test_target_outside_the_classes_raises_data_error():
    with pytest.raises(DataError, match="target values must be class ids 0..2"):
        build_loss("ce", 3)(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 5], [0, 0]]]))


def test_unknown_loss_and_wrong_weights_raise_config_error():
    with pytest.raises(ConfigError, match=r"optim.loss must be one of \['ce', 'dice'"):
        build_loss("hinge", 3)
    with pytest.raises(ConfigError, match="class_weights must be 3"):
        build_loss("ce", 3, class_weights=[1.0, 2.0])


def brute_force_border(instances, w0=10.0, sigma=5.0):
    """d1, d2 by looping over every background pixel and every cell pixel."""
    height, width = instances.shape
    cells = [np.argwhere(instances == c) for c in range(1, instances.max() + 1)]
    out = np.zeros(instances.shape)
    for y in range(height):
        for x in range(width):
            if instances[y, x]:
                continue
            d = sorted(np.hypot(c[:, 0] - y, c[:, 1] - x).min() for c in cells)
            out[y, x] = w0 * math.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return out


def test_weight_map_of_two_cells_by_hand():
    # Two 1-pixel cells at (0, 0) and (0, 3) of a 1x4 strip. Pixel (0, 1): d1 = 1, d2 = 2;
    # pixel (0, 2): d1 = 1, d2 = 2. With sigma = 5: 10 exp(-9 / 50) each; cells get 0 border.
    # Class balance: 2 cell pixels, 2 background: w_c = 4 / (2 * 2) = 1 for both.
    instances = np.array([[1, 0, 0, 2]])
    expected = 1 + np.array([[0, 10 * math.exp(-9 / 50), 10 * math.exp(-9 / 50), 0]])
    np.testing.assert_allclose(unet_weight_map(instances), expected, rtol=1e-6)


def test_border_weights_match_brute_force_on_a_small_grid():
    instances = np.zeros((14, 17), dtype=np.int32)
    instances[1:4, 2:6] = 1
    instances[6:9, 3:5] = 2
    instances[2:12, 9:11] = 3
    instances[12, 15] = 4
    np.testing.assert_allclose(
        unet_border_weights(instances, w0=10, sigma=3),
        brute_force_border(instances, 10, 3),
        rtol=1e-5,
    )


def test_border_weights_are_zero_with_fewer_than_two_cells():
    instances = np.zeros((6, 6), dtype=np.int32)
    instances[2:4, 2:4] = 1
    assert not unet_border_weights(instances).any()


def test_weight_map_uses_given_class_weights():
    instances = np.zeros((1, 5), dtype=np.int32)
    instances[0, 0] = 1
    assert unet_weight_map(instances, class_weights=(0.5, 2.0)).tolist()[0][:2] == [2.0, 0.5]


def test_instances_from_classes_splits_touching_classes_and_separate_regions():
    label = np.array([[1, 1, 0, 1], [2, 2, 0, 1]])
    instances = instances_from_classes(label)
    assert instances[0, 0] == instances[0, 1] != instances[1, 0] == instances[1, 1]
    assert instances[0, 3] == instances[1, 3] not in (instances[0, 0], instances[1, 0], 0)
    assert (instances[:, 2] == 0).all()


def test_unet_weighted_ce_weights_pixels_by_the_weight_map():
    # Uniform logits: every pixel's CE is log 2, so the weighted mean is log 2 whatever the
    # weights; a confident error in the gap between two cells costs more than one in a corner.
    target = torch.tensor([[[1, 0, 1, 0, 0, 0, 0, 0, 0]]])
    loss = build_loss("unet_weighted_ce", 2)
    assert float(loss(torch.zeros(1, 2, 1, 9), target)) == pytest.approx(math.log(2))
    right = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 5
    gap_wrong, corner_wrong = right.clone(), right.clone()
    gap_wrong[0, :, 0, 1] = gap_wrong[0, :, 0, 1].flip(0)
    corner_wrong[0, :, 0, 8] = corner_wrong[0, :, 0, 8].flip(0)
    assert float(loss(gap_wrong, target)) > 2 * float(loss(corner_wrong, target))


def test_unet_weighted_ce_takes_w0_and_sigma_as_loss_options():
    # Two one-pixel cells at 0 and 2: background pixel x has border weight w0 exp(-(d1 + d2)^2
    # / (2 sigma^2)) with (d1, d2) = (1, 1), (1, 3), (2, 4) at x = 1, 3, 4, by hand; the loss is
    # the weighted mean of the per-pixel cross-entropies.
    target = torch.tensor([[[1, 0, 1, 0, 0]]])
    logits = torch.tensor([[[[0.0, 1.0, 0.0, 2.0, -1.0]], [[1.0, 0.0, 3.0, 0.0, 0.5]]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    for w0, sigma in ((3.0, 2.0), (0.0, 5.0)):
        weights = torch.ones(5, dtype=torch.float64)
        for x, gap in ((1, 2), (3, 4), (4, 6)):
            weights[x] += w0 * math.exp(-(gap**2) / (2 * sigma**2))
        expected = float((weights * per_pixel.double()).sum() / weights.sum())
        loss = build_loss("unet_weighted_ce", 2, w0=w0, sigma=sigma)
        assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-5)
    assert loss_options("unet_weighted_ce") == {"w0": 10.0, "sigma": 5.0, "cldice": 0.0}
    assert loss_options("ce") == {}


@pytest.mark.parametrize(("name", "options", "message"), [
    ("unet_weighted_ce", {"w": 3}, r"must be among \['cldice', 'sigma', 'w0'\], got unknown \['w'\]; try 'w0'"),
    ("ce", {"w0": 3}, r"options of loss 'ce' must be among \[\]"),
    ("unet_weighted_ce", {"w0": -1}, "optim.loss_options.w0 must be a finite number >= 0, got -1"),
    ("unet_weighted_ce", {"sigma": 0}, "optim.loss_options.sigma must be a finite number > 0"),
    ("unet_weighted_ce", {"cldice": -0.5}, "optim.loss_options.cldice must be a finite number >= 0"),
])
def test_wrong_loss_options_are_one_config_error(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(name, 2, **options)



def lantuejoul_skeleton(mask: np.ndarray, iterations: int) -> np.ndarray:
    """The morphological skeleton by scipy: the union over k <= iterations of the k-th erosion
    (4-neighbour cross, outside = foreground) minus its opening (cross erosion, 3x3 dilation)."""
    cross, square = ndimage.generate_binary_structure(2, 1), np.ones((3, 3), bool)
    skeleton, eroded = np.zeros_like(mask), mask.copy()
    for k in range(iterations + 1):
        if k:
            eroded = ndimage.binary_erosion(eroded, cross, border_value=1)
        opened = ndimage.binary_dilation(ndimage.binary_erosion(eroded, cross, border_value=1), square)
        skeleton |= eroded & ~opened
    return skeleton


def test_soft_skeleton_of_a_binary_map_is_the_morphological_skeleton():
    rng = np.random.default_rng(0)
    for thickness in (1, 2, 3):
        mask = ndimage.binary_dilation(rng.random((40, 40)) > 0.93, iterations=thickness)
        soft = soft_skeleton(torch.tensor(mask, dtype=torch.float32)[None], iterations=5)[0]
        assert set(soft.unique().tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(soft.numpy() > 0.5, lantuejoul_skeleton(mask, 5))


def test_cldice_charges_a_gap_in_a_line_more_than_the_same_pixels_off_its_edge():
    # A 3-pixel-thick horizontal line: cutting it across (3 pixels) breaks its skeleton, so the
    # topology sensitivity drops; shaving 3 pixels off its edge leaves the skeleton whole.
    line = torch.zeros(1, 20, 20)
    line[:, 9:12, :] = 1
    cut, shaved = line.clone(), line.clone()
    cut[:, 9:12, 10] = 0
    shaved[:, 11, 4:7] = 0
    assert float(soft_cldice_loss(line, line)) == 0.0
    assert float(soft_cldice_loss(cut, line)) > 0.01 > float(soft_cldice_loss(shaved, line)) >= 0


def test_unet_weighted_ce_adds_the_cldice_term_on_class_0():
    logits = torch.randn(2, 2, 32, 32)
    target = torch.randint(0, 2, (2, 32, 32))
    plain = build_loss("unet_weighted_ce", 2, w0=1.0)(logits, target)
    membrane = (target == 0).float()
    term = soft_cldice_loss(logits.softmax(1)[:, 0], membrane)
    with_term = build_loss("unet_weighted_ce", 2, w0=1.0, cldice=0.5)(logits, target)
    assert float(with_term) == pytest.approx(float(plain + 0.5 * term), rel=1e-6)
