"""Training for a time budget (`train.time_budget`) or a number of steps (`train.max_steps`)."""

from __future__ import annotations

import pytest

from pixelwise.config import budget_seconds, load_config
from pixelwise.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [
    ("600s", 600), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("90", 90),
])
def test_time_budget_is_parsed_into_seconds(text, seconds):
    assert budget_seconds(text) == seconds


def test_no_time_budget_is_none():
    assert budget_seconds(None) is None
    assert load_config().train.time_budget is None and load_config().train.max_steps == 0


@pytest.mark.parametrize("text", ["0s", "ten minutes", "10x", "-5m"])
def test_malformed_time_budget_is_refused_before_training(text):
    with pytest.raises(ConfigError, match="train.time_budget must be a positive duration"):
        load_config(None, [f"train.time_budget={text}"])


def test_negative_max_steps_is_refused():
    with pytest.raises(ConfigError, match="train.max_steps must be 0"):
        load_config(None, ["train.max_steps=-1"])
