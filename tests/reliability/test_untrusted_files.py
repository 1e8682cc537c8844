"""Malicious pickles planted where pixelwise loads checkpoints are refused without running
(issue 7): weights load only from safetensors, training state with weights_only=True.

Each payload's `__reduce__` would run `touch MARKER` when unpickled; a control test shows that
plain unpickling does run it, so the refusals below are meaningful.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_bad_input import assert_one_line_error

from pixelwise.engine.checkpoint import read_state
from pixelwise.errors import CheckpointError
from pixelwise.inference.predict import Segmenter


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pt(marker: Path, zip_format: bool = True) -> bytes:
    """A torch.save file whose state dict carries the payload next to plausible entries."""
    buffer = io.BytesIO()
    state = {"epoch": 1, "step": 2, "optimizer": Payload(marker)}
    torch.save(state, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


@pytest.fixture
def planted_run(synthetic_run, tmp_path, marker) -> Path:
    """A copy of a finished run whose every checkpoint file is a malicious pickle."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    for name in ("last.state.pt", "last.safetensors", "best.safetensors"):
        (run / name).write_bytes(malicious_pt(marker))
    return run


def test_control_plain_unpickling_runs_the_payload(marker):
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_training_state_file_is_refused_unrun(tmp_path, marker, zip_format):
    state = tmp_path / "last.state.pt"
    state.write_bytes(malicious_pt(marker, zip_format))
    with pytest.raises(CheckpointError, match=r"last\.state\.pt must be a whole pixelwise state"):
        read_state(state)
    assert not marker.exists()


def test_resume_refuses_a_planted_state_file(synthetic_run, tmp_path, marker, run_cli):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "last.state.pt").write_bytes(malicious_pt(marker))
    result = run_cli("train", run / "config.yaml", "train.epochs=2", "--resume", run)
    assert_one_line_error(result, str(run), "last.state.pt")
    assert not marker.exists()


def test_segmenter_refuses_a_pickle_named_safetensors(planted_run, marker):
    with pytest.raises(CheckpointError, match=r"best\.safetensors must be a \.safetensors weights file "
                                             r"written by pixelwise train, got a torch\.save pickle"):
        Segmenter.from_checkpoint(planted_run / "best.safetensors")
    assert not marker.exists()


def test_predict_cli_refuses_it(planted_run, marker, run_cli, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = run_cli("predict", planted_run / "best.safetensors", image, "--out", tmp_path / "o")
    assert_one_line_error(result, str(planted_run / "best.safetensors"))
    assert not marker.exists()


def test_evaluate_cli_refuses_it(planted_run, marker, run_cli, tmp_path):
    result = run_cli("evaluate", planted_run / "best.safetensors", "--data", "synthetic",
                     "--option", "n=2", "--option", "size=32", "--out", tmp_path / "eval")
    assert_one_line_error(result, str(planted_run / "best.safetensors"))
    assert not marker.exists()


def test_init_from_refuses_a_pickle(planted_run, marker, run_cli, no_training_step, tmp_path):
    source = tmp_path / "fcn32s.pt"
    source.write_bytes(malicious_pt(marker))
    result = run_cli("train", planted_run / "config.yaml", f"model.init_from={source}",
                     f"train.out_dir={tmp_path / 'new'}")
    assert_one_line_error(result, str(source))
    assert not marker.exists()


def test_resume_refuses_a_fully_planted_run(planted_run, marker, run_cli):
    result = run_cli("train", planted_run / "config.yaml", "train.epochs=2", "--resume",
                     planted_run)
    assert_one_line_error(result, str(planted_run / "last.safetensors"))
    assert not marker.exists()
