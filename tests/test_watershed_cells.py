"""`watershed_cells`: cells grown from a foreground probability map, and the Rand error of such
cells (`segment_rand_error`), checked on hand-worked maps and against scikit-image's metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pixelwise.engine.evaluate import validate
from pixelwise.errors import ConfigError
from pixelwise.metrics import MeanAdaptedRandError, adapted_rand_error, segment_rand_error
from pixelwise.postprocess import watershed_cells


def two_cells_with_a_leaky_membrane() -> tuple[np.ndarray, np.ndarray]:
    """(probability of "cell", truth) 5x9: cells in columns 0-3 and 5-8, a membrane in column
    4 that the model sees everywhere but in row 2 (P = 0.7 there: the label map calls it cell,
    so its connected components join the two cells)."""
    probability = np.full((5, 9), 0.99, dtype=np.float32)
    probability[:, 4] = 0.1
    probability[2, 4] = 0.7
    truth = np.ones((5, 9), dtype=np.int64)
    truth[:, 4] = 0
    return probability, truth


# Hand-worked: the truth has two cells of 20 pixels, the label map's components one of 40 (the
# membrane column but its gap pixel lies outside the scored truth pixels). Pairs sharing a true
# cell A = 2 * (20^2 - 20) = 760, sharing a predicted one B = 40^2 - 40 = 1560, both P = 760.
MERGED_ERROR = 1 - 2 * 760 / (760 + 1560)


def test_a_gap_in_the_membrane_joins_components_but_not_watershed_cells():
    probability, truth = two_cells_with_a_leaky_membrane()
    assert adapted_rand_error((probability > 0.5).astype(np.int64), truth) == pytest.approx(
        MERGED_ERROR)
    cells = watershed_cells(probability)
    assert sorted(np.unique(cells)) == [1, 2]
    assert len(np.unique(cells[:, :4])) == 1 and len(np.unique(cells[:, 5:])) == 1
    assert segment_rand_error(cells, truth) == 0.0


def test_cells_grow_to_the_middle_of_the_membrane_between_them():
    probability = np.array([[0.99, 0.99, 0.6, 0.2, 0.1, 0.3, 0.99]], dtype=np.float32)
    cells = watershed_cells(probability)
    # Flooding 1 - P from both seeds: the left cell takes 0.6 and 0.2, the right one 0.3; the
    # ridge pixel (0.1) is a tie that may go either way, so it is not asserted.
    assert cells[0, :4].tolist() == [1, 1, 1, 1] and cells[0, 5:].tolist() == [2, 2]


def test_no_pixel_above_the_seed_threshold_gives_no_cell():
    assert not watershed_cells(np.full((4, 4), 0.5)).any()


def test_two_seeds_in_one_cell_split_it():
    probability = np.array([[0.99, 0.9, 0.99]], dtype=np.float32)
    assert sorted(np.unique(watershed_cells(probability))) == [1, 2]
    assert np.unique(watershed_cells(probability, seed_threshold=0.85)).tolist() == [1]


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5])
def test_the_seed_threshold_must_lie_between_0_and_1(threshold):
    with pytest.raises(ConfigError, match="seed_threshold must be between 0 and 1"):
        watershed_cells(np.zeros((2, 2)), seed_threshold=threshold)


def test_segment_rand_error_matches_scikit_image_on_random_segments():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    for _ in range(5):
        target = (ndimage.gaussian_filter(rng.random((48, 48)), 2) > 0.5).astype(np.int64)
        segments = rng.integers(0, 6, size=target.shape)  # 0: pixels in no segment
        expected, _, _ = skimage_metrics.adapted_rand_error(
            ndimage.label(target)[0], segments, ignore_labels=(0,))
        assert segment_rand_error(segments, target) == pytest.approx(expected, rel=1e-12)


def test_mean_error_of_segments_skips_images_without_cells():
    mean = MeanAdaptedRandError()
    mean.update_segments(torch.tensor([[[1, 1, 2, 2]], [[1, 1, 1, 1]]]),
                         torch.tensor([[[1, 1, 1, 1]], [[0, 0, 0, 0]]]))
    # Image 1: 6 true pairs, 2 predicted, 2 both: 1 - 4 / 8. Image 2 has no cell pixel.
    assert mean.compute() == pytest.approx(0.5)
    assert math.isnan(MeanAdaptedRandError().compute())


class FixedLogits(nn.Module):
    """A "model" whose class-1 probability is a given map, whatever the image."""

    def __init__(self, probability: np.ndarray) -> None:
        super().__init__()
        p = torch.from_numpy(probability).float()
        self.register_buffer("logits", torch.stack([torch.log1p(-p), torch.log(p)])[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1)


def test_validate_scores_both_kinds_of_segments_of_a_binary_model():
    probability, truth = two_cells_with_a_leaky_membrane()
    data = TensorDataset(torch.zeros(2, 1, 5, 9), torch.from_numpy(truth).expand(2, -1, -1))
    scores = validate(FixedLogits(probability), DataLoader(data, batch_size=2), 2, 255,
                      torch.device("cpu"), progress=False, detailed=True)
    assert scores["adapted_rand_error"] == pytest.approx(MERGED_ERROR)
    assert scores["watershed_rand_error"] == 0.0
