"""bench/_side_by_side.py --seeds: the per-system mean and range over seeds, by hand."""

from __future__ import annotations

import pytest

ROWS = [
    {"system": "pixelwise", "seed": 0, "steps": 10, "seconds": 5.0, "pixel_error": 0.1,
     "rand": None, "budget_s": 600, "budget_steps": None},
    {"system": "smp", "seed": 0, "steps": 7, "seconds": 5.0, "pixel_error": 0.2, "rand": 0.4,
     "budget_s": 600, "budget_steps": None},
    {"system": "pixelwise", "seed": 1, "steps": 12, "seconds": 6.0, "pixel_error": 0.3,
     "rand": 0.5, "budget_s": 600, "budget_steps": None},
    {"system": "smp", "seed": 1, "steps": 9, "seconds": 7.0, "pixel_error": 0.4, "rand": 0.2,
     "budget_s": 600, "budget_steps": None},
]


def test_mean_and_range_per_system_over_seeds(side_by_side):
    summary = side_by_side.seed_summary(ROWS)
    assert list(summary) == ["pixelwise", "smp"]
    assert summary["pixelwise"]["steps"] == (11, 10, 12)
    assert summary["pixelwise"]["pixel_error"] == pytest.approx((0.2, 0.1, 0.3))
    assert "rand" not in summary["pixelwise"]  # None in one seed: no mean claimed
    assert summary["smp"]["rand"] == pytest.approx((0.3, 0.2, 0.4))
    assert "seed" not in summary["smp"] and "budget_s" not in summary["smp"]


def test_the_table_labels_rows_with_their_seed(side_by_side):
    table = side_by_side.format_seed_summary(ROWS)
    assert "over 2 seeds" in table
    assert "| pixelwise | 11 (10-12) | 5.5 (5-6) | 0.2 (0.1-0.3) | - |" in table
    assert "| smp | 8 (7-9) | 6 (5-7) | 0.3 (0.2-0.4) | 0.3 (0.2-0.4) |" in table
    assert side_by_side.label_of(ROWS[2], ROWS) == "pixelwise seed 1"
    assert side_by_side.label_of(ROWS[0], ROWS[:1]) == "pixelwise"
