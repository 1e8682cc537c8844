"""Training under bf16 autocast on the CPU (`train.amp`): chosen only where it pays, forced with
"bf16", and a bf16 run tracks fp32's loss and metrics."""

from __future__ import annotations

import csv

import pytest
import torch

from pixelwise.config import load_config
from pixelwise.engine import train as train_module
from pixelwise.engine.train import autocast_dtype, cpu_bf16_training_pays, train
from pixelwise.errors import ConfigError

CPU = torch.device("cpu")
# 16 images of 32x32 in batches of 4 for 3 epochs: 12 SGD steps, about 2 s each way here
SMALL_RUN = ["data.options.n=16", "train.epochs=3"]
FORWARD_LOSS = train_module.forward_loss


@pytest.fixture(autouse=True)
def fresh_measurement():
    """The measured answer is cached per process: start and leave every test without it."""
    cpu_bf16_training_pays.cache_clear()
    yield
    cpu_bf16_training_pays.cache_clear()


def run(tiny_config, out, amp: str, monkeypatch) -> tuple[list[float], dict, set]:
    """Train the small run with ``train.amp=amp``; the epochs' train losses, the last
    validation scores, and the autocast dtypes the training steps ran under."""
    dtypes = set()

    def recording(run, image, target):
        dtypes.add(run.amp_dtype)
        return FORWARD_LOSS(run, image, target)

    monkeypatch.setattr(train_module, "forward_loss", recording)
    config = load_config(tiny_config, [*SMALL_RUN, f"train.amp={amp}", f"train.out_dir={out}"])
    result = train(config)
    losses = [float(row["train_loss"]) for row in csv.DictReader((out / "metrics.csv").open())]
    return losses, result["scores"], dtypes


@pytest.mark.heavy
def test_bf16_training_on_cpu_tracks_fp32(tiny_config, tmp_path, monkeypatch):
    fp32_losses, fp32, fp32_dtypes = run(tiny_config, tmp_path / "fp32", "false", monkeypatch)
    bf16_losses, bf16, bf16_dtypes = run(tiny_config, tmp_path / "bf16", "bf16", monkeypatch)
    assert fp32_dtypes == {None} and bf16_dtypes == {torch.bfloat16}
    # bf16 keeps 8 bits of mantissa: the losses agree to a few per cent, epoch by epoch
    for low, full in zip(bf16_losses, fp32_losses, strict=True):
        assert low == pytest.approx(full, rel=0.05)
    assert bf16["pixel_accuracy"] == pytest.approx(fp32["pixel_accuracy"], abs=0.03)
    assert bf16["mean_iou"] == pytest.approx(fp32["mean_iou"], abs=0.03)


def test_amp_on_a_cpu_without_bf16_units_stays_fp32_unmeasured(monkeypatch):
    monkeypatch.setattr(train_module, "bf16_supported", lambda device_type: False)
    assert autocast_dtype(CPU, True) is None
    assert cpu_bf16_training_pays.cache_info().currsize == 1  # answered without timing


def test_amp_on_a_cpu_with_bf16_units_follows_the_measurement(monkeypatch):
    monkeypatch.setattr(train_module, "bf16_supported", lambda device_type: True)
    measured = cpu_bf16_training_pays()  # a real measurement (emulated here when no units)
    assert autocast_dtype(CPU, True) == (torch.bfloat16 if measured else None)
    assert cpu_bf16_training_pays.cache_info().misses == 1  # measured once a process


def test_amp_bf16_forces_bf16_and_false_turns_autocast_off():
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16
    assert autocast_dtype(CPU, False) is None


def test_amp_accepts_true_false_and_bf16_only(tiny_config):
    assert load_config(tiny_config, ["train.amp=bf16"]).train.amp == "bf16"
    assert load_config(tiny_config, ["train.amp=false"]).train.amp is False
    with pytest.raises(ConfigError, match="train.amp must be true, false or 'bf16', got 'fp16'"):
        load_config(tiny_config, ["train.amp=fp16"])
