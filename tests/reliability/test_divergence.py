"""A NaN or infinite loss stops the run with a clear message and keeps the last good checkpoint,
or skips the batch when `train.skip_nonfinite=true` (issue 7).

Synthetic data with n=8 and batch_size=4 gives two batches per epoch over two epochs; the loss
of the third batch (epoch 2, batch 1) is poisoned.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from sample_files import SYNTHETIC_CONFIG

from pixelwise.checkpoint import read_weights
from pixelwise.cli import main
from pixelwise.engine.checkpoint import read_state

POISONED_CALL = 3


@pytest.fixture
def poisoned_loss(monkeypatch):
    """Make the training loss `value` at its POISONED_CALL-th evaluation."""
    import pixelwise.losses

    real_build = pixelwise.losses.build_loss

    def poison(value: float):
        calls = {"n": 0}

        class Poisoned(torch.nn.Module):
            def __init__(self, loss: torch.nn.Module) -> None:
                super().__init__()
                self.loss = loss

            def forward(self, logits, target):
                calls["n"] += 1
                result = self.loss(logits, target)
                return result * value if calls["n"] == POISONED_CALL else result

        monkeypatch.setattr(pixelwise.losses, "build_loss",
                            lambda *args, **kwargs: Poisoned(real_build(*args, **kwargs)))

    return poison


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(SYNTHETIC_CONFIG.format(out=tmp_path / "run").replace("epochs: 1",
                                                                          "epochs: 2"))
    return path


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The same two epochs undisturbed; its `previous` pair holds epoch 1."""
    out = tmp_path_factory.mktemp("whole")
    path = out / "c.yaml"
    path.write_text(SYNTHETIC_CONFIG.format(out=out / "run").replace("epochs: 1", "epochs: 2"))
    assert main(["train", str(path)]) == 0
    return out / "run"


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(config, tmp_path, run_cli,
                                                                 poisoned_loss, whole, value):
    poisoned_loss(value)
    result = run_cli("train", config)
    assert result.code == 2 and "\n" not in result.err
    assert f"training loss must be finite, got {value} at epoch 2, batch 1" in result.err
    assert str(tmp_path / "run" / "last.safetensors") in result.err
    kept, meta = read_weights(tmp_path / "run" / "last.safetensors")
    assert meta.epoch == 1 and read_state(tmp_path / "run" / "last.state.pt")["epoch"] == 1
    # The kept weights are epoch 1 of an undisturbed run (its `previous` pair).
    clean, _ = read_weights(whole / "previous.safetensors")
    assert all(torch.equal(kept[key], clean[key]) for key in clean)


def test_skip_nonfinite_skips_only_the_bad_batch(config, tmp_path, run_cli, poisoned_loss,
                                                 caplog):
    poisoned_loss(math.nan)
    with caplog.at_level(logging.WARNING, logger="pixelwise"):
        result = run_cli("train", config, "train.skip_nonfinite=true")
    assert result.code == 0, result.err
    assert "skipping batch 1 of epoch 2: loss is nan" in caplog.text
    state = read_state(tmp_path / "run" / "last.state.pt")
    assert (state["epoch"], state["step"]) == (2, 2 * 2 - 1)  # four batches, one skipped
    weights, _ = read_weights(tmp_path / "run" / "last.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
