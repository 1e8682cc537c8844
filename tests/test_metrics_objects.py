"""Object-level scores of pixelwise.metrics against hand-worked examples: recall by object size
and the per-image mean of the adapted Rand error."""

import math

import numpy as np
import pytest
import torch

from pixelwise.metrics import (
    MeanAdaptedRandError,
    ObjectRecall,
    adapted_rand_error,
    format_object_recall,
)

IGNORE = 255


def hand_worked_maps() -> tuple[np.ndarray, np.ndarray]:
    """Objects on an ignored background (so class 0 has none), and how much of each is found.

    Class 1: A 2x2 (2 of 4 predicted: exactly half, found), B 2x2 (1 of 4: missed), C and D
    single pixels touching only at a corner (two objects under 4-connectivity; C found, D
    missed), E 40x40 = 1600 px, medium (799 predicted: just under half, missed).
    Class 2: F 100x100 = 10000 px, large (5000 predicted: found), G 32x32 = 1024 px, medium
    (the small bin ends below 32^2; all predicted: found).
    """
    target = np.full((110, 230), IGNORE)
    pred = np.zeros_like(target)
    target[0:2, 0:2] = 1
    pred[0, 0:2] = 1  # A
    target[0:2, 10:12] = 1
    pred[0, 10] = 1  # B
    target[5, 5] = target[6, 6] = 1
    pred[5, 5] = 1  # C, not D
    target[10:50, 0:40] = 1
    pred[10:50, 0:40].flat[:799] = 1  # E
    target[10:110, 120:220] = 2
    pred[10:110, 120:170] = 2  # F: the left half
    target[60:92, 50:82] = 2
    pred[60:92, 50:82] = 2  # G
    return pred, target


def recall_of(pred, target, num_classes=3) -> dict:
    recall = ObjectRecall(num_classes, IGNORE)
    recall.update(torch.as_tensor(pred), torch.as_tensor(target))
    return recall.compute()


def test_object_counts_by_class_and_size_of_hand_worked_example():
    counts = recall_of(*hand_worked_maps())
    assert counts["objects"] == {"small": [0, 4, 0], "medium": [0, 1, 1], "large": [0, 0, 1],
                                 "all": [0, 5, 2]}
    assert counts["found"] == {"small": [0, 2, 0], "medium": [0, 0, 1], "large": [0, 0, 1],
                               "all": [0, 2, 2]}


def test_object_recall_of_hand_worked_example_is_nan_where_no_object():
    recall = recall_of(*hand_worked_maps())["recall"]
    assert recall["small"][1:] == [0.5, pytest.approx(math.nan, nan_ok=True)]
    assert recall["medium"][1:] == [0.0, 1.0]
    assert recall["large"][2] == 1.0 and math.isnan(recall["large"][1])
    assert recall["all"][1:] == [pytest.approx(2 / 5), 1.0]
    assert all(math.isnan(recall[key][0]) for key in recall)  # class 0: only ignored pixels


def test_object_recall_mean_is_over_classes_that_have_objects():
    means = recall_of(*hand_worked_maps())["mean"]
    assert means["small"] == 0.5
    assert means["medium"] == 0.5
    assert means["all"] == pytest.approx((2 / 5 + 1) / 2)


def test_object_predicted_as_another_class_is_missed():
    target = np.zeros((4, 4), dtype=np.int64)
    target[1:3, 1:3] = 1
    counts = recall_of(np.where(target == 1, 2, 0), target)
    assert counts["found"]["small"] == [1, 0, 0]  # the background ring is found, the square not


def test_each_image_of_a_batch_is_labelled_on_its_own_and_updates_add_up():
    target = np.zeros((2, 8, 8), dtype=np.int64)
    target[:, 2:4, 2:4] = 1  # the same square in both images: two objects
    pred = target.copy()
    pred[1] = 0
    batch = recall_of(pred, target)
    split = ObjectRecall(3, IGNORE)
    for i in range(2):
        split.update(torch.as_tensor(pred[i]), torch.as_tensor(target[i]))
    assert batch["objects"]["small"] == [2, 2, 0]
    assert batch["found"]["small"] == [2, 1, 0]
    assert {key: split.compute()[key] for key in ("objects", "found")} == {
        key: batch[key] for key in ("objects", "found")}


def test_object_recall_refuses_maps_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        ObjectRecall(2).update(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 4))


def test_format_object_recall_shows_recall_and_object_count_per_size():
    table = format_object_recall(recall_of(*hand_worked_maps()), ["bg", "thing", "stuff"])
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert rows["thing"][1:] == ["50.00", "(4)", "0.00", "(1)", "nan", "(0)", "40.00", "(5)"]
    assert rows["mean"][1:] == ["50.00", "50.00", "100.00", "70.00"]


def test_adapted_rand_error_counts_cell_pixels_predicted_as_membrane_as_one_segment():
    # One 4-pixel cell, the prediction keeps 2 pixels as cell and calls 2 membrane. Pairs: 6
    # share the truth cell; 1 + 1 share a predicted segment (cell, and the membrane pixels
    # inside the cell); 2 share both: error = 1 - 2 * 2 / (6 + 2) = 1 / 2.
    assert adapted_rand_error(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 1, 1]])) == 0.5


def test_adapted_rand_error_is_nan_without_foreground_in_the_truth():
    assert math.isnan(adapted_rand_error(np.ones((3, 3)), np.zeros((3, 3))))


def test_adapted_rand_error_matches_scikit_image_on_random_cells():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(5):
        target = (ndimage.gaussian_filter(rng.random((64, 64)), 2) > 0.5).astype(np.int64)
        pred = target.copy()
        pred[rng.random(pred.shape) < 0.1] ^= 1
        expected, _, _ = skimage_metrics.adapted_rand_error(
            ndimage.label(target)[0], ndimage.label(pred)[0], ignore_labels=(0,))
        assert adapted_rand_error(pred, target) == pytest.approx(expected, rel=1e-12)


def test_mean_adapted_rand_error_averages_images_that_have_cells():
    target = torch.tensor([[[1, 1, 1, 1]], [[1, 1, 1, 1]], [[0, 0, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 1]], [[1, 1, 0, 0]], [[1, 1, 1, 1]]])
    mean = MeanAdaptedRandError()
    mean.update(pred, target)
    assert mean.compute() == pytest.approx((0.0 + 0.5) / 2)  # the third image has no cell
