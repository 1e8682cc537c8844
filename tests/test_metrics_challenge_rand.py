"""The ISBI 2012 challenge's Rand error (`MaxFScoreRandError`, `rand_pair_counts`): 1 - the best
F-score of the foreground-restricted Rand index over thresholds, against a hand-worked example
and a brute-force count of pixel pairs."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelwise.metrics import MaxFScoreRandError, rand_pair_counts


def brute_force_counts(segments: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """Ordered pairs of the truth's cell pixels (self-pairs included) in one true segment and
    one predicted segment, in one true segment, in one predicted segment; an unassigned pixel
    (0) shares a predicted segment with itself only."""
    truth, _ = ndimage.label(target == 1)
    pixels = list(zip(*np.nonzero(truth), strict=True))
    both = same_truth = same_guess = 0
    for p, q in itertools.product(pixels, repeat=2):
        in_truth = truth[p] == truth[q]
        in_guess = p == q or (segments[p] == segments[q] != 0)
        same_truth += in_truth
        same_guess += in_guess
        both += in_truth and in_guess
    return both, same_truth, same_guess


def test_pair_counts_match_a_brute_force_count():
    rng = np.random.default_rng(3)
    for _ in range(10):
        target = (rng.random((7, 8)) > 0.35).astype(np.int64)
        segments = rng.integers(0, 4, (7, 8))
        assert rand_pair_counts(segments, target) == brute_force_counts(segments, target)


def test_hand_worked_example_a_gap_merges_two_cells():
    # Two true cells of 3 pixels, apart by one membrane pixel. For t = 0 ... 0.5 the gap's 0.6
    # joins them: the 6 scored pixels share one segment, both = 9 + 9, truth = 18, guess = 36,
    # F = 36 / 54. For t = 0.6 ... 0.9 the gap closes and the 0.55 pixel is unassigned, a
    # segment of its own: both = 4 + 1 + 9 = 14, guess = 14, truth = 18, F = 28 / 32, the best.
    # At t = 1 every pixel is unassigned: both = guess = 6, F = 12 / 24.
    target = torch.tensor([[1, 1, 1, 0, 1, 1, 1]])
    probability = torch.tensor([[0.95, 0.95, 0.55, 0.6, 0.95, 0.95, 0.95]])
    meter = MaxFScoreRandError()
    meter.update(probability, target)
    assert meter.compute() == pytest.approx(1 - 28 / 32)


def test_images_pool_their_pairs_and_ignored_pixels_count_nowhere():
    meter = MaxFScoreRandError()
    perfect = torch.tensor([[0.9, 0.9, 0.0, 0.9]])
    meter.update(perfect, torch.tensor([[1, 1, 0, 1]]))
    assert meter.compute() == 0.0
    meter.update(torch.tensor([[0.9, 0.9, 255.0]]).clamp(max=1), torch.tensor([[1, 1, 255]]))
    assert meter.compute() == 0.0
    merged = torch.tensor([[0.9, 0.9, 0.9]])  # two true cells called one at every threshold < 0.9
    meter.update(merged, torch.tensor([[1, 0, 1]]))
    # best at t < 0.9: pooled both = (4 + 1) + 4 + 2, truth = 5 + 4 + 2, guess = 5 + 4 + 4
    assert meter.compute() == pytest.approx(1 - 2 * 11 / (11 + 13))


def test_nan_until_some_cell_pixel_is_scored():
    meter = MaxFScoreRandError()
    assert math.isnan(meter.compute())
    meter.update(torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.long))
    assert math.isnan(meter.compute())
