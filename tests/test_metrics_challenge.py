"""The ISBI 2012 challenge's pixel error (`MaxFScorePixelError`): 1 - the best F-score of the
foreground over thresholds 0, 0.1, ..., 1, against a hand-worked example and a numpy loop."""

import math

import numpy as np
import pytest
import torch

from pixelwise.metrics import CHALLENGE_THRESHOLDS, MaxFScorePixelError


def test_challenge_thresholds_are_the_fiji_scripts():
    assert CHALLENGE_THRESHOLDS == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                  0.9, 1.0])


def test_hand_worked_example_takes_the_best_threshold():
    # Truth: 3 cells (1), 2 membrane (0). P(cell) = 0.95, 0.65, 0.35 on the cells, 0.55, 0.05 on
    # the membrane. t < 0.35: TP 3, FP 1 (the 0.55) -> F = 6 / 7 (t = 0: also the 0.05: 6 / 8).
    # 0.35 <= t < 0.55: TP 2, FP 1, FN 1 -> 4 / 6. 0.55 <= t < 0.65: TP 2, FN 1 -> 4 / 5.
    # Best: 6 / 7 at t in 0.1..0.3, so the error is 1 / 7; the label map at 0.5 is 2 wrong of 5.
    target = torch.tensor([[1, 1, 1, 0, 0]])
    probability = torch.tensor([[0.95, 0.65, 0.35, 0.55, 0.05]])
    meter = MaxFScorePixelError()
    meter.update(probability, target)
    assert meter.compute() == pytest.approx(1 / 7)


def test_ignored_pixels_count_nowhere_and_images_pool():
    meter = MaxFScorePixelError(ignore_index=255)
    meter.update(torch.tensor([[0.9, 0.9]]), torch.tensor([[1, 255]]))
    meter.update(torch.tensor([[0.2, 0.7]]), torch.tensor([[0, 1]]))
    assert meter.compute() == 0.0  # t = 0.2 .. 0.6 separates both images' pixels


def test_nan_until_some_pixel_is_foreground_and_an_error_of_one_without_true_positives():
    meter = MaxFScorePixelError()
    assert math.isnan(meter.compute())
    meter.update(torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long))
    assert math.isnan(meter.compute())  # no foreground in the truth nor in any prediction
    meter.update(torch.full((1, 4), 0.5), torch.zeros(1, 4, dtype=torch.long))
    assert meter.compute() == 1.0  # F-score 0 at every threshold, as Fiji's maximum starts at 0


def numpy_reference(probability: np.ndarray, target: np.ndarray) -> float:
    best = 0.0
    for step in range(11):
        guess, truth = probability > step / 10, target == 1
        tp = np.sum(guess & truth)
        fp, fn = np.sum(guess & ~truth), np.sum(~guess & truth)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        if precision + recall:
            best = max(best, 2 * precision * recall / (precision + recall))
    return 1.0 - best


def test_matches_precision_and_recall_computed_in_numpy_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(5):
        target = (rng.random((2, 24, 24)) < 0.7).astype(np.int64)
        probability = np.clip(target * 0.6 + rng.normal(0.2, 0.25, target.shape), 0, 1)
        meter = MaxFScorePixelError()
        for image in range(2):  # one image at a time: the counts pool
            meter.update(torch.from_numpy(probability[image]), torch.from_numpy(target[image]))
        assert meter.compute() == pytest.approx(numpy_reference(probability, target), rel=1e-12)
