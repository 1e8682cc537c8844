"""Property tests of the FCN metrics (issue 7): scores lie in [0, 1] or are NaN exactly for
absent classes, relabelling classes permutes the per-class scores and keeps the means, and
ignored pixels count for nothing. Expected values come from numpy, not from the code itself."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelwise.metrics import ConfusionMatrix

IGNORE = 255
MEANS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "mean_dice")
PER_CLASS = ("accuracy", "iou", "dice")


@st.composite
def label_maps(draw):
    """(K, pred, target, permutation): (H, W) int64 maps with K classes, some target pixels
    ignored, and a random permutation of 0..K-1."""
    k = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, k, (h, w))
    target = rng.integers(0, k, (h, w))
    target[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2, 0.9]))] = IGNORE
    return k, pred, target, rng.permutation(k)


def scores(k: int, pred: np.ndarray, target: np.ndarray) -> dict:
    matrix = ConfusionMatrix(k, IGNORE)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    return matrix.compute()


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(label_maps())
def test_scores_in_unit_interval_and_nan_only_for_absent_classes(case):
    k, pred, target, _ = case
    result = scores(k, pred, target)
    labelled = target != IGNORE
    in_target = np.isin(np.arange(k), target[labelled])
    in_pred = np.isin(np.arange(k), pred[labelled])
    for key in PER_CLASS:
        for value in result[key]:
            assert math.isnan(value) or 0.0 <= value <= 1.0
    np.testing.assert_array_equal(np.isnan(result["accuracy"]), ~in_target)
    np.testing.assert_array_equal(np.isnan(result["iou"]), ~(in_target | in_pred))
    for key in MEANS:
        assert math.isnan(result[key]) == (not labelled.any())
        assert math.isnan(result[key]) or 0.0 <= result[key] <= 1.0 + 1e-12


@settings(max_examples=60, deadline=None)
@given(label_maps())
def test_relabelling_classes_permutes_per_class_scores_and_keeps_means(case):
    k, pred, target, perm = case
    relabelled_target = np.where(target == IGNORE, IGNORE, perm[np.minimum(target, k - 1)])
    before, after = scores(k, pred, target), scores(k, perm[pred], relabelled_target)
    for key in PER_CLASS:
        for old_class in range(k):
            assert same(after[key][perm[old_class]], before[key][old_class]), key
    for key in MEANS:
        assert same(after[key], before[key]), key


@settings(max_examples=60, deadline=None)
@given(label_maps(), st.integers(0, 2**32 - 1))
def test_ignored_pixels_have_no_effect(case, seed):
    k, pred, target, _ = case
    labelled = target != IGNORE
    # Whatever is predicted under ignored pixels...
    scrambled = pred.copy()
    scrambled[~labelled] = np.random.default_rng(seed).integers(0, k, (~labelled).sum())
    result = scores(k, scrambled, target)
    # ...the matrix is numpy's count over the labelled pixels alone.
    counted = np.bincount(target[labelled] * k + pred[labelled], minlength=k * k).reshape(k, k)
    assert result["matrix"] == counted.tolist()
    alone = scores(k, pred[labelled][None], target[labelled][None]) if labelled.any() else None
    if alone is not None:
        for key in MEANS:
            assert same(result[key], alone[key]), key
