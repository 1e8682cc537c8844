"""bench/isbi2012_errors.py's two computations on a hand-worked row of ten pixels."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("isbi2012_errors", REPO / "bench" / "isbi2012_errors.py")
errors = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(REPO / "bench"))  # the script imports the benchmark's TTA from isbi2012
try:
    spec.loader.exec_module(errors)
finally:
    sys.path.remove(str(REPO / "bench"))

# membrane at columns 0-4, cells at 5-9; the prediction calls columns 0 and 4 cell (P = 0.6)
TRUTH = np.array([[False] * 5 + [True] * 5])
PROBA = np.where(TRUTH, 0.9, 0.1)
PROBA[0, [0, 4]] = 0.6


def test_edge_distance_counts_to_the_nearest_pixel_of_the_other_class():
    assert errors.edge_distance(TRUTH).tolist() == [[5, 4, 3, 2, 1, 1, 2, 3, 4, 5]]


def test_report_splits_the_wrong_pixels_by_their_distance_to_the_edge():
    lines = errors.report(PROBA[None], TRUTH[None])
    assert "| 0.5 | 0.2000 | 0.0000 |" in lines  # 2 of 10 wrong; the one true cell is whole
    assert "| 0.7 | 0.0000 | 0.0000 |" in lines
    # 1 px band: columns 4-5; wrong column 4 is in it (1 of 2), column 0 of the 8 outside
    assert "| 1 px | 0.500 | 0.1250 |" in lines
    # 2 px band: columns 3-6, 1 of the 6 outside is wrong; 3 px: columns 2-7, 1 of 4
    assert "| 2 px | 0.500 | 0.1667 |" in lines and "| 3 px | 0.500 | 0.2500 |" in lines


@pytest.mark.parametrize("threshold", errors.THRESHOLDS)
def test_every_threshold_is_reported(threshold):
    assert any(line.startswith(f"| {threshold} |") for line in errors.report(PROBA[None], TRUTH[None]))


def test_report_gives_the_rand_error_of_cells_joined_through_a_gap():
    # four cell pixels, one membrane pixel at P(cell) = 0.6, four cell pixels: at 0.5 the gap
    # joins the cells, one predicted segment of 8 against two true ones of 4. Pairs in one
    # segment (n^2 - N): both 16 + 16 - 8 = 24, truth 24, prediction 64 - 8 = 56, so the error
    # is 1 - 2*24 / (24 + 56) = 0.4; the pixel error 1 of 9.
    truth = np.array([[[True] * 4 + [False] + [True] * 4]])
    proba = np.where(truth, 0.9, 0.6)
    lines = errors.report(proba, truth)
    assert "| 0.5 | 0.1111 | 0.4000 |" in lines and "| 0.7 | 0.0000 | 0.0000 |" in lines


def test_edges_moved_one_pixel_on_a_lone_cell_pixel():
    # a 5x5 slice, membrane but for its centre: growing the cell takes its 4 neighbours (4 of 25
    # wrong), shrinking it removes it (1 of 25); the image border is no edge, so a slice of cells
    # alone is left as it is
    lone = np.zeros((1, 5, 5), dtype=bool)
    lone[0, 2, 2] = True
    assert errors.edges_moved_one_pixel(lone) == pytest.approx(
        {"cells grown 1 px": 0.16, "cells shrunk 1 px": 0.04})
    assert errors.edges_moved_one_pixel(np.ones((2, 4, 4), dtype=bool)) == {
        "cells grown 1 px": 0.0, "cells shrunk 1 px": 0.0}


def test_report_ends_with_the_truth_against_itself():
    lines = errors.report(PROBA[None], TRUTH[None])
    # the 1x10 row: growing the cells takes column 4, shrinking them gives up column 5
    assert lines[-2:] == ["| cells grown 1 px | 0.1000 |", "| cells shrunk 1 px | 0.1000 |"]
