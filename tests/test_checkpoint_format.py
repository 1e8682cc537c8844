"""The checkpoint format: safetensors weights with their metadata, written atomically."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pixelwise import checkpoint as ckpt
from pixelwise.errors import CheckpointError


def _meta(step: int = 0) -> ckpt.ModelMeta:
    return ckpt.ModelMeta(
        name="unet", num_classes=2, options={"base_width": 4}, classes=["a", "b"],
        palette=[(0, 0, 0), (255, 0, 0)], ignore_index=255, in_channels=1,
        mean=[0.5], std=[0.25], version="0.1.0", step=step,
    )


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"old")

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError):
        ckpt.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


def test_atomic_write_replaces_file(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    ckpt.atomic_write_bytes(target, b"one")
    ckpt.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"


def test_weights_round_trip_with_metadata(tmp_path):
    model = nn.Conv2d(1, 2, 3)
    ckpt.save_weights(tmp_path / "w.safetensors", model, _meta(step=7))
    state, meta = ckpt.read_weights(tmp_path / "w.safetensors")
    assert meta == _meta(step=7)
    assert torch.equal(state["weight"], model.weight.detach())
    assert torch.equal(state["bias"], model.bias.detach())


def test_wrapper_prefixes_are_stripped():
    state = {"module._orig_mod.conv.weight": torch.zeros(1), "_orig_mod.bias": torch.ones(1),
             "head.module_x": torch.ones(1)}
    assert sorted(ckpt.strip_wrapper_prefixes(state)) == ["bias", "conv.weight", "head.module_x"]


def test_truncated_weights_raise_checkpoint_error(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, nn.Linear(4, 4), _meta())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="w.safetensors"):
        ckpt.read_weights(path)


def test_weights_without_pixelwise_metadata_are_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="pixelwise metadata"):
        ckpt.read_weights(path)
