"""Metrics against hand-worked examples and an independent numpy computation (FCN §5)."""

import math

import numpy as np
import pytest
import torch

from pixelwise.errors import DataError
from pixelwise.metrics import (
    ConfusionMatrix,
    adapted_rand_error,
    format_table,
    pixel_error,
)

IGNORE = 255


def scores_of(pred, target, num_classes=4, averaging="pooled"):
    matrix = ConfusionMatrix(num_classes, IGNORE, averaging)
    matrix.update(torch.as_tensor(pred), torch.as_tensor(target))
    return matrix.compute()


# Hand-worked 3x3 example; class 3 appears nowhere, the bottom-right pixel is ignored.
# Confusion (rows truth): class 0: 2 right, 1 as class 1; class 1: 2 right, 1 as 0;
# class 2: 1 right, 1 as 0. Predicted counts: 4, 3, 1, 0.
GT = [[0, 0, 1], [0, 1, 1], [2, 2, IGNORE]]
PRED = [[0, 1, 1], [0, 1, 0], [2, 0, 1]]


def test_pixel_accuracy_of_hand_worked_example():
    assert scores_of(PRED, GT)["pixel_accuracy"] == pytest.approx(5 / 8)


def test_mean_accuracy_skips_class_absent_from_ground_truth():
    scores = scores_of(PRED, GT)
    assert scores["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isnan(scores["accuracy"][3])


def test_iou_of_hand_worked_example_with_absent_class_nan():
    scores = scores_of(PRED, GT)
    assert scores["iou"][:3] == pytest.approx([2 / 5, 2 / 4, 1 / 2])
    assert math.isnan(scores["iou"][3])
    assert scores["mean_iou"] == pytest.approx((2 / 5 + 1 / 2 + 1 / 2) / 3)
    assert scores["absent"] == [3]


def test_frequency_weighted_iou_of_hand_worked_example():
    assert scores_of(PRED, GT)["fw_iou"] == pytest.approx((3 * 2 / 5 + 3 / 2 + 2 / 2) / 8)


def test_dice_of_hand_worked_example():
    scores = scores_of(PRED, GT)
    assert scores["dice"][:3] == pytest.approx([4 / 7, 4 / 6, 2 / 3])
    assert scores["mean_dice"] == pytest.approx((4 / 7 + 2 / 3 + 2 / 3) / 3)


def test_class_predicted_but_absent_from_truth_scores_zero_iou_not_nan():
    target = np.zeros((3, 3), dtype=np.int64)
    pred = target.copy()
    pred[1, 1] = 1
    scores = scores_of(pred, target, num_classes=2)
    assert scores["iou"] == pytest.approx([8 / 9, 0.0])
    assert scores["mean_iou"] == pytest.approx(4 / 9)
    assert scores["mean_accuracy"] == pytest.approx(8 / 9)
    assert scores["absent"] == []


def numpy_scores(pred, target, num_classes):
    """Independent FCN scores: explicit class loops over boolean masks, no bincount."""
    valid = target != IGNORE
    n = np.array(
        [
            [np.sum((target == i) & (pred == j) & valid) for j in range(num_classes)]
            for i in range(num_classes)
        ],
        dtype=float,
    )
    t = [n[i, :].sum() for i in range(num_classes)]
    p = [n[:, i].sum() for i in range(num_classes)]
    iou = [n[i, i] / (t[i] + p[i] - n[i, i]) if t[i] + p[i] else np.nan for i in range(num_classes)]
    acc = [n[i, i] / t[i] if t[i] else np.nan for i in range(num_classes)]
    dice = [2 * n[i, i] / (t[i] + p[i]) if t[i] + p[i] else np.nan for i in range(num_classes)]
    iou_terms = [t[i] * iou[i] for i in range(num_classes) if t[i]]
    return {
        "pixel_accuracy": np.trace(n) / sum(t),
        "mean_accuracy": np.mean([a for a in acc if not np.isnan(a)]),
        "mean_iou": np.mean([v for v in iou if not np.isnan(v)]),
        "fw_iou": sum(iou_terms) / sum(t),
        "mean_dice": np.mean([d for d in dice if not np.isnan(d)]),
        "iou": iou,
        "dice": dice,
        "accuracy": acc,
    }


def test_pooled_scores_match_numpy_over_random_batches_with_ignore():
    rng = np.random.default_rng(0)
    matrix = ConfusionMatrix(6, IGNORE)
    preds, targets = [], []
    for _ in range(3):
        target = rng.integers(0, 4, (2, 17, 23))  # classes 4, 5 never in the truth
        target[rng.random(target.shape) < 0.2] = IGNORE
        pred = rng.integers(0, 5, target.shape)  # class 4 only predicted, class 5 nowhere
        matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
        preds.append(pred)
        targets.append(target)
    expected = numpy_scores(np.concatenate(preds), np.concatenate(targets), 6)
    scores = matrix.compute()
    for key, value in expected.items():
        np.testing.assert_allclose(scores[key], value, rtol=1e-12, err_msg=key)
    assert scores["absent"] == [5]
    assert scores["num_images"] == 6


def test_per_image_scores_match_numpy_means_over_images():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, (5, 9, 11))
    target[rng.random(target.shape) < 0.2] = IGNORE
    target[2] = rng.integers(0, 2, (9, 11))  # an image where classes 2, 3 are absent
    target[4] = IGNORE  # an image with no labelled pixel: it has no score at all
    pred = rng.integers(0, 4, target.shape)
    scores = scores_of(pred, target, num_classes=4, averaging="per_image")
    per_image = [numpy_scores(pred[i], target[i], 4) for i in range(4)]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "mean_dice"):
        np.testing.assert_allclose(scores[key], np.mean([s[key] for s in per_image]), err_msg=key)
    for key in ("iou", "dice", "accuracy"):
        expected = np.nanmean(np.array([s[key] for s in per_image], dtype=float), axis=0)
        np.testing.assert_allclose(scores[key], expected, rtol=1e-12, err_msg=key)
    assert scores["num_images"] == 5


def test_per_image_averaging_differs_from_pooled_by_hand():
    # Image A: all class 0, right. Image B: truth [0, 0, 1, 1], prediction [0, 1, 1, 1].
    target = torch.tensor([[[0, 0], [0, 0]], [[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    per_image = scores_of(pred, target, num_classes=2, averaging="per_image")
    pooled = scores_of(pred, target, num_classes=2)
    assert per_image["mean_iou"] == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert per_image["iou"] == pytest.approx([(1 + 1 / 2) / 2, 2 / 3])
    assert pooled["mean_iou"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert per_image["averaging"] == "per_image"


def test_ignored_pixels_count_nowhere():
    target = torch.tensor([[0, IGNORE], [1, IGNORE]])
    right = scores_of(torch.tensor([[0, 0], [1, 0]]), target, num_classes=2)
    wrong_under_ignore = scores_of(torch.tensor([[0, 1], [1, 1]]), target, num_classes=2)
    assert right["iou"] == wrong_under_ignore["iou"] == [1.0, 1.0]
    assert right["num_pixels"] == 2


def test_target_value_outside_classes_raises_data_error():
    with pytest.raises(DataError, match="target values must be class ids 0..3"):
        scores_of(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [0, 0]]))


def test_float_prediction_is_refused():
    with pytest.raises(ValueError, match="argmax"):
        scores_of(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_reset_forgets_counts():
    matrix = ConfusionMatrix(2, IGNORE)
    matrix.update(torch.zeros(3, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long))
    matrix.reset()
    matrix.update(torch.ones(3, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long))
    assert matrix.compute()["pixel_accuracy"] == 1.0


def test_all_reduce_is_a_no_op_without_torch_distributed():
    matrix = ConfusionMatrix(2, IGNORE)
    matrix.update(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    matrix.all_reduce()
    assert matrix.compute()["num_pixels"] == 9


def _reduce_worker(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    matrix = ConfusionMatrix(2, IGNORE, averaging="per_image")
    # Rank 0 sees one right image, rank 1 one image with 2 of 4 pixels of class 1 missed.
    pred = torch.tensor([[0, 0], [1, 1]]) if rank == 0 else torch.tensor([[0, 0], [0, 0]])
    matrix.update(pred, torch.tensor([[0, 0], [1, 1]]))
    matrix.all_reduce()
    results[rank] = (matrix.compute()["matrix"], matrix.compute()["iou"])
    dist.destroy_process_group()


def test_all_reduce_sums_counts_over_two_processes(tmp_path):
    context = torch.multiprocessing.get_context("fork")  # a warm copy of this process
    results = context.Manager().dict()
    processes = [
        context.Process(target=_reduce_worker, args=(rank, str(tmp_path / "init"), results))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0]
    for rank in range(2):
        matrix, iou = results[rank]
        assert matrix == [[4, 0], [2, 2]]
        assert iou == pytest.approx([(1 + 1 / 2) / 2, (1 + 0) / 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counts_stay_on_the_tensors_device():
    matrix = ConfusionMatrix(4, IGNORE)
    matrix.update(torch.tensor(PRED).cuda(), torch.tensor(GT).cuda())
    assert matrix.matrix.device.type == "cuda"
    assert matrix.compute()["mean_iou"] == pytest.approx((2 / 5 + 1 / 2 + 1 / 2) / 3)


def test_format_table_first_line_says_pooled_and_names_absent_classes():
    table = format_table(scores_of(PRED, GT), ["sky", "road", "car", "bicyclist"])
    first, overall = table.splitlines()[:2]
    assert "pooled over the dataset" in first and "1 images" in first
    assert first.endswith("absent classes (NaN, left out of means): bicyclist")
    assert "mean IoU 46.67" in overall
    assert table.splitlines()[-1].split() == ["bicyclist", "nan", "nan", "nan"]


def test_format_table_says_per_image_when_averaged_per_image():
    scores = scores_of(PRED, GT, averaging="per_image")
    assert "averaged over images" in format_table(scores, ["a", "b", "c", "d"]).splitlines()[0]


def test_pixel_error_counts_wrong_labelled_pixels():
    target = torch.tensor([[0, 1], [1, IGNORE]])
    assert pixel_error(torch.tensor([[0, 0], [1, 0]]), target) == pytest.approx(1 / 3)


def test_adapted_rand_error_is_zero_for_a_perfect_segmentation():
    cells = np.array([[1, 1, 0, 1, 1], [1, 1, 0, 1, 1]])
    assert adapted_rand_error(cells, cells) == 0.0


def test_adapted_rand_error_of_two_cells_merged_by_hand():
    # Truth: two 2-pixel cells split by membrane; prediction merges them (membrane called cell).
    # Pixel pairs over the 4 truth-foreground pixels: 2 pairs share a truth cell, 6 share the
    # predicted segment, 2 share both: precision 2 / 6, recall 2 / 2, F = 1 / 2, error = 1 / 2.
    target = np.array([[1, 1, 0, 1, 1]])
    pred = np.array([[1, 1, 1, 1, 1]])
    assert adapted_rand_error(pred, target) == pytest.approx(1 / 2)
