"""Training state files: weights-only loading, RNG state, rotation of last/previous, resume."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.checkpoint import ModelMeta, read_weights
from pixelwise.engine import checkpoint as ckpt
from pixelwise.errors import CheckpointError


def _meta(step: int = 0) -> ModelMeta:
    return ModelMeta(
        name="unet", num_classes=2, options={"base_width": 4}, classes=["a", "b"],
        palette=[(0, 0, 0), (255, 0, 0)], ignore_index=255, in_channels=1,
        mean=[0.5], std=[0.25], version="0.1.0", step=step,
    )


class _Payload:
    """Unpickling this would run code a weights-only loader must refuse."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_state_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.state.pt"
    torch.save({"step": 1, "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.state.pt"):
        ckpt.read_state(path)


def test_rng_states_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save_state(tmp_path / "s.pt", {"rng": ckpt.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(ckpt.read_state(tmp_path / "s.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _save_epoch(run_dir: Path, step: int) -> nn.Module:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(step)
    ckpt.save_last(run_dir, model, _meta(step=step), {"step": step})
    return model


def test_save_last_keeps_the_previous_epoch(tmp_path):
    _save_epoch(tmp_path, 1)
    _save_epoch(tmp_path, 2)
    assert read_weights(tmp_path / "previous.safetensors")[1].step == 1
    assert ckpt.read_state(tmp_path / "previous.state.pt")["step"] == 1
    assert ckpt.newest_whole(tmp_path).meta.step == 2


@pytest.mark.parametrize("damaged", ["last.safetensors", "last.state.pt"])
def test_newest_whole_falls_back_when_last_is_truncated(tmp_path, damaged):
    _save_epoch(tmp_path, 1)
    _save_epoch(tmp_path, 2)
    path = tmp_path / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    found = ckpt.newest_whole(tmp_path)
    assert found.meta.step == 1 and found.state["step"] == 1
    assert torch.all(found.weights["weight"] == 1)


def test_newest_whole_rejects_a_pair_from_two_different_steps(tmp_path):
    _save_epoch(tmp_path, 1)
    _save_epoch(tmp_path, 2)
    # A crash between writing the new weights and the new state leaves a mixed pair.
    (tmp_path / "last.state.pt").write_bytes((tmp_path / "previous.state.pt").read_bytes())
    assert ckpt.newest_whole(tmp_path).stem.name == "previous"


def test_newest_whole_without_any_checkpoint_raises(tmp_path):
    with pytest.raises(CheckpointError, match="whole checkpoint"):
        ckpt.newest_whole(tmp_path)


def test_truncated_state_is_a_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "last.state.pt"
    ckpt.save_state(path, {"step": 1, "x": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"last\.state\.pt must be a whole pixelwise state"):
        ckpt.read_state(path)


def test_a_failure_that_is_not_the_file_is_not_renamed(tmp_path, monkeypatch):
    ckpt.save_state(tmp_path / "s.pt", {"step": 1})

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError):
        ckpt.read_state(tmp_path / "s.pt")
